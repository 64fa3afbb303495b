// The MQTT 5 properties of a PUBLISH that Ferry keeps with a message: stored in the log entry
// (version 3) and mapped to NATS headers when the message is forwarded. Issue 13.

/** MQTT 5 PUBLISH properties kept with a message. Every field is optional; none for MQTT 3.1.1. */
export interface MessageProperties {
  /** Absolute expiry, ms since the epoch: arrival time + Message Expiry Interval. */
  readonly expiresAtMs?: number
  /** Content Type as the device declared it. */
  readonly contentType?: string
  /** Payload Format Indicator 1: the device says the payload is UTF-8 text. */
  readonly utf8?: boolean
  /** User Properties, in the order the device sent them (names may repeat). */
  readonly userProperties?: ReadonlyArray<readonly [name: string, value: string]>
  /** Response Topic (request/response). */
  readonly responseTopic?: string
  /** Correlation Data (request/response), binary. */
  readonly correlationData?: Uint8Array
}
