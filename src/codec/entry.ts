// The log entry: how one MQTT publish is stored as the opaque bytes of a ring log record.
//
// | Off | Size | Field                                            |
// |-----|------|--------------------------------------------------|
// | 0   | 1    | version (1)                                      |
// | 1   | 1    | flags: bits 0-1 QoS, bit 2 retain                |
// | 2   | 2    | MQTT packet id (0 for QoS 0), u16 LE             |
// | 4   | 1    | client id length C (bytes, ≤ 255)                |
// | 5   | 2    | topic length T (bytes), u16 LE                   |
// | 7   | C    | client id, UTF-8                                 |
// | 7+C | T    | topic, UTF-8                                     |
// | ... | rest | payload, as the device sent it                   |
import { FerryError } from '../errors.js'

export const ENTRY_VERSION = 1
const FIXED = 7

/** One device publish as stored in the log. */
export interface Entry {
  readonly clientId: string
  readonly topic: string
  readonly qos: 0 | 1 | 2
  readonly retain: boolean
  /** MQTT packet identifier, 0 for QoS 0. Used to recognise retransmissions after a restart. */
  readonly packetId: number
  readonly payload: Uint8Array
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
  out[1] = (e.qos & 3) | (e.retain ? 4 : 0)
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
  if (b.length < FIXED || b[0] !== ENTRY_VERSION) {
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
    clientId: b.toString('utf8', FIXED, FIXED + cidLen),
    topic: b.toString('utf8', FIXED + cidLen, payloadAt),
    payload: b.subarray(payloadAt),
  }
}
