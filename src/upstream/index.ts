// Public names of the NATS connection helpers shared by forward and downlink.
export { Backoff, Pause } from './backoff.js'
export type { BackoffOptions } from './backoff.js'
export { connectWithBackoff, drainWithin, watchConnection } from './connection.js'
export type { ConnectAttempts, ConnectionWatcher } from './connection.js'
