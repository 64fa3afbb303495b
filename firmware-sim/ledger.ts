// The ack ledger: which (device, seq) the broker acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2), in memory and
// as a compact file that `firmware-sim verify` reads in another process.
//
// In memory one bit per seq per device (a growable bitset), so 1,000,000 acknowledged messages cost ~125 KB.
//
// File (`--ledger FILE`): the whole content is gzip-compressed (gzip's CRC-32 protects it); written to FILE.tmp,
// fsync'd, then renamed over FILE, so a reader sees the previous or the new ledger, never a torn one.
// Integers little-endian.
//
// | offset | size | field |
// |---|---|---|
// | 0 | 4 | magic `FSLG` |
// | 4 | 2 | format version (1) |
// | 6 | 2 | flags (0) |
// | 8 | 4 | device count |
// | 12 | 8 | written at, ms since the Unix epoch (f64) |
// | 20 | … | device records |
//
// Device record:
//
// | size | field |
// |---|---|
// | 2 | n: device id length in bytes |
// | n | device id, UTF-8 |
// | 4 | highest seq handed to MQTT (0: none); seqs above it were never sent |
// | 4 | number of acknowledged seqs |
// | 4 | w: bitset length in 32-bit words |
// | 4·w | bitset: bit (seq & 31) of word (seq >> 5) is set when seq was acknowledged |
import fs from 'node:fs/promises'
import { gunzipSync, gzipSync } from 'node:zlib'

/** Growable bitset of non-negative integers (seqs). */
export class SeqSet {
  private words = new Uint32Array(2)
  size = 0

  /** Adds `seq`; false if it was already present. */
  add(seq: number): boolean {
    const w = seq >>> 5
    if (w >= this.words.length) {
      let len = this.words.length
      while (len <= w) len *= 2
      const grown = new Uint32Array(len)
      grown.set(this.words)
      this.words = grown
    }
    const bit = 1 << (seq & 31)
    const cur = this.words[w] ?? 0
    if ((cur & bit) !== 0) return false
    this.words[w] = cur | bit
    this.size++
    return true
  }

  has(seq: number): boolean {
    if (!Number.isInteger(seq) || seq < 0) return false
    const w = seq >>> 5
    return w < this.words.length && ((this.words[w] ?? 0) & (1 << (seq & 31))) !== 0
  }

  /** Members in ascending order. */
  toArray(): number[] {
    const out: number[] = []
    this.forEach((s) => out.push(s))
    return out
  }

  /** Calls `fn` for each member, ascending. */
  forEach(fn: (seq: number) => void): void {
    for (let w = 0; w < this.words.length; w++) {
      let word = this.words[w] ?? 0
      while (word !== 0) {
        const low = word & -word
        fn(w * 32 + (31 - Math.clz32(low)))
        word ^= low
      }
    }
  }

  /** The words up to the last non-zero one (what the file stores). */
  usedWords(): Uint32Array {
    let n = this.words.length
    while (n > 0 && this.words[n - 1] === 0) n--
    return this.words.subarray(0, n)
  }

  /** A set from stored words; `size` is recounted. */
  static fromWords(words: Uint32Array): SeqSet {
    const s = new SeqSet()
    s.words = new Uint32Array(Math.max(2, words.length))
    s.words.set(words)
    let size = 0
    for (const w of words) size += popcount(w)
    s.size = size
    return s
  }
}

function popcount(v: number): number {
  v = v - ((v >>> 1) & 0x55555555)
  v = (v & 0x33333333) + ((v >>> 2) & 0x33333333)
  return (((v + (v >>> 4)) & 0x0f0f0f0f) * 0x01010101) >>> 24
}

/** Read-only view of which (device, seq) pairs were acknowledged (PUBACK / PUBCOMP; QoS 0 is never recorded). */
export interface AckLedger {
  /** Distinct acknowledged (device, seq) pairs. */
  readonly size: number
  /** Acks for a (device, seq) that was already acknowledged. Expected to stay 0. */
  readonly duplicates: number
  /** Whether `seq` of `device` was acknowledged. */
  has(device: string, seq: number): boolean
  /** Number of distinct acknowledged seqs of `device`. */
  countFor(device: string): number
  /** Device ids with at least one acknowledged message. */
  devices(): string[]
  /** Acknowledged seqs of `device`, ascending. */
  seqs(device: string): number[]
  /** Every device's acknowledged seqs, ascending. */
  toMap(): Map<string, number[]>
  /** Highest seq of `device` handed to MQTT at any QoS (0 when none). */
  sentMax(device: string): number
}

/** One device's entry. */
export interface LedgerEntry {
  readonly acked: SeqSet
  /** Highest seq handed to MQTT (any QoS); 0 when none. */
  sentMax: number
}

/** The in-memory ledger of a running fleet, or one read back from a file. */
export class Ledger implements AckLedger {
  private readonly perDevice = new Map<string, LedgerEntry>()
  size = 0
  duplicates = 0
  /** When the file this ledger was read from was written (ms since the epoch); 0 for a live ledger. */
  writtenAtMs = 0

  private entry(device: string): LedgerEntry {
    let e = this.perDevice.get(device)
    if (e === undefined) {
      e = { acked: new SeqSet(), sentMax: 0 }
      this.perDevice.set(device, e)
    }
    return e
  }

  /** Notes that `seq` of `device` was handed to MQTT. */
  noteSent(device: string, seq: number): void {
    const e = this.entry(device)
    if (seq > e.sentMax) e.sentMax = seq
  }

  /** Records an ack; false if (device, seq) was already recorded. */
  record(device: string, seq: number): boolean {
    if (!this.entry(device).acked.add(seq)) {
      this.duplicates++
      return false
    }
    this.size++
    return true
  }

  get(device: string): LedgerEntry | undefined {
    return this.perDevice.get(device)
  }

  has(device: string, seq: number): boolean {
    return this.perDevice.get(device)?.acked.has(seq) ?? false
  }

  countFor(device: string): number {
    return this.perDevice.get(device)?.acked.size ?? 0
  }

  devices(): string[] {
    return [...this.perDevice].filter(([, e]) => e.acked.size > 0).map(([d]) => d)
  }

  /** Every device the ledger knows (sent or acknowledged anything). */
  allDevices(): IterableIterator<[string, LedgerEntry]> {
    return this.perDevice.entries()
  }

  seqs(device: string): number[] {
    return this.perDevice.get(device)?.acked.toArray() ?? []
  }

  toMap(): Map<string, number[]> {
    const out = new Map<string, number[]>()
    for (const [device, e] of this.perDevice) if (e.acked.size > 0) out.set(device, e.acked.toArray())
    return out
  }

  sentMax(device: string): number {
    return this.perDevice.get(device)?.sentMax ?? 0
  }

  /** The file content (see the format at the top of this file). */
  encode(nowMs = Date.now()): Buffer {
    const parts: Buffer[] = []
    const head = Buffer.alloc(20)
    head.write('FSLG', 0, 'latin1')
    head.writeUInt16LE(LEDGER_FORMAT_VERSION, 4)
    head.writeUInt16LE(0, 6)
    head.writeUInt32LE(this.perDevice.size, 8)
    head.writeDoubleLE(nowMs, 12)
    parts.push(head)
    for (const [device, e] of this.perDevice) {
      const id = Buffer.from(device, 'utf8')
      const words = e.acked.usedWords()
      const rec = Buffer.allocUnsafe(2 + id.length + 12 + words.length * 4)
      rec.writeUInt16LE(id.length, 0)
      id.copy(rec, 2)
      let o = 2 + id.length
      rec.writeUInt32LE(e.sentMax, o)
      rec.writeUInt32LE(e.acked.size, o + 4)
      rec.writeUInt32LE(words.length, o + 8)
      o += 12
      for (let i = 0; i < words.length; i++) rec.writeUInt32LE(words[i] ?? 0, o + i * 4)
      parts.push(rec)
    }
    return gzipSync(Buffer.concat(parts), { level: 6 })
  }

  /** Parses a ledger file's content. Throws {@link LedgerFileError} on anything malformed. */
  static decode(file: Uint8Array, name = 'ledger'): Ledger {
    let raw: Buffer
    try {
      raw = gunzipSync(file)
    } catch (err) {
      throw new LedgerFileError(`${name}: not a gzip-compressed firmware-sim ledger`, { cause: err })
    }
    if (raw.length < 20 || raw.toString('latin1', 0, 4) !== 'FSLG') throw new LedgerFileError(`${name}: bad magic, not a firmware-sim ledger`)
    const version = raw.readUInt16LE(4)
    if (version !== LEDGER_FORMAT_VERSION) throw new LedgerFileError(`${name}: format version ${version}, expected ${LEDGER_FORMAT_VERSION}`)
    const count = raw.readUInt32LE(8)
    const ledger = new Ledger()
    ledger.writtenAtMs = raw.readDoubleLE(12)
    let o = 20
    const need = (n: number): void => {
      if (o + n > raw.length) throw new LedgerFileError(`${name}: truncated at byte ${o} (device ${ledger.perDevice.size + 1} of ${count})`)
    }
    for (let i = 0; i < count; i++) {
      need(2)
      const n = raw.readUInt16LE(o)
      need(2 + n + 12)
      const device = raw.toString('utf8', o + 2, o + 2 + n)
      o += 2 + n
      const sentMax = raw.readUInt32LE(o)
      const ackedCount = raw.readUInt32LE(o + 4)
      const w = raw.readUInt32LE(o + 8)
      o += 12
      need(w * 4)
      const words = new Uint32Array(w)
      for (let k = 0; k < w; k++) words[k] = raw.readUInt32LE(o + k * 4)
      o += w * 4
      const acked = SeqSet.fromWords(words)
      if (acked.size !== ackedCount) throw new LedgerFileError(`${name}: device "${device}" says ${ackedCount} acked seqs, its bitset holds ${acked.size}`)
      ledger.perDevice.set(device, { acked, sentMax })
      ledger.size += acked.size
    }
    if (o !== raw.length) throw new LedgerFileError(`${name}: ${raw.length - o} bytes after the last device record`)
    return ledger
  }
}

/** Version written in, and required of, ledger files. */
export const LEDGER_FORMAT_VERSION = 1

/** A ledger file that cannot be read. */
export class LedgerFileError extends Error {
  override readonly name = 'LedgerFileError'
}

/** Writes the ledger to `path` atomically (tmp file, fsync, rename). */
export async function writeLedgerFile(path: string, ledger: Ledger): Promise<void> {
  const data = ledger.encode()
  const tmp = `${path}.tmp`
  const fh = await fs.open(tmp, 'w')
  try {
    await fh.writeFile(data)
    await fh.sync()
  } finally {
    await fh.close()
  }
  await fs.rename(tmp, path)
}

/** Reads a ledger written by {@link writeLedgerFile}. */
export async function readLedgerFile(path: string): Promise<Ledger> {
  let data: Buffer
  try {
    data = await fs.readFile(path)
  } catch (err) {
    throw new LedgerFileError(`cannot read ledger file ${path}: ${(err as Error).message}`, { cause: err })
  }
  return Ledger.decode(data, path)
}
