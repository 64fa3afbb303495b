// Public names of the MQTT ingress.
export { Ingress, retransmitHash } from './ingress.js'
export type { IngressOptions, Appender } from './ingress.js'
export { RetransmitIndex } from './retransmits.js'
export { Devices } from './devices.js'
export type { DeliveryResult, DeviceInfo, DisconnectReason } from './devices.js'
export { appendDeviceEvent, recordPresence } from './presence.js'
