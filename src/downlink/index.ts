// Public names of the downlink: cloud → device commands and request-reply.
export { Commands, commandTarget, commandTopic, consumerName, parseTtl } from './commands.js'
export type { CommandOptions } from './commands.js'
export { Rpc, responseCorrelation } from './rpc.js'
export type { RpcOptions } from './rpc.js'
export { Downlink } from './downlink.js'
export type { DownlinkHealth } from './downlink.js'
export type { CommandMetrics, DownlinkMetrics, RpcMetrics } from './metrics.js'
