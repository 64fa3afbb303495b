// Scanner resync: after damage, a valid-looking frame hidden in a device payload must not be taken for a record.
//
// A device controls the bytes of its payload, so it can publish a complete record frame (magic,
// seq, CRC and all), 8-aligned in the segment file by padding. Before the fix, damage to the record
// carrying it made the scanner step into the payload, return the hidden frame (with any client id and
// topic it names), and then skip every real record with a lower seq, or stop at a hidden seal.
import fs from 'node:fs'
import path from 'node:path'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { decodeEntry, encodeEntry } from '../../src/codec/index.js'
import { encodeSealBody, encodeSegmentHeader, frameBytes, MAX_BODY_BYTES, SEAL_FRAME_BYTES, SEGMENT_HEADER_BYTES, segmentFileName, TYPE_DATA, TYPE_SEAL, writeFrame } from '../../src/log/format.js'
import { nodeFs } from '../../src/log/index.js'
import { LogReader } from '../../src/log/index.js'
import { SegmentScanner } from '../../src/log/scanner.js'
import { frameOffsets, segmentFiles } from '../helpers/damage.js'
import { openLog, tempDir } from '../helpers/log.js'

const TOPIC = 'devices/x/telemetry'

/** A log entry as ingress stores it, payload kept as sent (it is not JSON). */
function entry(clientId: string, payload: Buffer, packetId = 1): Buffer {
  return encodeEntry({ clientId, topic: TOPIC, qos: 1, retain: false, packetId, encoding: 3, payload })
}

/** One complete frame, as a device would put it in its payload. */
function frame(type: number, seq: number, body: Buffer): Buffer {
  const b = Buffer.alloc(frameBytes(body.length))
  writeFrame(b, 0, type, seq, Date.now(), body)
  return b
}

const spoof = (seq: number): Buffer => frame(TYPE_DATA, seq, entry('victim', Buffer.from(`spoofed ${seq}`)))

/**
 * The entry of a device that hides `inner` in its payload, padded so that `inner` starts on an
 * 8-byte boundary of the segment file (records start on one, and the body is at +32).
 */
function carrier(inner: Buffer, tail = Buffer.from('tail-bytes')): Buffer {
  const clientId = 'evil'
  const fixed = 7 + Buffer.byteLength(clientId) + Buffer.byteLength(TOPIC)
  return entry(clientId, Buffer.concat([Buffer.alloc((8 - (fixed % 8)) % 8, 0x41), inner, tail]))
}

/** A carrier whose frame ends right after `inner` (no tail, and its body is then a multiple of 8). */
const carrierEndingWith = (inner: Buffer): Buffer => carrier(inner, Buffer.alloc(0))

interface Written {
  readonly file: string
  readonly offsets: number[]
  readonly size: number
}

/** Writes a segment with consecutive seqs from `base`, sealed unless told otherwise. */
function writeSegment(bodies: Buffer[], opts: { base?: number; sealed?: boolean; dir?: string } = {}): Written {
  const base = opts.base ?? 1
  const dir = opts.dir ?? tempDir('ferry-scan-')
  const parts = [encodeSegmentHeader({ baseSeq: base, createdAt: Date.now(), epoch: 1, logId: Buffer.alloc(16, 7) })]
  const offsets: number[] = []
  let at = SEGMENT_HEADER_BYTES
  bodies.forEach((b, i) => {
    offsets.push(at)
    const f = frame(TYPE_DATA, base + i, b)
    parts.push(f)
    at += f.length
  })
  if (opts.sealed !== false) parts.push(frame(TYPE_SEAL, base + bodies.length - 1, encodeSealBody(base, base + bodies.length - 1)))
  const file = path.join(dir, segmentFileName(base))
  const all = Buffer.concat(parts)
  fs.writeFileSync(file, all)
  return { file, offsets, size: all.length }
}

/** XORs one byte of the file. */
function damage(file: string, offset: number, mask = 0xff): void {
  const b = fs.readFileSync(file)
  b[offset] = (b[offset] ?? 0) ^ mask
  fs.writeFileSync(file, b)
}

interface Scan {
  readonly records: Array<{ seq: number; clientId: string }>
  readonly gaps: number
  readonly sealed: boolean
  readonly lastEnd: number
}

async function scan(file: string, opts: { afterSeq?: number; chunkBytes?: number } = {}): Promise<Scan> {
  const size = fs.statSync(file).size
  const fd = await nodeFs.open(file, 'r')
  try {
    const sc = new SegmentScanner(nodeFs, fd, { afterSeq: opts.afterSeq ?? 0, limit: () => size, chunkBytes: opts.chunkBytes ?? 1 << 20, maxBodyBytes: MAX_BODY_BYTES })
    const records: Array<{ seq: number; clientId: string }> = []
    let gaps = 0
    for (let r = await sc.next(); r; r = await sc.next()) {
      gaps += sc.gapBefore
      records.push({ seq: r.seq, clientId: decodeEntry(r.body).clientId })
    }
    return { records, gaps, sealed: sc.sealed, lastEnd: sc.lastEnd }
  } finally {
    await nodeFs.close(fd)
  }
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, i) => from + i)
const normal = (i: number): Buffer => entry('dev', Buffer.from(`reading ${i} `.padEnd(20 + (i % 13), '.')), i)

/** 20 records; seq 4 is the carrier of `inner`. */
function withCarrier(inner: Buffer, opts: { sealed?: boolean; endExactly?: boolean } = {}): Written {
  return writeSegment(range(1, 20).map((s) => (s === 4 ? (opts.endExactly ? carrierEndingWith(inner) : carrier(inner)) : normal(s))), opts)
}

describe('scanner resync', () => {
  it('scanner - a frame with a far seq hidden in a payload is not taken after damage to its record; the records after it are read', async () => {
    const w = withCarrier(spoof(1_000_000))
    damage(w.file, w.offsets[3]!) // the carrier's magic: the scanner must resync from here
    const s = await scan(w.file)
    expect(s.records.map((r) => r.seq)).toEqual(range(1, 20).filter((x) => x !== 4))
    expect(s.records.every((r) => r.clientId === 'dev')).toBe(true)
    expect(s.gaps).toBe(1)
    expect(s.sealed).toBe(true)
  })

  it('scanner - a seal hidden in a payload does not end the scan', async () => {
    const w = withCarrier(frame(TYPE_SEAL, 3, encodeSealBody(1, 3)))
    damage(w.file, w.offsets[3]!)
    const s = await scan(w.file)
    expect(s.records.map((r) => r.seq)).toEqual(range(1, 20).filter((x) => x !== 4))
    expect(s.sealed).toBe(true)
  })

  // Seqs a device could guess: its own record's (4), the next ones, and runs of them.
  const guesses: Array<[string, number[]]> = [
    ['its own seq', [4]],
    ['the next seq', [5]],
    ['a run of the next seqs', [5, 6, 7]],
    ['a run up to past the end', range(5, 25)],
  ]
  for (const [name, seqs] of guesses) {
    for (const endExactly of [false, true]) {
      for (const sealed of [true, false]) {
        it(`scanner - hidden frames with ${name}${endExactly ? ', ending where the next record starts' : ''} (${sealed ? 'sealed' : 'unsealed'}): real records win`, async () => {
          const w = withCarrier(Buffer.concat(seqs.map(spoof)), { endExactly, sealed })
          damage(w.file, w.offsets[3]!)
          const s = await scan(w.file, { chunkBytes: 256 }) // small reads: frames straddle buffers
          expect(s.records).toEqual(range(1, 20).filter((x) => x !== 4).map((seq) => ({ seq, clientId: 'dev' })))
        })
      }
    }
  }

  it('scanner - damage inside the payload (header intact): the record is skipped whole, its payload is not searched', async () => {
    const w = withCarrier(spoof(6))
    damage(w.file, w.offsets[3]! + 32 + 9) // a payload byte before the hidden frame
    const s = await scan(w.file)
    expect(s.records.map((r) => r.seq)).toEqual(range(1, 20).filter((x) => x !== 4))
    expect(s.gaps).toBe(1)
  })

  it('scanner - a torn last record: the hidden frame in its written part is not taken, and the tail starts at the torn record', async () => {
    const inner = spoof(5)
    const w = writeSegment([...range(1, 3).map(normal), carrier(inner, Buffer.alloc(600, 0x42))], { sealed: false })
    const tornAt = w.offsets[3]! + 32 + 16 + inner.length + 100 // inside the carrier, after the hidden frame
    fs.truncateSync(w.file, tornAt)
    const s = await scan(w.file)
    expect(s.records.map((r) => r.seq)).toEqual([1, 2, 3])
    expect(s.lastEnd).toBe(w.offsets[3]) // recovery truncates the torn record, hidden frame and all
  })

  it('scanner - stale records (afterSeq, as `ferry log dump --from`) are skipped whole: a frame in their payload is never returned', async () => {
    const w = withCarrier(spoof(100))
    const s = await scan(w.file, { afterSeq: 10 })
    expect(s.records.map((r) => r.seq)).toEqual(range(11, 20))
    expect(s.gaps).toBe(0)
  })

  it('scanner - damage in two places: the record between them is kept (no payload frames)', async () => {
    const w = writeSegment(range(1, 30).map(normal))
    damage(w.file, w.offsets[9]! + 1) // seq 10: magic
    damage(w.file, w.offsets[11]! + 5) // seq 12: length field
    const s = await scan(w.file)
    expect(s.records.map((r) => r.seq)).toEqual(range(1, 30).filter((x) => x !== 10 && x !== 12))
    expect(s.gaps).toBe(2)
  })

  it('scanner - damage mid-segment and a torn tail (nothing confirms to the end): the records between are kept', async () => {
    const w = writeSegment(range(1, 30).map(normal), { sealed: false })
    damage(w.file, w.offsets[9]!) // seq 10
    fs.truncateSync(w.file, w.offsets[29]! + 20) // seq 30 torn
    const s = await scan(w.file)
    expect(s.records.map((r) => r.seq)).toEqual(range(1, 29).filter((x) => x !== 10))
    expect(s.lastEnd).toBe(w.offsets[29])
  })

  it('scanner - law: one damaged record among records whose payloads hide frames and seals: exactly the others are read', async () => {
    const hidden = fc.oneof(
      fc.record({ kind: fc.constant('data' as const), seqs: fc.array(fc.integer({ min: -3, max: 40 }), { minLength: 1, maxLength: 4 }) }),
      fc.record({ kind: fc.constant('seal' as const), seqs: fc.array(fc.integer({ min: -3, max: 40 }), { minLength: 1, maxLength: 1 }) }),
    )
    const rec = fc.record({
      clientId: fc.string({ minLength: 1, maxLength: 12 }).map((s) => s.replace(/[^\x20-\x7e]/g, 'x') || 'd'),
      pre: fc.integer({ min: 0, max: 40 }),
      post: fc.integer({ min: 0, max: 40 }),
      hidden: fc.option(hidden, { freq: 2 }),
    })
    await fc.assert(
      fc.asyncProperty(
        fc.array(rec, { minLength: 2, maxLength: 25 }),
        fc.nat(),
        fc.integer({ min: 0, max: 1_000_000 }),
        fc.integer({ min: 1, max: 255 }),
        fc.boolean(),
        fc.constantFrom(64, 4096, 1 << 20),
        async (recs, pick, where, mask, sealed, chunkBytes) => {
          const base = 1
          const bodies = recs.map((r, i) => {
            const seqOf = (d: number): number => Math.max(1, base + i + d)
            let inner: Buffer = Buffer.alloc(0)
            if (r.hidden?.kind === 'data') inner = Buffer.concat(r.hidden.seqs.map((d) => spoof(seqOf(d))))
            if (r.hidden?.kind === 'seal') inner = frame(TYPE_SEAL, seqOf(r.hidden.seqs[0]!), encodeSealBody(base, seqOf(r.hidden.seqs[0]!)))
            const fixed = 7 + Buffer.byteLength(r.clientId) + Buffer.byteLength(TOPIC)
            const align = (8 - ((fixed + r.pre) % 8)) % 8 // inner frames on 8-byte boundaries of the file
            return entry(r.clientId, Buffer.concat([Buffer.alloc(r.pre + align, 0x61), inner, Buffer.alloc(r.post, 0x62)]), i + 1)
          })
          // An unsealed segment whose last record is damaged is the documented ambiguous case.
          const victim = sealed ? pick % bodies.length : pick % (bodies.length - 1)
          const w = writeSegment(bodies, { base, sealed })
          const start = w.offsets[victim]!
          const len = frameBytes(bodies[victim]!.length)
          damage(w.file, start + (where % len), mask)
          const s = await scan(w.file, { chunkBytes })
          const want = bodies.map((_, i) => base + i).filter((x) => x !== base + victim)
          expect(s.records.map((r) => r.seq)).toEqual(want)
          expect(s.records.every((r) => r.clientId !== 'victim')).toBe(true)
          expect(s.sealed).toBe(sealed)
          fs.rmSync(path.dirname(w.file), { recursive: true, force: true })
        },
      ),
      { numRuns: 300 },
    )
  })

  it('scanner - law: damage in several places and a torn tail (plain payloads): exactly the intact records are read', async () => {
    await fc.assert(
      fc.asyncProperty(
        fc.array(fc.integer({ min: 1, max: 300 }), { minLength: 1, maxLength: 40 }),
        fc.array(fc.record({ at: fc.nat(), mask: fc.integer({ min: 1, max: 255 }) }), { minLength: 1, maxLength: 4 }),
        fc.option(fc.nat(), { freq: 2 }),
        fc.constantFrom(64, 4096, 1 << 20),
        async (sizes, hits, cut, chunkBytes) => {
          const bodies = sizes.map((n, i) => entry(`dev-${i % 3}`, Buffer.alloc(n, 0x30 + (i % 10)), i + 1))
          const sealed = cut === null
          const w = writeSegment(bodies, { sealed })
          const end = cut === null ? w.size : SEGMENT_HEADER_BYTES + (cut % (w.size - SEGMENT_HEADER_BYTES))
          if (cut !== null) fs.truncateSync(w.file, end)
          const hit = new Set<number>()
          for (const h of hits) {
            const at = SEGMENT_HEADER_BYTES + (h.at % (end - SEGMENT_HEADER_BYTES))
            const frameAt = [...w.offsets].reverse().find((o) => o <= at)
            // Not a length field: a flipped length that still reads as a record past the end looks
            // exactly like a torn last record (the documented limit of rule 4).
            if (frameAt !== undefined && at - frameAt >= 4 && at - frameAt < 8) continue
            damage(w.file, at, h.mask)
            hit.add(at)
          }
          const intact = bodies
            .map((b, i) => ({ seq: i + 1, from: w.offsets[i]!, to: w.offsets[i]! + frameBytes(b.length) }))
            .filter((r) => r.to <= end && ![...hit].some((h) => h >= r.from && h < r.to))
            .map((r) => r.seq)
          const s = await scan(w.file, { chunkBytes })
          expect(s.records.map((r) => r.seq)).toEqual(intact)
          fs.rmSync(path.dirname(w.file), { recursive: true, force: true })
        },
      ),
      { numRuns: 300 },
    )
  })

  it('reader - through the ring log: a hidden frame after damage neither is forwarded nor hides the records after it', async () => {
    const dir = tempDir()
    let log = await openLog(dir)
    for (let s = 1; s <= 20; s++) await log.append(s === 4 ? carrier(spoof(1_000_000)) : normal(s))
    await log.close()
    const [file] = segmentFiles(dir)
    damage(file!, frameOffsets(file!)[3]!) // seq 4's magic
    log = await openLog(dir)
    const damaged: number[] = []
    const r = new LogReader(log, 1, (n) => damaged.push(n))
    const got: Array<{ seq: number; clientId: string }> = []
    for (let recs = await r.read(100, 1 << 20); recs.length > 0; recs = await r.read(100, 1 << 20)) {
      for (const x of recs) got.push({ seq: x.seq, clientId: decodeEntry(x.body).clientId })
    }
    await r.close()
    await log.close()
    expect(got).toEqual(range(1, 20).filter((x) => x !== 4).map((seq) => ({ seq, clientId: 'dev' })))
    expect(damaged.reduce((a, b) => a + b, 0)).toBe(1)
  })
})

describe('recovery fast path', () => {
  // Found with the scanner review. Recovery used to trust a valid seal in the last 64 bytes of any
  // segment without scanning it. After a kill -9 the active segment has no seal, and if its last
  // record's payload ends with a crafted seal, recovery took it: the records after the seal's lastSeq
  // were never forwarded (not even counted) and their seqs were given out again. Now the last
  // segment's seal is trusted only after a clean stop.
  it('recovery - a seal forged at the end of the last record of an unsealed segment is not trusted', async () => {
    const dir = tempDir()
    fs.mkdirSync(path.join(dir, 'segments'))
    const forged = frame(TYPE_SEAL, 2, encodeSealBody(1, 2))
    const last = carrierEndingWith(forged)
    expect(last.length % 8).toBe(0) // the forged seal is the last 64 bytes of the file
    const w = writeSegment([...range(1, 9).map(normal), last], { dir: path.join(dir, 'segments'), sealed: false })
    expect(fs.readFileSync(w.file).subarray(w.size - SEAL_FRAME_BYTES).equals(forged)).toBe(true)
    const log = await openLog(dir)
    try {
      expect(log.durableSeq).toBe(10)
      expect(log.next).toBe(11)
    } finally {
      await log.close()
    }
  })
})
