// Device presence as events in the ring log: `connected` and `disconnected` (with the reason) go
// upstream on `<prefix>.events.<device>.<event>` in order with the device's data, through outages.
import { EVENT_TOPIC_PREFIX, encodeCbor, encodeEntry } from '../codec/index.js'
import type { Logger } from '../logger.js'
import type { PresenceMetrics } from './metrics.js'
import type { Appender } from './ingress.js'
import type { Devices } from './devices.js'

/** Appends an event about a device to the log (CBOR body). Failures are counted and logged, never thrown. */
export function appendDeviceEvent(log: Appender, metrics: PresenceMetrics, logger: Logger, clientId: string, event: string, body: Record<string, unknown>): void {
  let entry: Buffer
  try {
    entry = encodeEntry({ clientId, topic: EVENT_TOPIC_PREFIX + event, qos: 1, retain: false, packetId: 0, encoding: 1, payload: encodeCbor({ device: clientId, event, ts: Date.now(), ...body }) })
  } catch (err) {
    // Ingress bounds client ids at CONNECT; should an event still not encode, it is lost, not fatal.
    metrics.drops.inc(1, { reason: 'events_not_captured' })
    logger.warn('device event not stored', { clientId: clientId.slice(0, 64), event, error: err })
    return
  }
  metrics.deviceEvents.inc(1, { event })
  log.append(entry).catch((err: unknown) => {
    metrics.drops.inc(1, { reason: 'discard_new' })
    logger.warn('device event not stored', { clientId, event, error: err })
  })
}

/** Records every connect and disconnect of a device. */
export function recordPresence(devices: Devices, log: Appender, metrics: PresenceMetrics, logger: Logger): void {
  devices.on('online', (d) => appendDeviceEvent(log, metrics, logger, d.clientId, 'connected', { address: d.address, clean: d.clean }))
  devices.on('offline', (d, reason, code) => {
    // MQTT 5 devices: the DISCONNECT reason code (theirs, else the one the gateway sent), when there was one.
    appendDeviceEvent(log, metrics, logger, d.clientId, 'disconnected', { reason, ...(code !== undefined ? { reasonCode: code } : {}), connectedMs: Date.now() - d.connectedAt, messagesIn: d.messagesIn, messagesOut: d.messagesOut })
  })
}
