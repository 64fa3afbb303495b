// Public names of metrics.
export { createMetrics } from './catalogue.js'
export type { Metrics, DropReason } from './catalogue.js'
export { Counter, Gauge, Histogram, Registry } from './registry.js'
export { MetricsServer } from './http.js'
export type { MetricsServerOptions } from './http.js'
export { STATUS_PAGE } from './status-page.js'
