// Byte layout of ring log segments, records and seals (the tables are repeated in README).
//
// Segment file `<dataDir>/segments/<baseSeq:020d>.seg`, little-endian throughout:
//
// Segment header (64 bytes)
// | Off | Size | Field                                                       |
// |-----|------|-------------------------------------------------------------|
// | 0   | 4    | magic "FRSG"                                                |
// | 4   | 2    | format version (1)                                          |
// | 6   | 1    | checksum algorithm (1 = CRC-32/IEEE)                        |
// | 7   | 1    | flags (0)                                                   |
// | 8   | 8    | baseSeq: the seq of the first record in this segment        |
// | 16  | 8    | createdAt, ms since the epoch                               |
// | 24  | 4    | epoch: bumped at every start; part of Nats-Msg-Id           |
// | 28  | 16   | log id (random, from the data directory's identity)         |
// | 44  | 16   | reserved, zero                                              |
// | 60  | 4    | CRC-32 of bytes 0..60                                       |
//
// Record (32-byte header + body + zero padding to a multiple of 8)
// | Off | Size | Field                                                       |
// |-----|------|-------------------------------------------------------------|
// | 0   | 2    | magic 0x5252                                                |
// | 2   | 1    | version (1)                                                 |
// | 3   | 1    | type: 1 data, 3 seal                                        |
// | 4   | 4    | bodyLen (> 0)                                               |
// | 8   | 8    | seq (data: strictly +1 per record, never reused; seal: last) |
// | 16  | 8    | receive time, ms since the epoch (informational)            |
// | 24  | 4    | data: reserved, zero. seal: the segment's expiry, see below |
// | 28  | 4    | CRC-32 of bytes 0..28 followed by the body                  |
// | 32  | n    | body (opaque bytes)                                         |
//
// Seal record body (32 bytes), written when a segment is rolled; lets startup skip the scan:
// | 0 | 8 | firstSeq | 8 | 8 | lastSeq (firstSeq-1 when empty) | 16 | 8 | record count | 24 | 8 | 0 |
//
// Seal expiry (the seal frame's header word at 24, covered by the CRC; readers that predate it
// ignore it): the latest expiry of the segment's records, in whole seconds since the epoch rounded
// up. 0 = not recorded (a seal written before expiry tracking, or by a log without `expiryOf`: the
// expiry is learnt by scanning the segment); 0xFFFFFFFF = some record never expires.
import { crc32 } from 'node:zlib'

export const SEGMENT_MAGIC = 0x47535246 // "FRSG" read as u32 LE
export const FORMAT_VERSION = 1
export const CRC_ALG_IEEE = 1
export const SEGMENT_HEADER_BYTES = 64
export const RECORD_HEADER_BYTES = 32
export const RECORD_MAGIC = 0x5252
export const RECORD_VERSION = 1
export const TYPE_DATA = 1
export const TYPE_SEAL = 3
export const SEAL_BODY_BYTES = 32
export const SEAL_FRAME_BYTES = RECORD_HEADER_BYTES + SEAL_BODY_BYTES
/**
 * Room the bound (--log-max-bytes) keeps for the data directory's files beside the segments: the
 * checkpoint (8 KiB), the lock file and the directories themselves, with their block rounding. The
 * segments stay within maxBytes minus this, so the whole directory stays within maxBytes.
 */
export const DIR_RESERVE_BYTES = 32 * 1024
/**
 * Largest body the format allows (a frame must also fit in its file). Readers check frames against
 * this, never against the configured publish limit: lowering --max-record-bytes must not turn
 * records already stored into "damage".
 */
export const MAX_BODY_BYTES = 1024 * 1024 * 1024

const TWO_32 = 2 ** 32

/** Writes a non-negative integer < 2^53 as u64 LE without BigInt (hot path). */
export function writeU64(b: Buffer, v: number, at: number): void {
  b.writeUInt32LE(v % TWO_32, at)
  b.writeUInt32LE(Math.floor(v / TWO_32), at + 4)
}

/** Reads a u64 LE as a number (exact below 2^53; callers reject larger values where it matters). */
export function readU64(b: Buffer, at: number): number {
  return b.readUInt32LE(at) + b.readUInt32LE(at + 4) * TWO_32
}

/** Bytes a record with a body of `bodyLen` bytes occupies on disk. */
export function frameBytes(bodyLen: number): number {
  return RECORD_HEADER_BYTES + ((bodyLen + 7) & ~7)
}

/** File name of the segment whose first record has `baseSeq`. Lexical order equals numeric order. */
export function segmentFileName(baseSeq: number): string {
  return `${String(baseSeq).padStart(20, '0')}.seg`
}

/** Parses a segment file name; undefined for anything else. */
export function parseSegmentFileName(name: string): number | undefined {
  const m = /^(\d{20})\.seg$/.exec(name)
  return m?.[1] === undefined ? undefined : Number(m[1])
}

/** Fields of a segment header. */
export interface SegmentHeader {
  readonly baseSeq: number
  readonly createdAt: number
  readonly epoch: number
  readonly logId: Buffer
}

export function encodeSegmentHeader(h: SegmentHeader): Buffer {
  const b = Buffer.alloc(SEGMENT_HEADER_BYTES)
  b.writeUInt32LE(SEGMENT_MAGIC, 0)
  b.writeUInt16LE(FORMAT_VERSION, 4)
  b[6] = CRC_ALG_IEEE
  b.writeBigUInt64LE(BigInt(h.baseSeq), 8)
  b.writeBigUInt64LE(BigInt(h.createdAt), 16)
  b.writeUInt32LE(h.epoch, 24)
  h.logId.copy(b, 28, 0, 16)
  b.writeUInt32LE(crc32(b.subarray(0, 60)), 60)
  return b
}

/** Decodes a segment header, or returns a reason it is not valid. */
export function decodeSegmentHeader(b: Buffer): SegmentHeader | string {
  if (b.length < SEGMENT_HEADER_BYTES) return `header is ${b.length} bytes, expected ${SEGMENT_HEADER_BYTES}`
  if (b.readUInt32LE(0) !== SEGMENT_MAGIC) return 'bad magic'
  if (b.readUInt32LE(60) !== crc32(b.subarray(0, 60))) return 'header checksum mismatch'
  const version = b.readUInt16LE(4)
  if (version !== FORMAT_VERSION) return `unsupported format version ${version}`
  if (b[6] !== CRC_ALG_IEEE) return `unsupported checksum algorithm ${b[6]}`
  return {
    baseSeq: Number(b.readBigUInt64LE(8)),
    createdAt: Number(b.readBigUInt64LE(16)),
    epoch: b.readUInt32LE(24),
    logId: Buffer.from(b.subarray(28, 44)),
  }
}

/**
 * Writes one record frame into `out` at `at` and returns the bytes used. The body is copied;
 * padding is zeroed; the CRC covers the header's first 28 bytes and the body.
 */
export function writeFrame(out: Buffer, at: number, type: number, seq: number, ts: number, body: Uint8Array, reserved = 0): number {
  const len = frameBytes(body.length)
  out.writeUInt16LE(RECORD_MAGIC, at)
  out[at + 2] = RECORD_VERSION
  out[at + 3] = type
  out.writeUInt32LE(body.length, at + 4)
  writeU64(out, seq, at + 8)
  writeU64(out, ts, at + 16)
  out.writeUInt32LE(reserved, at + 24)
  out.set(body, at + RECORD_HEADER_BYTES)
  out.fill(0, at + RECORD_HEADER_BYTES + body.length, at + len)
  const crc = crc32(body, crc32(out.subarray(at, at + 28)))
  out.writeUInt32LE(crc, at + 28)
  return len
}

/** Seal expiry word: not recorded. */
export const SEAL_EXPIRY_UNKNOWN = 0
/** Seal expiry word: some record of the segment never expires. */
export const SEAL_EXPIRY_NEVER = 0xffffffff

/** The seal expiry word for a segment whose records expire at `maxExpiresAtMs` at the latest (ms since the epoch). */
export function encodeSealExpiry(maxExpiresAtMs: number): number {
  if (!(maxExpiresAtMs < (SEAL_EXPIRY_NEVER - 1) * 1000)) return SEAL_EXPIRY_NEVER
  return Math.max(1, Math.ceil(maxExpiresAtMs / 1000))
}

/** The latest expiry (ms) a seal expiry word states: undefined when not recorded, Infinity for never. */
export function decodeSealExpiry(word: number): number | undefined {
  if (word === SEAL_EXPIRY_UNKNOWN) return undefined
  return word === SEAL_EXPIRY_NEVER ? Infinity : word * 1000
}

/**
 * The seal's body. `lostSeqs`: seqs at the end of the segment (up to lastSeq) that a power loss
 * took after they were acknowledged; recovery writes it once and counts them, readers skip them.
 */
export function encodeSealBody(firstSeq: number, lastSeq: number, lostSeqs = 0): Buffer {
  const b = Buffer.alloc(SEAL_BODY_BYTES)
  b.writeBigUInt64LE(BigInt(firstSeq), 0)
  b.writeBigUInt64LE(BigInt(lastSeq), 8)
  b.writeBigUInt64LE(BigInt(Math.max(0, lastSeq - firstSeq + 1 - lostSeqs)), 16)
  b.writeBigUInt64LE(BigInt(lostSeqs), 24)
  return b
}

/** A record frame found valid in a buffer. */
export interface Frame {
  readonly type: number
  readonly seq: number
  readonly ts: number
  readonly body: Buffer
  /** Bytes the frame occupies, padding included. */
  readonly length: number
}

/** Result of looking at one position: a valid frame, too few bytes to decide, or not a frame. */
export type FrameCheck = Frame | 'need-more' | 'invalid'

/**
 * Checks the frame at `at` in `buf`. `available` is how many bytes of the file from `at` exist
 * (a frame that claims more is invalid). Never throws, whatever the bytes.
 */
export function checkFrame(buf: Buffer, at: number, available: number, maxBodyBytes: number): FrameCheck {
  const inBuf = buf.length - at
  if (available < RECORD_HEADER_BYTES) return 'invalid'
  if (inBuf < RECORD_HEADER_BYTES) return 'need-more'
  if (buf.readUInt16LE(at) !== RECORD_MAGIC || buf[at + 2] !== RECORD_VERSION) return 'invalid'
  const type = buf[at + 3]
  if (type !== TYPE_DATA && type !== TYPE_SEAL) return 'invalid'
  const bodyLen = buf.readUInt32LE(at + 4)
  if (bodyLen === 0 || bodyLen > maxBodyBytes) return 'invalid'
  if (type === TYPE_SEAL && bodyLen !== SEAL_BODY_BYTES) return 'invalid'
  const len = frameBytes(bodyLen)
  if (len > available) return 'invalid'
  if (len > inBuf) return 'need-more'
  const bodyEnd = at + RECORD_HEADER_BYTES + bodyLen
  for (let i = bodyEnd; i < at + len; i++) if (buf[i] !== 0) return 'invalid'
  const body = buf.subarray(at + RECORD_HEADER_BYTES, bodyEnd)
  if (crc32(body, crc32(buf.subarray(at, at + 28))) !== buf.readUInt32LE(at + 28)) return 'invalid'
  if (buf.readUInt32LE(at + 12) >= 0x200000) return 'invalid' // seq >= 2^53
  return { type, seq: readU64(buf, at + 8), ts: readU64(buf, at + 16), body, length: len }
}

/** Decodes a seal body. */
export function decodeSealBody(body: Buffer): { firstSeq: number; lastSeq: number; lostSeqs: number } {
  const lostSeqs = Number(body.readBigUInt64LE(24))
  const lastSeq = Number(body.readBigUInt64LE(8))
  const firstSeq = Number(body.readBigUInt64LE(0))
  return { firstSeq, lastSeq, lostSeqs: lostSeqs <= lastSeq - firstSeq + 1 ? lostSeqs : 0 }
}
