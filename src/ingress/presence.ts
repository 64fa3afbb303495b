// Device presence as events in the ring log: `connected` and `disconnected` (with the reason) go
// upstream on `<prefix>.events.<device>.<event>` in order with the device's data, through outages.
// Every event body names the gateway that wrote it (`gateway`), so a fleet's events tell where a device is.
import { EVENT_TOPIC_PREFIX, encodeCbor, encodeEntry } from '../codec/index.js'
import type { Logger } from '../logger.js'
import type { PresenceMetrics } from './metrics.js'
import type { Appender } from './ingress.js'
import type { Devices } from './devices.js'

/** What the fleet registry adds to a "connected" event (structurally: fleet/ implements it, ingress does not import it). */
export interface PresenceAnnotations {
  /** The other live gateway the registry showed holding the device when it connected here, if any. */
  takenOverFrom(clientId: string): string | undefined
}

/**
 * Appends an event about a device to the log (CBOR body: device, event, ts, gateway, then `body`).
 * Failures are counted and logged, never thrown.
 */
export function appendDeviceEvent(log: Appender, metrics: PresenceMetrics, logger: Logger, clientId: string, event: string, body: Record<string, unknown>, gateway: string): void {
  let entry: Buffer
  try {
    entry = encodeEntry({ clientId, topic: EVENT_TOPIC_PREFIX + event, qos: 1, retain: false, packetId: 0, encoding: 1, payload: encodeCbor({ device: clientId, event, ts: Date.now(), gateway, ...body }) })
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

/**
 * Records every connect and disconnect of a device. With the fleet registry (`fleet`), a "connected"
 * event names the gateway it was taken over from, and a "disconnected" one the gateway that took it.
 */
export function recordPresence(devices: Devices, log: Appender, metrics: PresenceMetrics, logger: Logger, gateway: string, fleet?: PresenceAnnotations): void {
  devices.on('online', (d) => {
    const from = fleet?.takenOverFrom(d.clientId)
    appendDeviceEvent(log, metrics, logger, d.clientId, 'connected', { address: d.address, clean: d.clean, ...(from !== undefined ? { takenOverFrom: from } : {}) }, gateway)
  })
  devices.on('offline', (d, reason, code) => {
    // MQTT 5 devices: the DISCONNECT reason code (theirs, else the one the gateway sent), when there was one.
    const by = d.takenOverBy !== undefined ? { takenOverBy: d.takenOverBy } : {}
    appendDeviceEvent(log, metrics, logger, d.clientId, 'disconnected', { reason, ...(code !== undefined ? { reasonCode: code } : {}), ...by, connectedMs: Date.now() - d.connectedAt, messagesIn: d.messagesIn, messagesOut: d.messagesOut }, gateway)
  })
}
