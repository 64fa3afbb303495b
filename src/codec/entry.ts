// The log entry: how one MQTT publish is stored as the opaque bytes of a ring log record.
//
// | Off   | Size | Field                                            |
// |-------|------|--------------------------------------------------|
// | 0     | 1    | version: 2, or 3 when MQTT 5 properties are kept |
// |       |      | (1 is read too)                                  |
// | 1     | 1    | flags: bits 0-1 QoS, bit 2 retain, bits 3-4 the  |
// |       |      | payload's encoding (v2, v3; see PayloadEncoding) |
// | 2     | 2    | MQTT packet id (0 for QoS 0), u16 LE             |
// | 4     | 1    | client id length C (bytes, ≤ 255)                |
// | 5     | 2    | topic length T (bytes), u16 LE                   |
// | 7     | C    | client id, UTF-8                                 |
// | 7+C   | T    | topic, UTF-8                                     |
// | 7+C+T | 4    | v3 only: properties block length P, u32 LE       |
// | 11+C+T| P    | v3 only: the properties block (below)            |
// | ...   | rest | payload, encoded for upstream at ingest (v2, v3) |
// |       |      | or as the device sent it (v1, or encoding 0)     |
//
// The properties block (version 3) is a presence byte, then the present fields in bit order:
//
// | Bit | Field (MessageProperties)  | Stored as                                            |
// |-----|----------------------------|------------------------------------------------------|
// | 0   | expiresAtMs                | f64 LE, ms since the epoch                           |
// | 1   | contentType                | u16 LE length + UTF-8                                |
// | 2   | utf8 (Payload Format 1)    | the bit itself, no bytes                             |
// | 3   | userProperties             | u32 LE count, then per pair: u16 LE length + UTF-8   |
// |     |                            | name, u16 LE length + UTF-8 value (order kept)       |
// | 4   | responseTopic              | u16 LE length + UTF-8                                |
// | 5   | correlationData            | u16 LE length + bytes                                |
//
// Bits 6-7 are zero; a block with either set, or whose fields do not fill exactly P bytes, is corrupt.
// MQTT strings and binary data are at most 65,535 bytes [MQTT-1.5.4-1], hence the u16 lengths.
// An entry without properties (every MQTT 3.1.1 publish, most MQTT 5 ones) is written as version 2,
// byte for byte as before issue 13: existing logs, tests and the bytes per message are unchanged.
//
// Payloads are transcoded (JSON to CBOR) once, at ingest: the log then holds what goes upstream,
// so a backlog drains without redoing that work and the bounded log holds more messages.
import type { MessageProperties } from './properties.js'
import { FerryError } from '../errors.js'
import { CONTENT_TYPE_CBOR, CONTENT_TYPE_JSON, CONTENT_TYPE_OCTETS } from './payload.js'

/** The version of an entry without MQTT 5 properties. */
export const ENTRY_VERSION = 2
/** The version of an entry that keeps MQTT 5 properties (issue 13). */
export const ENTRY_VERSION_PROPERTIES = 3
const FIXED = 7
const P_EXPIRY = 1
const P_CONTENT_TYPE = 2
const P_UTF8 = 4
const P_USER = 8
const P_RESPONSE_TOPIC = 16
const P_CORRELATION = 32
const P_KNOWN = 63

/**
 * How the stored payload is encoded: 0 as the device sent it, not yet decided (version 1 entries;
 * the forwarder encodes it), 1 CBOR transcoded from JSON, 2 JSON text, 3 bytes unchanged.
 */
export type PayloadEncoding = 0 | 1 | 2 | 3

/** The Content-Type sent upstream for each decided encoding. */
export const ENCODING_CONTENT_TYPE = ['', CONTENT_TYPE_CBOR, CONTENT_TYPE_JSON, CONTENT_TYPE_OCTETS] as const

/** The encoding code of a content type. */
export function encodingOf(contentType: string): PayloadEncoding {
  const i = ENCODING_CONTENT_TYPE.indexOf(contentType as (typeof ENCODING_CONTENT_TYPE)[number])
  return i > 0 ? (i as PayloadEncoding) : 0
}

/** One device publish as stored in the log. */
export interface Entry {
  readonly clientId: string
  readonly topic: string
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
  /** MQTT packet identifier, 0 for QoS 0. Used to recognise retransmissions after a restart. */
  readonly packetId: number
  /** How `payload` is encoded (0 when absent: as the device sent it). */
  readonly encoding?: PayloadEncoding
  readonly payload: Uint8Array
  /** MQTT 5 properties kept with the message (entry version 3; absent: version 2). */
  readonly properties?: MessageProperties
}

function entryError(message: string): FerryError {
  return new FerryError('FERRY_ERR_CODEC_ENTRY', message)
}

/** The presence byte of `p` (0: nothing to keep, the entry stays version 2). */
function presence(p: MessageProperties): number {
  return (
    (p.expiresAtMs !== undefined ? P_EXPIRY : 0) |
    (p.contentType !== undefined ? P_CONTENT_TYPE : 0) |
    (p.utf8 === true ? P_UTF8 : 0) |
    (p.userProperties !== undefined && p.userProperties.length > 0 ? P_USER : 0) |
    (p.responseTopic !== undefined ? P_RESPONSE_TOPIC : 0) |
    (p.correlationData !== undefined ? P_CORRELATION : 0)
  )
}

/** A time a Date can hold (ms since the epoch, |t| <= 8.64e15): anything else is not a stored expiry. */
function validTime(ms: number): boolean {
  return Number.isFinite(ms) && Math.abs(ms) <= 8.64e15
}

/** Byte length of a u16-prefixed string; refuses what MQTT could not have sent. */
function stringBytes(field: string, v: string): number {
  const n = Buffer.byteLength(v, 'utf8')
  if (n > 0xffff) throw entryError(`${field} of ${n} bytes is longer than MQTT allows (65535)`)
  return 2 + n
}

/** Size of the properties block for presence `bits`. */
function blockBytes(p: MessageProperties, bits: number): number {
  let n = 1
  if (bits & P_EXPIRY) {
    if (!validTime(p.expiresAtMs ?? 0)) throw entryError(`expiry ${p.expiresAtMs} is not a time (ms since the epoch)`)
    n += 8
  }
  if (bits & P_CONTENT_TYPE) n += stringBytes('content type', p.contentType ?? '')
  if (bits & P_USER) {
    n += 4
    for (const [name, value] of p.userProperties ?? []) n += stringBytes('user property name', name) + stringBytes('user property value', value)
  }
  if (bits & P_RESPONSE_TOPIC) n += stringBytes('response topic', p.responseTopic ?? '')
  if (bits & P_CORRELATION) {
    const len = p.correlationData?.length ?? 0
    if (len > 0xffff) throw entryError(`correlation data of ${len} bytes is longer than MQTT allows (65535)`)
    n += 2 + len
  }
  return n
}

function writeString(out: Buffer, at: number, v: string): number {
  const n = out.write(v, at + 2, 'utf8')
  out.writeUInt16LE(n, at)
  return at + 2 + n
}

/** Writes the block at `at`; returns the offset after it. */
function writeBlock(out: Buffer, at: number, p: MessageProperties, bits: number): number {
  out[at++] = bits
  if (bits & P_EXPIRY) at = out.writeDoubleLE(p.expiresAtMs ?? 0, at)
  if (bits & P_CONTENT_TYPE) at = writeString(out, at, p.contentType ?? '')
  if (bits & P_USER) {
    const pairs = p.userProperties ?? []
    at = out.writeUInt32LE(pairs.length, at)
    for (const [name, value] of pairs) at = writeString(out, writeString(out, at, name), value)
  }
  if (bits & P_RESPONSE_TOPIC) at = writeString(out, at, p.responseTopic ?? '')
  if (bits & P_CORRELATION) {
    const d = p.correlationData ?? new Uint8Array(0)
    out.writeUInt16LE(d.length, at)
    out.set(d, at + 2)
    at += 2 + d.length
  }
  return at
}

/** Strings up to this many UTF-16 units are measured and written in JavaScript when ASCII (client ids, topics). */
const SHORT_ASCII = 64

/** The UTF-8 length of `s` if it is short and all ASCII (one byte per unit), else -1. */
function shortAsciiLength(s: string): number {
  const n = s.length
  if (n > SHORT_ASCII) return -1
  for (let i = 0; i < n; i++) if (s.charCodeAt(i) >= 0x80) return -1
  return n
}

/** Writes ASCII `s` at `at` (checked by shortAsciiLength). */
function writeAscii(out: Buffer, at: number, s: string): void {
  for (let i = 0; i < s.length; i++) out[at + i] = s.charCodeAt(i)
}

/** Encodes an entry into one Buffer. Client ids longer than 255 bytes are refused by ingress first. */
export function encodeEntry(e: Entry): Buffer {
  // Short ASCII client ids and topics (the common case) are measured and copied without a native call each.
  const cidAscii = shortAsciiLength(e.clientId)
  const topicAscii = shortAsciiLength(e.topic)
  const cidLen = cidAscii >= 0 ? cidAscii : Buffer.byteLength(e.clientId, 'utf8')
  const topicLen = topicAscii >= 0 ? topicAscii : Buffer.byteLength(e.topic, 'utf8')
  if (cidLen > 255 || topicLen > 0xffff) {
    throw entryError(`client id or topic too long (${cidLen}, ${topicLen} bytes)`)
  }
  // Without properties (the common case) nothing more is computed or allocated: version 2.
  const props = e.properties
  const bits = props === undefined ? 0 : presence(props)
  const block = bits === 0 ? 0 : 4 + blockBytes(props as MessageProperties, bits)
  // Strings are written straight into the entry: no intermediate buffers on the append path.
  const at = FIXED + cidLen + topicLen
  const out = Buffer.allocUnsafe(at + block + e.payload.length)
  out[0] = bits === 0 ? ENTRY_VERSION : ENTRY_VERSION_PROPERTIES
  out[1] = (e.qos & 3) | (e.retain ? 4 : 0) | ((e.encoding ?? 0) << 3)
  out[2] = e.packetId & 0xff
  out[3] = (e.packetId >> 8) & 0xff
  out[4] = cidLen
  out[5] = topicLen & 0xff
  out[6] = topicLen >> 8
  if (cidAscii >= 0) writeAscii(out, FIXED, e.clientId)
  else out.write(e.clientId, FIXED, cidLen, 'utf8')
  if (topicAscii >= 0) writeAscii(out, FIXED + cidLen, e.topic)
  else out.write(e.topic, FIXED + cidLen, topicLen, 'utf8')
  if (bits !== 0) {
    out.writeUInt32LE(block - 4, at)
    writeBlock(out, at + 4, props as MessageProperties, bits)
  }
  out.set(e.payload, at + block)
  return out
}

/** A short string decodes faster in JavaScript than through a native Buffer call (property names and values are mostly short ASCII). */
const SHORT_STRING = 32

/** Decodes UTF-8 `b[from, to)`. */
function utf8(b: Buffer, from: number, to: number): string {
  if (to - from <= SHORT_STRING) {
    let s = ''
    for (let i = from; i < to; i++) {
      const c = b[i] as number
      if (c >= 0x80) return b.toString('utf8', from, to)
      s += String.fromCharCode(c)
    }
    return s
  }
  return b.toString('utf8', from, to)
}

/** Reads the properties block of one entry (a cursor over `b[at, to)`); throws the codec error when it is malformed. */
class BlockReader {
  constructor(
    private readonly b: Buffer,
    public at: number,
    private readonly to: number,
  ) {}

  need(n: number): void {
    if (this.at + n > this.to) throw entryError('log entry properties are shorter than their fields say')
  }

  u16(): number {
    this.need(2)
    const n = this.b.readUInt16LE(this.at)
    this.at += 2
    return n
  }

  str(): string {
    const n = this.u16()
    this.need(n)
    const v = utf8(this.b, this.at, this.at + n)
    this.at += n
    return v
  }

  block(): MessageProperties {
    const { b } = this
    this.need(1)
    const bits = b[this.at++] ?? 0
    if (bits === 0 || (bits & ~P_KNOWN) !== 0) throw entryError(`log entry properties have an unknown presence byte ${bits}`)
    let expiresAtMs: number | undefined
    if (bits & P_EXPIRY) {
      this.need(8)
      expiresAtMs = b.readDoubleLE(this.at)
      if (!validTime(expiresAtMs)) throw entryError(`log entry expiry ${expiresAtMs} is not a time`)
      this.at += 8
    }
    const contentType = bits & P_CONTENT_TYPE ? this.str() : undefined
    let userProperties: Array<readonly [string, string]> | undefined
    if (bits & P_USER) {
      this.need(4)
      const count = b.readUInt32LE(this.at)
      this.at += 4
      // Each pair takes at least 4 bytes: a count the block cannot hold is corrupt (and no huge array is made).
      this.need(count * 4)
      userProperties = new Array<readonly [string, string]>(count)
      for (let i = 0; i < count; i++) userProperties[i] = [this.str(), this.str()]
    }
    const responseTopic = bits & P_RESPONSE_TOPIC ? this.str() : undefined
    let correlationData: Uint8Array | undefined
    if (bits & P_CORRELATION) {
      const n = this.u16()
      this.need(n)
      correlationData = new Uint8Array(b.subarray(this.at, this.at + n))
      this.at += n
    }
    if (this.at !== this.to) throw entryError(`log entry properties block has ${this.to - this.at} bytes beyond its fields`)
    // Only the present fields, so that a decoded entry compares equal to what was written.
    const p: { -readonly [K in keyof MessageProperties]: MessageProperties[K] } = {}
    if (expiresAtMs !== undefined) p.expiresAtMs = expiresAtMs
    if (contentType !== undefined) p.contentType = contentType
    if (bits & P_UTF8) p.utf8 = true
    if (userProperties !== undefined) p.userProperties = userProperties
    if (responseTopic !== undefined) p.responseTopic = responseTopic
    if (correlationData !== undefined) p.correlationData = correlationData
    return p
  }
}

/**
 * The absolute expiry of an encoded entry (ms since the epoch), read without decoding it: Infinity
 * when it has none (version 1 and 2 entries, version 3 without bit 0) or is not a valid entry. Never throws.
 */
export function entryExpiresAtMs(entry: Uint8Array): number {
  if (entry[0] !== ENTRY_VERSION_PROPERTIES || entry.length < FIXED) return Infinity
  const b = Buffer.from(entry.buffer, entry.byteOffset, entry.byteLength)
  const blockAt = FIXED + (b[4] ?? 0) + b.readUInt16LE(5) + 4
  if (blockAt + 9 > b.length || ((b[blockAt] ?? 0) & P_EXPIRY) === 0) return Infinity
  const t = b.readDoubleLE(blockAt + 1)
  return validTime(t) ? t : Infinity
}

/** The client id of an encoded entry, read without decoding the rest; '' when it is not a valid entry. Never throws. */
export function entryClientId(entry: Uint8Array): string {
  if (entry.length < FIXED) return ''
  const b = Buffer.from(entry.buffer, entry.byteOffset, entry.byteLength)
  const n = b[4] ?? 0
  return FIXED + n <= b.length ? b.toString('utf8', FIXED, FIXED + n) : ''
}

/** Bytes an encoded entry spends on its MQTT 5 properties (the length field and the block; 0 below version 3). */
export function propertiesBlockBytes(entry: Uint8Array): number {
  if (entry[0] !== ENTRY_VERSION_PROPERTIES || entry.length < FIXED) return 0
  const b = Buffer.from(entry.buffer, entry.byteOffset, entry.byteLength)
  const at = FIXED + (b[4] ?? 0) + b.readUInt16LE(5)
  return at + 4 <= b.length ? 4 + b.readUInt32LE(at) : 0
}

/** Decodes an entry; the payload is a view into `buf` (no copy). Throws only the codec error (FERRY_ERR_CODEC_ENTRY). */
export function decodeEntry(buf: Uint8Array): Entry {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  const version = b[0]
  if (b.length < FIXED || (version !== ENTRY_VERSION && version !== ENTRY_VERSION_PROPERTIES && version !== 1)) {
    throw entryError(`log entry of ${b.length} bytes has unknown version ${b[0]}`)
  }
  const flags = b[1] ?? 0
  const cidLen = b[4] ?? 0
  const topicLen = b.readUInt16LE(5)
  let payloadAt = FIXED + cidLen + topicLen
  if (payloadAt > b.length) throw entryError('log entry is shorter than its header says')
  let properties: MessageProperties | undefined
  if (version === ENTRY_VERSION_PROPERTIES) {
    if (payloadAt + 4 > b.length) throw entryError('log entry is shorter than its header says')
    const blockAt = payloadAt + 4
    const blockEnd = blockAt + b.readUInt32LE(payloadAt)
    if (blockEnd > b.length) throw entryError('log entry is shorter than its properties block says')
    properties = new BlockReader(b, blockAt, blockEnd).block()
    payloadAt = blockEnd
  }
  const qos = (flags & 3) as 0 | 1 | 2
  const retain = (flags & 4) !== 0
  const packetId = b.readUInt16LE(2)
  const encoding = version === 1 ? 0 : (((flags >> 3) & 3) as PayloadEncoding)
  const clientId = b.toString('utf8', FIXED, FIXED + cidLen)
  const topic = b.toString('utf8', FIXED + cidLen, FIXED + cidLen + topicLen)
  const payload = b.subarray(payloadAt)
  // Two object shapes, each built whole (no property added later): entries without properties as before.
  if (properties === undefined) return { qos, retain, packetId, encoding, clientId, topic, payload }
  return { qos, retain, packetId, encoding, clientId, topic, payload, properties }
}
