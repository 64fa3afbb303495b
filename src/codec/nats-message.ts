// The mapping of one log entry to the JetStream message Ferry publishes for it: subject, header block, payload.
//
// | Part     | Value                                                                            |
// |----------|----------------------------------------------------------------------------------|
// | subject  | `<prefix>.up.<escaped topic levels>` (subject.ts), or for an event entry         |
// |          | (`$ferry/events/<kind>` topic) `<prefix>.events.<device token>.<kind>`;           |
// |          | with partitions (N > 0) a token `<p>` = partitionOf(client id, N) after `up`/`events` |
// | headers  | headers.ts: Nats-Msg-Id `<gatewayId>:<epoch>:<seq>` (class normal; a record of    |
// |          | another priority class's log: `<gatewayId>.<class>:<epoch>:<seq>`), Nats-Expected-Stream, |
// |          | Ferry-Client, Content-Type; for an entry with MQTT 5 properties (version 3) also  |
// |          | Ferry-Expires, Ferry-Response-Topic, Ferry-Correlation-Data, Ferry-Prop-<name>    |
// |          | and Ferry-Props-Omitted (headers.ts)                                              |
// | Content- | the encoding decided at ingest; overridden by the Content Type the device         |
// | Type     | declared (its payload was stored as sent); a payload the device marked UTF-8      |
// |          | (Payload Format Indicator) that went as bytes is text/plain; charset=utf-8        |
// | payload  | the entry's payload, encoded at ingest; a version 1 entry's payload is encoded    |
// |          | here by the payload policy                                                        |
//
// Compact headers (--uplink-headers compact, headers.ts): no Nats-Expected-Stream, no Content-Type when
// it is application/cbor, no Ferry-Client when the subject carries the client id. A consumer reads
// both forms the same way with uplinkClientId and uplinkContentType below.
//
// Pure: the same entry, epoch and seq always give the same bytes (a resend reuses the message id,
// so JetStream's duplicate window drops the copy).
import type { Entry } from './entry.js'
import { ENCODING_CONTENT_TYPE } from './entry.js'
import { FerryError } from '../errors.js'
import { CONTENT_TYPE_UTF8_TEXT, encodeUplinkHeaders, msgIdSource, encodeUplinkHeadersWithProperties, topicCarriesClient, unescapeHeaderValue } from './headers.js'
import type { UplinkHeaderEncoder, UplinkHeaderMode } from './headers.js'
import { CONTENT_TYPE_CBOR, CONTENT_TYPE_OCTETS } from './payload.js'
import type { PayloadPolicy } from './payload.js'
import { EVENT_TOPIC_PREFIX, eventSubject, eventSubjectDevice, partitionOf, subjectToTopic, tokenToDevice, topicToSubject } from './subject.js'

/** What the mapping needs besides the entry. */
export interface UplinkContext {
  readonly gatewayId: string
  /** The stream every message must be stored in (Nats-Expected-Stream). */
  readonly stream: string
  readonly subjectPrefix: string
  /** Encodes the payloads of version 1 entries (newer entries are encoded at ingest). */
  readonly payloads: PayloadPolicy
  /** Partition tokens in uplink and event subjects (--partitions); 0 or absent = none. */
  readonly partitions?: number
  /** The subject of a non-event topic from a client; defaults to topicToSubject (the forwarder memoises it: UplinkSubjects). */
  readonly subjectOf?: (topic: string, clientId: string) => string
  /** Which headers go upstream (--uplink-headers); default full. */
  readonly headerMode?: UplinkHeaderMode
  /**
   * The priority class of the log the entry comes from (--priority): undefined or 'normal' = the
   * message id as without classes; another class names itself in the id (uplinkMsgId).
   */
  readonly className?: string
  /** Encodes the headers of messages without properties (the forwarder's, with its caches); must have the same gateway id, class, stream and mode. */
  readonly headerEncoder?: UplinkHeaderEncoder
}

/** One uplink message, ready for `nc.publish(subject, data, { headers })`. */
export interface UplinkMessage {
  readonly subject: string
  /** The encoded header block (headers.ts). */
  readonly headers: Uint8Array
  readonly data: Uint8Array
  /** The entry is a device event (presence, command events), not a device publish. */
  readonly isEvent: boolean
  /** User Properties left out of the headers (beyond the bounds of headers.ts); 0 for most messages. */
  readonly omittedProperties: number
}

/** The Nats-Msg-Id of record `seq` of log epoch `epoch` (of the log of priority class `className`, see msgIdSource in headers.ts). */
export function uplinkMsgId(gatewayId: string, epoch: number, seq: number, className?: string): string {
  return `${msgIdSource(gatewayId, className)}:${epoch}:${seq}`
}

/** True when `topic` is the pseudo-topic of a device event rather than an MQTT topic. */
export function isEventTopic(topic: string): boolean {
  return topic.startsWith(EVENT_TOPIC_PREFIX)
}

/**
 * The message for entry `e`, stored as record `seq` of epoch `epoch`. Throws (FerryError from the
 * codec) when the entry cannot be mapped; the forwarder dead-letters such a record.
 */
export function uplinkMessage(e: Entry, epoch: number, seq: number, ctx: UplinkContext): UplinkMessage {
  const isEvent = isEventTopic(e.topic)
  const n = ctx.partitions ?? 0
  const subject = isEvent
    ? eventSubject(ctx.subjectPrefix, e.clientId, e.topic.slice(EVENT_TOPIC_PREFIX.length), n > 0 ? partitionOf(e.clientId, n) : undefined)
    : ctx.subjectOf
      ? ctx.subjectOf(e.topic, e.clientId)
      : topicToSubject(ctx.subjectPrefix, e.topic, n > 0 ? partitionOf(e.clientId, n) : undefined)
  // Entries are encoded at ingest; only those of version 1 still hold the device's bytes.
  let contentType: string = ENCODING_CONTENT_TYPE[e.encoding ?? 0]
  let data = e.payload
  const props = e.properties
  if (!contentType) ({ data, contentType } = ctx.payloads.encode(e.topic, e.payload, props))
  const mode = ctx.headerMode ?? 'full'
  // Only the compact form looks at it: an event's subject always carries the device.
  const clientInSubject = mode === 'compact' && (isEvent || topicCarriesClient(e.topic, e.clientId))
  if (props === undefined) {
    const headers = ctx.headerEncoder
      ? ctx.headerEncoder.encode(epoch, seq, e.clientId, contentType, clientInSubject)
      : encodeUplinkHeaders(uplinkMsgId(ctx.gatewayId, epoch, seq, ctx.className), ctx.stream, e.clientId, contentType, mode, clientInSubject)
    return { subject, headers, data, isEvent, omittedProperties: 0 }
  }
  if (props.contentType !== undefined) contentType = props.contentType
  else if (props.utf8 === true && contentType === CONTENT_TYPE_OCTETS) contentType = CONTENT_TYPE_UTF8_TEXT
  const h = encodeUplinkHeadersWithProperties(uplinkMsgId(ctx.gatewayId, epoch, seq, ctx.className), ctx.stream, e.clientId, contentType, props, mode, clientInSubject)
  return { subject, headers: h.headers, data, isEvent, omittedProperties: h.omitted }
}

/**
 * The MQTT client id of an uplink message on `subject`, for a consumer, whichever --uplink-headers form
 * it was sent in: its Ferry-Client header (`ferryClient`, unescaped) when present; else (compact) the
 * device token of an event subject, or the second topic level of a `<prefix>.up.` subject.
 * `partitions`: the gateway's --partitions (0, the default: subjects without a partition token; see
 * subjectToTopic). Throws FERRY_ERR_CODEC_SUBJECT when the header is absent and the subject names no client.
 */
export function uplinkClientId(prefix: string, subject: string, ferryClient: string | undefined, partitions = 0): string {
  if (ferryClient !== undefined) return unescapeHeaderValue(ferryClient)
  if (subject.startsWith(`${prefix}.events.`)) {
    const token = eventSubjectDevice(prefix, subject, partitions)
    if (token !== undefined) return tokenToDevice(token)
  } else {
    const level = subjectToTopic(prefix, subject, partitions).split('/')[1]
    if (level !== undefined) return level
  }
  throw new FerryError('FERRY_ERR_CODEC_SUBJECT', `subject "${subject}" names no client and the message has no Ferry-Client header`)
}

/**
 * The Content-Type of an uplink message, for a consumer: its header (`contentType`, unescaped), or
 * application/cbor when the message has none (compact). Pass undefined only for an absent header: an
 * MQTT 5 device may declare an empty Content-Type, stored as an empty header, which is not CBOR (nats.js
 * `headers.get()` returns '' for both: test `headers.has('Content-Type')`).
 */
export function uplinkContentType(contentType: string | undefined): string {
  return contentType === undefined ? CONTENT_TYPE_CBOR : unescapeHeaderValue(contentType)
}
