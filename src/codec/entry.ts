// The log entry: how one MQTT publish is stored as the opaque bytes of a ring log record.
//
// | Off | Size | Field                                            |
// |-----|------|--------------------------------------------------|
// | 0   | 1    | version (2; 1 is read too)                       |
// | 1   | 1    | flags: bits 0-1 QoS, bit 2 retain, bits 3-4 the  |
// |     |      | payload's encoding (v2; see PayloadEncoding)     |
// | 2   | 2    | MQTT packet id (0 for QoS 0), u16 LE             |
// | 4   | 1    | client id length C (bytes, ≤ 255)                |
// | 5   | 2    | topic length T (bytes), u16 LE                   |
// | 7   | C    | client id, UTF-8                                 |
// | 7+C | T    | topic, UTF-8                                     |
// | ... | rest | payload, encoded for upstream at ingest (v2) or  |
// |     |      | as the device sent it (v1, or encoding 0)        |
//
// Payloads are transcoded (JSON to CBOR) once, at ingest: the log then holds what goes upstream,
// so a backlog drains without redoing that work and the bounded log holds more messages.
import type { MessageProperties } from './properties.js'
import { FerryError } from '../errors.js'
import { CONTENT_TYPE_CBOR, CONTENT_TYPE_JSON, CONTENT_TYPE_OCTETS } from './payload.js'

export const ENTRY_VERSION = 2
const FIXED = 7

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
  /** MQTT 5 properties kept with the message (entry version 3, issue 13; not stored yet). */
  readonly properties?: MessageProperties
}

/** Encodes an entry into one Buffer. Client ids longer than 255 bytes are refused by ingress first. */
export function encodeEntry(e: Entry): Buffer {
  const cidLen = Buffer.byteLength(e.clientId, 'utf8')
  const topicLen = Buffer.byteLength(e.topic, 'utf8')
  if (cidLen > 255 || topicLen > 0xffff) {
    throw new FerryError('FERRY_ERR_CODEC_ENTRY', `client id or topic too long (${cidLen}, ${topicLen} bytes)`)
  }
  // Strings are written straight into the entry: no intermediate buffers on the append path.
  const out = Buffer.allocUnsafe(FIXED + cidLen + topicLen + e.payload.length)
  out[0] = ENTRY_VERSION
  out[1] = (e.qos & 3) | (e.retain ? 4 : 0) | ((e.encoding ?? 0) << 3)
  out.writeUInt16LE(e.packetId & 0xffff, 2)
  out[4] = cidLen
  out.writeUInt16LE(topicLen, 5)
  out.write(e.clientId, FIXED, cidLen, 'utf8')
  out.write(e.topic, FIXED + cidLen, topicLen, 'utf8')
  out.set(e.payload, FIXED + cidLen + topicLen)
  return out
}

/** Decodes an entry; the payload is a view into `buf` (no copy). */
export function decodeEntry(buf: Uint8Array): Entry {
  const b = Buffer.from(buf.buffer, buf.byteOffset, buf.byteLength)
  const version = b[0]
  if (b.length < FIXED || (version !== ENTRY_VERSION && version !== 1)) {
    throw new FerryError('FERRY_ERR_CODEC_ENTRY', `log entry of ${b.length} bytes has unknown version ${b[0]}`)
  }
  const flags = b[1] ?? 0
  const cidLen = b[4] ?? 0
  const topicLen = b.readUInt16LE(5)
  const payloadAt = FIXED + cidLen + topicLen
  if (payloadAt > b.length) throw new FerryError('FERRY_ERR_CODEC_ENTRY', 'log entry is shorter than its header says')
  return {
    qos: (flags & 3) as 0 | 1 | 2,
    retain: (flags & 4) !== 0,
    packetId: b.readUInt16LE(2),
    encoding: version === 1 ? 0 : (((flags >> 3) & 3) as PayloadEncoding),
    clientId: b.toString('utf8', FIXED, FIXED + cidLen),
    topic: b.toString('utf8', FIXED + cidLen, payloadAt),
    payload: b.subarray(payloadAt),
  }
}
