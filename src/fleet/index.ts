// Public names of the fleet registry (device → gateway in a JetStream key-value bucket).
export { FleetRegistry, MAX_QUEUED } from './registry.js'
export type { FleetMetrics, FleetRegistryOptions, FleetStatus } from './registry.js'
export { clientIdOfToken, deviceKey, deviceToken, fleetRegistryBucket, gatewayKey, parseDeviceEntry, parseGatewayEntry } from './keys.js'
export type { DeviceEntry, GatewayEntry } from './keys.js'
export { DEAD_AFTER_HEARTBEATS, byConnectTime, isLive, mustYield, onConflict, sweeper } from './liveness.js'
export type { GatewaySeen, Holder, Write } from './liveness.js'
