// The metrics the forwarder updates, as the small interface it needs (the gateway's catalogue,
// src/metrics/catalogue.ts, satisfies it structurally; names and help text are declared there).
//
// With priority classes there is one forwarder per class: each gets its own object (the gateway adds
// the class label to drops and sums the gauges over the classes). A forwarder registers its gauges
// with collect() once, in its constructor, and assumes nothing else about who reads them.

/** A counter without labels. */
export interface ForwardCount {
  inc(n?: number): void
}

/** A counter with one label. */
export interface ForwardLabelledCount<L extends string> {
  inc(n: number, labels: Readonly<Record<L, string>>): void
}

/** A gauge read when scraped. */
export interface ForwardCollected {
  collect(fn: () => number): void
}

export interface ForwardMetrics {
  /** ferry_forward_messages_total */
  readonly forwarded: ForwardCount
  /** ferry_forward_duplicates_total */
  readonly forwardDuplicates: ForwardCount
  /** ferry_forward_retries_total */
  readonly forwardRetries: ForwardCount
  /** ferry_forward_reordered_total */
  readonly forwardReordered: ForwardCount
  /** ferry_forward_resends_outside_dedup_window_total */
  readonly forwardResendsOutsideDedupWindow: ForwardCount
  /** ferry_forward_reconnects_total */
  readonly forwardReconnects: ForwardCount
  /** ferry_forward_recoveries_total, by cause (refused, timeout, reconnect) */
  readonly forwardRecoveries: ForwardLabelledCount<'cause'>
  /** ferry_forward_properties_omitted_total: MQTT 5 User Properties not forwarded as headers (beyond the bounds) */
  readonly forwardPropertiesOmitted: ForwardCount
  /** ferry_drops_total, by reason (dead_letter, events_not_captured, discard_old, expired here) */
  readonly drops: ForwardLabelledCount<'reason'>
  /** ferry_forward_puback_latency_seconds */
  readonly forwardAckLatency: { observe(seconds: number): void }
  /** ferry_forward_inflight_messages */
  readonly forwardInflight: ForwardCollected
  /** ferry_forward_connected */
  readonly forwardConnected: ForwardCollected
  /**
   * ferry_forward_drain_paced_seconds_total: time the main reader (or the resends) of a paced forwarder
   * waited for --drain-max-rate tokens (summed over the forwarders waiting). Optional: absent = not counted.
   */
  readonly forwardDrainPaced?: { inc(seconds: number): void }
}
