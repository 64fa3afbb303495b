// Public names of the ring log.
export { RingLog } from './ring-log.js'
export type { RingLogOptions, DiscardPolicy, FsyncPolicy, SegmentInfo, RecoveryReport } from './ring-log.js'
export { LogReader } from './reader.js'
export type { LogRecord } from './reader.js'
export { nodeFs } from './fs.js'
export type { LogFs } from './fs.js'
