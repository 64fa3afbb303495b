// The metrics the downlink updates (commands and RPC), as the small interface it needs (the
// gateway's catalogue, src/metrics/catalogue.ts, satisfies it structurally).

/** A counter with one label. */
export interface DownlinkLabelledCount<L extends string> {
  inc(n: number, labels: Readonly<Record<L, string>>): void
}

/** A gauge read when scraped. */
export interface DownlinkCollected {
  collect(fn: () => number): void
}

/** A histogram of seconds. */
export interface DownlinkLatency {
  observe(seconds: number): void
}

export interface DownlinkMetrics {
  /** ferry_downlink_commands_total, by result */
  readonly commands: DownlinkLabelledCount<'result'>
  /** ferry_downlink_commands_inflight */
  readonly commandsInflight: DownlinkCollected
  /** ferry_downlink_command_delivery_seconds */
  readonly commandLatency: DownlinkLatency
  /** ferry_downlink_rpc_requests_total, by result */
  readonly rpc: DownlinkLabelledCount<'result'>
  /** ferry_downlink_rpc_pending */
  readonly rpcPending: DownlinkCollected
  /** ferry_downlink_rpc_subscriptions: open `<prefix>.rpc.<device>.>` subscriptions, one per device connected here */
  readonly rpcSubscriptions: DownlinkCollected
  /** ferry_downlink_rpc_latency_seconds */
  readonly rpcLatency: DownlinkLatency
  /** ferry_drops_total, by reason (dead_letter, expired here) */
  readonly drops: DownlinkLabelledCount<'reason'>
}

/** What commands.ts uses. */
export type CommandMetrics = Pick<DownlinkMetrics, 'commands' | 'commandsInflight' | 'commandLatency' | 'drops'>
/** What rpc.ts uses. */
export type RpcMetrics = Pick<DownlinkMetrics, 'rpc' | 'rpcPending' | 'rpcSubscriptions' | 'rpcLatency'>
