// Public names of health: readiness checks, the status page's series, and the /status.json document.
export { Health, UPSTREAM_STALL_MS } from './health.js'
export type { HealthMetrics, HealthSources, HealthLog, UpstreamHealth, ClassBacklog, DownlinkHealth, Readiness, Check, CheckState, SeriesPoint, DropEvent } from './health.js'
export { statusDocument } from './status.js'
export type { StatusCounters, StatusSources, StatusDocument } from './status.js'
