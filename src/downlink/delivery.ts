// How the downlink sends a device a QoS 1 message, with the MQTT 5 properties it carries to v5 devices:
// Message Expiry Interval (a command's remaining TTL), User Properties (a command's `Ferry-Prop-*` headers),
// Response Topic and Correlation Data (RPC requests), Correlation Data, Content Type and `Ferry-Status`
// (answers to device requests). An MQTT 3.1.1 device gets the same message without properties.
import type { MsgHdrs } from '@nats-io/transport-node'
import { USER_PROPERTY_HEADER_PREFIX, unescapeHeaderName, unescapeHeaderValue } from '../codec/index.js'
import type { DeliveryResult } from '../ingress/index.js'

/** MQTT 5 properties of a delivery (mqtt-packet's names, as the seam's PublishProperties). */
export interface DeliveryProperties {
  /** Seconds. */
  readonly messageExpiryInterval?: number
  readonly userProperties?: Readonly<Record<string, string | string[]>>
  readonly responseTopic?: string
  readonly correlationData?: Buffer
  readonly contentType?: string
}

/**
 * Sends a QoS 1 message to a connected device: Devices.deliver. `properties` are for MQTT 5 devices;
 * a core whose deliver does not take them yet (aedes 1.2, MQTT 3.1.1 only) ignores the argument.
 */
export type DeviceDelivery = (clientId: string, topic: string, payload: Buffer, timeoutMs: number, signal?: AbortSignal, properties?: DeliveryProperties) => Promise<DeliveryResult>

/**
 * The properties a command carries to a v5 device: its remaining TTL as Message Expiry Interval
 * (whole seconds, rounded up, at least 1; none without a TTL) and its `Ferry-Prop-<name>` headers as
 * User Properties `<name>`. Undefined when there is nothing to carry.
 */
export function commandProperties(h: MsgHdrs | undefined, remainingMs: number | undefined): DeliveryProperties | undefined {
  const user: Record<string, string | string[]> = {}
  let any = false
  if (h) {
    const prefix = USER_PROPERTY_HEADER_PREFIX.toLowerCase()
    for (const k of h.keys()) {
      if (!k.toLowerCase().startsWith(prefix) || k.length === prefix.length) continue
      // The uplink's escaping reversed: a header a consumer read from an uplink message goes back down as it came.
      const values = h.values(k).map(unescapeHeaderValue)
      user[unescapeHeaderName(k.slice(prefix.length))] = values.length === 1 ? values[0]! : values
      any = true
    }
  }
  const expiry = remainingMs !== undefined ? Math.max(1, Math.ceil(remainingMs / 1000)) : undefined
  if (!any && expiry === undefined) return undefined
  return { ...(expiry !== undefined ? { messageExpiryInterval: expiry } : {}), ...(any ? { userProperties: user } : {}) }
}
