// The metrics the ring log keeps, as the small interface it needs: the gateway's catalogue
// implements it structurally (same names), and a tool that opens the log passes NO_LOG_METRICS.

/** Why the log dropped records, as the `reason` label of ferry_drops_total. */
export type LogDropReason = 'discard_old' | 'discard_new' | 'disk_full' | 'no_descriptors' | 'power_loss' | 'expired'

/** What the ring log counts. */
export interface LogMetrics {
  /** Records written (ferry_log_appended_records_total). */
  readonly logAppended: { inc(records: number): void }
  /** Bytes written, framing included (ferry_log_appended_bytes_total). */
  readonly logAppendedBytes: { inc(bytes: number): void }
  /** Duration of each fdatasync, in seconds (ferry_log_fsync_latency_seconds). */
  readonly logFsyncLatency: { observe(seconds: number): void }
  /** Records the log dropped or refused, by reason (ferry_drops_total). */
  readonly drops: { inc(records: number, labels: { reason: LogDropReason }): void }
}

/** Counts nothing: for tools that open the log without a metrics endpoint. */
export const NO_LOG_METRICS: LogMetrics = Object.freeze({
  logAppended: { inc: () => {} },
  logAppendedBytes: { inc: () => {} },
  logFsyncLatency: { observe: () => {} },
  drops: { inc: () => {} },
})
