// Public names of the MQTT ingress.
export { Ingress, retransmitHash } from './ingress.js'
export type { IngressOptions, Appender, AdmissionPolicy } from './ingress.js'
export { RetransmitIndex } from './retransmits.js'
export { Devices } from './devices.js'
export type { DeliveryResult, DeviceInfo, DisconnectReason } from './devices.js'
export { CONNACK } from './aedes-seam.js'
export type { ConnackRefusal, MqttClientRef } from './aedes-seam.js'
export { appendDeviceEvent, recordPresence } from './presence.js'
