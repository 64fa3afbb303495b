// Public names of the device fleet simulator.
export { startFleet } from './fleet.js'
export type { AckLedger, Fleet, FleetOptions, FleetStats, LatencySummary, QoS } from './fleet.js'
