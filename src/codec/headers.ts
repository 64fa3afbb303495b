// The NATS header block of an uplink message, encoded in one step (the hot path of forwarding).
//
// NATS/1.0\r\n
// Nats-Msg-Id: <gatewayId>:<epoch>:<seq>\r\n   (a priority class other than normal: <gatewayId>.<class>:<epoch>:<seq>)
// Nats-Expected-Stream: <stream>\r\n   (JetStream refuses the publish when another stream captures the subject)
// Ferry-Client: <MQTT client id, escaped>\r\n
// Content-Type: <content type>\r\n
// -- only for a message with MQTT 5 properties (log entry version 3), in this order: --
// Ferry-Expires: <absolute expiry, RFC 3339 UTC with ms>\r\n          (Message Expiry Interval)
// Ferry-Response-Topic: <MQTT topic, escaped>\r\n                     (Response Topic)
// Ferry-Correlation-Data: <base64>\r\n                                (Correlation Data)
// Ferry-Prop-<name, escaped as a token>: <value, escaped>\r\n         (one per User Property, in order)
// Ferry-Props-Omitted: <n>\r\n                                        (User Properties beyond the bounds)
// \r\n
//
// Compact form (--uplink-headers compact; README "Compact uplink headers"): the same header names and
// values, some headers left out: Nats-Expected-Stream always; Content-Type when it is application/cbor
// (absent = CBOR); Ferry-Client when the subject carries the client id: an event's device token, or a
// topic whose second level is exactly the client id (`devices/<id>/...`). Nats-Msg-Id is unchanged
// (a record resent after a restart with the other form must keep its id for JetStream's dedup).
//
// Header values cannot hold CR or LF; MQTT client ids can hold anything. In Ferry-Client, `%` and
// every byte <= 0x1f or == 0x7f are written as `%XX` (the subject rule, without the space and
// wildcard cases), and so is white space at either end (decoders trim values; nats.js trims Unicode
// white space too, so U+3000 there is written as its UTF-8 bytes %E3%80%80), so the value is always
// valid and the original id recoverable. Every other string value above (a declared Content-Type,
// the response topic, user property values) is escaped the same way.
//
// Header names must be printable ASCII without `:` (nats.js refuses anything else when it decodes a
// message); a User Property name can be any UTF-8 string. The part after `Ferry-Prop-` keeps every
// RFC 9110 token character except `%` (ALPHA DIGIT ! # $ & ' * + - . ^ _ ` | ~) and writes every other
// UTF-8 byte, `%` included, as `%XX` (upper-case hex): always a valid name, and the original name is
// recovered by decoding the `%XX` bytes as UTF-8 (unescapeHeaderName). Names keep their case.
//
// Bounds: at most USER_PROPERTY_HEADERS_MAX properties and USER_PROPERTY_BYTES_MAX bytes of their
// header lines go upstream, the first ones in the order the device sent them; the rest are omitted,
// and counted in Ferry-Props-Omitted (and by the forwarder in ferry_forward_properties_omitted_total).
import type { MessageProperties } from './properties.js'

// White space at either end is what JavaScript's trim removes (`\s`: Unicode white space and line
// terminators, e.g. U+00A0, U+3000, U+FEFF); nats.js trims decoded header values with it.
const MUST_ESCAPE = /[%\x00-\x1f\x7f]|^\s|\s$/

/** Escapes a value for a NATS header as described above (also white space at either end, which decoders trim). */
export function escapeHeaderValue(v: string): string {
  if (!MUST_ESCAPE.test(v)) return v
  // Non-ASCII white space is written as its UTF-8 bytes (%E3%80%80 for U+3000).
  return v.replace(/[%\x00-\x1f\x7f]|^\s|\s$/gu, (c) => {
    let out = ''
    for (const byte of Buffer.from(c, 'utf8')) out += '%' + byte.toString(16).toUpperCase().padStart(2, '0')
    return out
  })
}

/** Reverses {@link escapeHeaderValue} (a run of `%XX` is UTF-8; those below 0x80 are one character each, as always). */
export function unescapeHeaderValue(v: string): string {
  return v.includes('%') ? v.replace(/(?:%[0-9A-F]{2})+/g, (run) => Buffer.from(run.replaceAll('%', ''), 'hex').toString('utf8')) : v
}

/** The prefix of the header of each User Property (uplink), and of each command header sent to a v5 device as a User Property (downlink). */
export const USER_PROPERTY_HEADER_PREFIX = 'Ferry-Prop-'
/** The header that counts User Properties not forwarded (beyond the bounds). */
export const PROPS_OMITTED_HEADER = 'Ferry-Props-Omitted'
/** The absolute expiry of a message that had a Message Expiry Interval (RFC 3339, UTC, milliseconds). */
export const EXPIRES_HEADER = 'Ferry-Expires'
/** The MQTT Response Topic of a message, escaped like Ferry-Client. */
export const RESPONSE_TOPIC_HEADER = 'Ferry-Response-Topic'
/** The MQTT Correlation Data of a message, base64 (RFC 4648, with padding). */
export const CORRELATION_DATA_HEADER = 'Ferry-Correlation-Data'
/** Most User Properties forwarded as headers per message. */
export const USER_PROPERTY_HEADERS_MAX = 32
/** Most bytes of User Property header lines (`Ferry-Prop-<name>: <value>\r\n`, escaped) per message. */
export const USER_PROPERTY_BYTES_MAX = 4096
/** Content-Type of a payload the device marked as UTF-8 (Payload Format Indicator 1) that is not JSON and has no declared type. */
export const CONTENT_TYPE_UTF8_TEXT = 'text/plain; charset=utf-8'

// RFC 9110 tchar without '%': these bytes stand for themselves in an escaped name.
const NAME_KEEP = new Uint8Array(128)
for (const c of "!#$&'*+-.^_`|~0123456789ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz") NAME_KEEP[c.charCodeAt(0)] = 1

/** A User Property name as the part of a header name after the prefix (see the file comment). */
export function escapeHeaderName(name: string): string {
  let plain = true
  for (let i = 0; i < name.length && plain; i++) plain = NAME_KEEP[name.charCodeAt(i)] === 1
  if (plain) return name
  let out = ''
  for (const byte of Buffer.from(name, 'utf8')) {
    out += byte < 128 && NAME_KEEP[byte] === 1 ? String.fromCharCode(byte) : '%' + byte.toString(16).toUpperCase().padStart(2, '0')
  }
  return out
}

/** Reverses {@link escapeHeaderName}. */
export function unescapeHeaderName(escaped: string): string {
  if (!escaped.includes('%')) return escaped
  const bytes: number[] = []
  for (let i = 0; i < escaped.length; i++) {
    const hex = escaped[i] === '%' ? escaped.slice(i + 1, i + 3) : ''
    if (/^[0-9A-F]{2}$/.test(hex)) {
      bytes.push(parseInt(hex, 16))
      i += 2
    } else {
      bytes.push(escaped.charCodeAt(i) & 0x7f)
    }
  }
  return Buffer.from(bytes).toString('utf8')
}

// Date.prototype.toISOString costs ~0.4 µs; expiries of one day share their date part, so only the
// time of day is formatted per message (same output, for every time a Date can hold).
const DAY_MS = 86_400_000
let cachedDay = Number.NaN
let cachedDate = ''

const pad2 = (n: number): string => (n < 10 ? '0' : '') + n

/** `new Date(ms).toISOString()`, faster for times within one day of the last one. */
export function isoTime(time: number): string {
  const ms = Math.trunc(time) // as Date does (TimeClip)
  const day = Math.floor(ms / DAY_MS)
  if (day !== cachedDay) {
    const full = new Date(ms).toISOString()
    cachedDay = day
    cachedDate = full.slice(0, full.indexOf('T') + 1)
    return full
  }
  const t = ms - day * DAY_MS
  const milli = Math.floor(t % 1000)
  const sec = Math.floor(t / 1000)
  return `${cachedDate}${pad2(Math.floor(sec / 3600))}:${pad2(Math.floor(sec / 60) % 60)}:${pad2(sec % 60)}.${milli < 10 ? '00' : milli < 100 ? '0' : ''}${milli}Z`
}

/**
 * The header block of one uplink message, as bytes. `msgId` and `contentType` are ASCII by construction; `stream` is the
 * configured stream name (no CR/LF: config validation refuses white space in it).
 */
export function encodeUplinkHeaders(msgId: string, stream: string, clientId: string, contentType: string, mode: UplinkHeaderMode = 'full', clientInSubject = false): Uint8Array {
  return Buffer.from(`NATS/1.0\r\nNats-Msg-Id: ${msgId}${uplinkTail(stream, clientId, contentType, mode, clientInSubject)}\r\n`, 'utf8')
}

/**
 * The part of a Nats-Msg-Id before `:<epoch>:<seq>`: the gateway id, and for a priority class other
 * than normal `.<class>` (each class has its own log, so its own seqs; a gateway id has no '.', so
 * the id stays unambiguous). Class normal (or none: no --priority) keeps the id of a gateway without classes.
 */
export function msgIdSource(gatewayId: string, className?: string): string {
  return className === undefined || className === 'normal' ? gatewayId : `${gatewayId}.${className}`
}

/** Which headers uplink messages carry (--uplink-headers): `full` (every header, the default) or `compact` (see the file comment). */
export type UplinkHeaderMode = 'full' | 'compact'

/** The Content-Type a compact message leaves out (absent = this). */
const COMPACT_DEFAULT_CONTENT_TYPE = 'application/cbor'

/**
 * True when the subject of a message on `topic` carries `clientId` so that a compact message may leave
 * Ferry-Client out: the topic's second level is exactly the client id (`devices/<id>/telemetry`).
 */
export function topicCarriesClient(topic: string, clientId: string): boolean {
  const a = topic.indexOf('/')
  if (a < 0) return false
  const b = topic.indexOf('/', a + 1)
  const end = b < 0 ? topic.length : b
  return end - a - 1 === clientId.length && topic.startsWith(clientId, a + 1)
}

/** The header lines after Nats-Msg-Id, for one client id and content type, in `mode` (`clientInSubject`: the subject carries the client id). */
function uplinkTail(stream: string, clientId: string, contentType: string, mode: UplinkHeaderMode, clientInSubject: boolean): string {
  if (mode === 'full') return `\r\nNats-Expected-Stream: ${stream}\r\nFerry-Client: ${escapeHeaderValue(clientId)}\r\nContent-Type: ${contentType}\r\n`
  let s = '\r\n'
  if (!clientInSubject) s += `Ferry-Client: ${escapeHeaderValue(clientId)}\r\n`
  if (contentType !== COMPACT_DEFAULT_CONTENT_TYPE) s += `Content-Type: ${contentType}\r\n`
  return s
}

/** Tails cached per encoder (client ids x content types); past it, tails are built per message. */
const TAIL_CACHE_MAX = 10_000

/**
 * Encodes the header blocks of one forwarder's messages without MQTT 5 properties: the same bytes as
 * {@link encodeUplinkHeaders} (full) or the compact form, cheaper. `NATS/1.0` up to the epoch is encoded
 * once per epoch, the lines after the message id once per client id and content type (bounded cache),
 * and per message only the record's seq is written.
 */
export class UplinkHeaderEncoder {
  private epoch = -1
  private head: Buffer = Buffer.alloc(0)
  /** content type → client id → encoded tail (with the blank line); `clientInSubject` ones apart. */
  private readonly tails = new Map<string, Map<string, Buffer>>()
  private readonly anonymous = new Map<string, Buffer>()
  private cached = 0

  /** What comes before `:<epoch>:<seq>` in the message id (nats-message.ts msgIdSource). */
  private readonly idSource: string

  /** `className`: the priority class of the forwarder's log (undefined or 'normal': the id without a class). */
  constructor(
    gatewayId: string,
    private readonly stream: string,
    readonly mode: UplinkHeaderMode,
    className?: string,
  ) {
    this.idSource = msgIdSource(gatewayId, className)
  }

  /** The header block of record `seq` of `epoch` from `clientId` (`contentType` ASCII, Ferry's own). */
  encode(epoch: number, seq: number, clientId: string, contentType: string, clientInSubject: boolean): Uint8Array {
    if (epoch !== this.epoch) {
      this.epoch = epoch
      this.head = Buffer.from(`NATS/1.0\r\nNats-Msg-Id: ${this.idSource}:${epoch}:`, 'utf8')
    }
    const tail = this.tail(clientId, contentType, clientInSubject && this.mode === 'compact')
    const digits = String(seq)
    const head = this.head
    const out = Buffer.allocUnsafe(head.length + digits.length + tail.length)
    // TypedArray set(), not Buffer copy(): no argument checks through the C++ binding (measured ~20% less).
    out.set(head, 0)
    let at = head.length
    for (let i = 0; i < digits.length; i++) out[at++] = digits.charCodeAt(i)
    out.set(tail, at)
    return out
  }

  private tail(clientId: string, contentType: string, clientInSubject: boolean): Buffer {
    let byClient: Map<string, Buffer> | undefined
    let t: Buffer | undefined
    if (clientInSubject) t = this.anonymous.get(contentType)
    else {
      byClient = this.tails.get(contentType)
      t = byClient?.get(clientId)
    }
    if (t !== undefined) return t
    t = Buffer.from(uplinkTail(this.stream, clientId, contentType, this.mode, clientInSubject) + '\r\n', 'utf8')
    // Full: the rest is built per message, uncached. Clearing instead would make a fleet of more than
    // TAIL_CACHE_MAX devices in rotation miss on every message.
    if (this.cached >= TAIL_CACHE_MAX) return t
    this.cached++
    if (clientInSubject) this.anonymous.set(contentType, t)
    else {
      if (byClient === undefined) this.tails.set(contentType, (byClient = new Map()))
      byClient.set(clientId, t)
    }
    return t
  }
}

/** The header block of a message with MQTT 5 properties, and how many User Properties it leaves out. */
export interface PropertyHeaders {
  readonly headers: Uint8Array
  /** User Properties not forwarded (beyond USER_PROPERTY_HEADERS_MAX or USER_PROPERTY_BYTES_MAX). */
  readonly omitted: number
}

/**
 * The header block of an uplink message with MQTT 5 properties: the same first headers as
 * {@link encodeUplinkHeaders} (`contentType` may be the device's: it is escaped), then those of
 * the properties (see the file comment).
 */
export function encodeUplinkHeadersWithProperties(msgId: string, stream: string, clientId: string, contentType: string, props: MessageProperties, mode: UplinkHeaderMode = 'full', clientInSubject = false): PropertyHeaders {
  let s = `NATS/1.0\r\nNats-Msg-Id: ${msgId}${uplinkTail(stream, clientId, escapeHeaderValue(contentType), mode, clientInSubject)}`
  if (props.expiresAtMs !== undefined) s += `${EXPIRES_HEADER}: ${isoTime(props.expiresAtMs)}\r\n`
  if (props.responseTopic !== undefined) s += `${RESPONSE_TOPIC_HEADER}: ${escapeHeaderValue(props.responseTopic)}\r\n`
  if (props.correlationData !== undefined) {
    const d = props.correlationData
    s += `${CORRELATION_DATA_HEADER}: ${Buffer.from(d.buffer, d.byteOffset, d.byteLength).toString('base64')}\r\n`
  }
  let omitted = 0
  const pairs = props.userProperties
  if (pairs !== undefined && pairs.length > 0) {
    let bytes = 0
    let n = 0
    for (const [name, value] of pairs) {
      const line = `${USER_PROPERTY_HEADER_PREFIX}${escapeHeaderName(name)}: ${escapeHeaderValue(value)}\r\n`
      bytes += Buffer.byteLength(line, 'utf8')
      if (n === USER_PROPERTY_HEADERS_MAX || bytes > USER_PROPERTY_BYTES_MAX) break
      s += line
      n++
    }
    omitted = pairs.length - n
    if (omitted > 0) s += `${PROPS_OMITTED_HEADER}: ${omitted}\r\n`
  }
  s += '\r\n'
  return { headers: Buffer.from(s, 'utf8'), omitted }
}

/**
 * How many bytes the MQTT 5 properties of a message add to its upstream header block, beyond the
 * headers every message has (escaping, base64 and header names included). Ingest counts them
 * against --max-record-bytes, so that a stored message still fits the server's max_payload.
 */
export function propertyHeaderBytes(clientId: string, contentType: string, props: MessageProperties): number {
  return encodeUplinkHeadersWithProperties('', '', clientId, contentType, props).headers.length - encodeUplinkHeaders('', '', clientId, contentType).length
}
