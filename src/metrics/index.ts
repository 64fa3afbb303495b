// Public names of metrics.
export { RECORD_DROP_REASONS, createMetrics, exportClassDrops } from './catalogue.js'
export type { Metrics, DropReason } from './catalogue.js'
export { Counter, Gauge, Histogram, LabelledGauge, Registry } from './registry.js'
export { MetricsServer } from './http.js'
export type { MetricsServerOptions } from './http.js'
export { STATUS_PAGE } from './status-page.js'
