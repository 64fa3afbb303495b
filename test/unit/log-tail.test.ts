// Ring log memory tail: readers at the tail are served from memory, anywhere else from disk, and
// both give exactly what a disk-only reader gives (same seqs, bodies, epochs, drops).
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { LogReader, nodeFs } from '../../src/log/index.js'
import type { LogFs, LogRecord, RingLog, RingLogOptions } from '../../src/log/index.js'
import { createMetrics } from '../../src/metrics/index.js'
import { writeFrame, TYPE_DATA } from '../../src/log/format.js'
import { flipBit, frameOffsets, segmentFiles, unseal } from '../helpers/damage.js'
import { openLog, tempDir } from '../helpers/log.js'

const body = (i: number, size = 50 + (i % 37)): Buffer => Buffer.from(`record-${i}-`.padEnd(size, 'x'))

/** A file system that counts the bytes read (every read of a record goes through it). */
function countingFs(): { fs: LogFs; bytesRead: () => number; reset: () => void } {
  let n = 0
  return {
    fs: {
      ...nodeFs,
      read: async (fd, buf, off, len, pos) => {
        const got = await nodeFs.read(fd, buf, off, len, pos)
        n += got
        return got
      },
    },
    bytesRead: () => n,
    reset: () => (n = 0),
  }
}

async function drain(r: LogReader, maxRecords = 1000, maxBytes = 1 << 20): Promise<LogRecord[]> {
  const out: LogRecord[] = []
  for (let recs = await r.read(maxRecords, maxBytes); recs.length > 0; recs = await r.read(maxRecords, maxBytes)) out.push(...recs)
  return out
}

const view = (recs: readonly LogRecord[]): Array<[number, number, string]> => recs.map((r) => [r.seq, r.epoch, r.body.toString()])

describe('ring log memory tail', () => {
  it('log tail - a reader at the tail reads nothing from disk and gets what a disk read gets', async () => {
    const dir = tempDir()
    const c = countingFs()
    let log = await openLog(dir, { fs: c.fs, segmentBytes: 256 * 1024, maxBytes: 4 * 1024 * 1024 })
    await Promise.all(Array.from({ length: 3000 }, (_, i) => log.append(body(i))))
    c.reset()
    const r = new LogReader(log, 1)
    const fromMemory = await drain(r, 64)
    await r.close()
    expect(c.bytesRead()).toBe(0)
    expect(fromMemory.map((x) => x.seq)).toEqual(Array.from({ length: 3000 }, (_, i) => i + 1))
    expect(log.listSegments().length).toBeGreaterThan(1) // the tail spans segments
    await log.close()
    log = await openLog(dir, { fs: c.fs, segmentBytes: 256 * 1024, maxBytes: 4 * 1024 * 1024 })
    const d = new LogReader(log, 1)
    const fromDisk = await drain(d)
    await d.close()
    expect(c.bytesRead()).toBeGreaterThan(0)
    expect(view(fromDisk)).toEqual(view(fromMemory))
    expect(fromDisk.map((x) => x.ts)).toEqual(fromMemory.map((x) => x.ts))
    await log.close()
  })

  it('log tail - a reader behind the tail reads from disk, then from memory, without a gap or a repeat', async () => {
    const c = countingFs()
    const log = await openLog(tempDir(), { fs: c.fs, segmentBytes: 128 * 1024, maxBytes: 4 * 1024 * 1024, memoryTailBytes: 16 * 1024 })
    const r = new LogReader(log, 1)
    const got: LogRecord[] = []
    for (let round = 0; round < 6; round++) {
      // Appends in several batches: the tail keeps only the newest 16 KiB of them.
      for (let b = 0; b < 4; b++) await Promise.all(Array.from({ length: 300 }, (_, i) => log.append(body(round * 1200 + b * 300 + i))))
      got.push(...(await drain(r, 50 + round * 40, 4096 * (round + 1))))
      expect(log.memoryTailHeldBytes).toBeLessThanOrEqual(16 * 1024 + 64 * 1024)
    }
    expect(c.bytesRead()).toBeGreaterThan(0)
    expect(got.map((x) => x.seq)).toEqual(Array.from({ length: 7200 }, (_, i) => i + 1))
    expect(got.map((x) => x.body.toString())).toEqual(Array.from({ length: 7200 }, (_, i) => body(i).toString()))
    // Caught up: the next records come from memory.
    c.reset()
    await Promise.all(Array.from({ length: 100 }, (_, i) => log.append(body(7200 + i))))
    expect((await drain(r)).map((x) => x.seq)).toEqual(Array.from({ length: 100 }, (_, i) => 7201 + i))
    expect(c.bytesRead()).toBe(0)
    await r.close()
    await log.close()
  })

  it('log tail - bodies handed out stay intact while the log writes on (batch buffers are never reused)', async () => {
    const log = await openLog(tempDir(), { segmentBytes: 64 * 1024, maxBytes: 1024 * 1024, memoryTailBytes: 8 * 1024 })
    await Promise.all(Array.from({ length: 200 }, (_, i) => log.append(body(i))))
    const r = new LogReader(log, 1)
    const held = await r.read(200, 1 << 20)
    const copies = held.map((x) => Buffer.from(x.body))
    for (let k = 0; k < 10; k++) await Promise.all(Array.from({ length: 300 }, (_, i) => log.append(body(1000 + i, 120))))
    expect(held.map((x) => x.body.equals(copies[x.seq - 1]!))).toEqual(held.map(() => true))
    await r.close()
    await log.close()
  })

  it('log tail - bounded in bytes, one-record batches included (each batch counts its overhead)', async () => {
    const log = await openLog(tempDir(), { fsync: 'none', segmentBytes: 256 * 1024, maxBytes: 4 * 1024 * 1024, memoryTailBytes: 64 * 1024 })
    for (let i = 0; i < 3000; i++) await log.append(body(i, 8))
    expect(log.memoryTailHeldBytes).toBeLessThanOrEqual(64 * 1024)
    expect(log.memoryTailHeldBytes).toBeGreaterThan(32 * 1024)
    const r = new LogReader(log, 1)
    expect((await drain(r, 333)).map((x) => x.body.toString())).toEqual(Array.from({ length: 3000 }, (_, i) => body(i, 8).toString()))
    await r.close()
    await log.close()
  })

  it('log tail - the memory it pins is its bound: a small batch does not hold a slab of the shared Buffer pool', async () => {
    // At a low rate every record is its own small batch, and between two of them the process
    // allocates from Node's shared Buffer pool (an entry encoded per publish, packet buffers): a
    // batch buffer taken from that pool keeps its whole slab (Buffer.poolSize: 64 KiB on Node 26)
    // alive while the tail holds it.
    const log = await openLog(tempDir(), { fsync: 'none', segmentBytes: 256 * 1024, maxBytes: 4 * 1024 * 1024, memoryTailBytes: 64 * 1024 })
    const others: Buffer[] = []
    for (let i = 0; i < 1000; i++) {
      others.push(Buffer.from('p'.repeat(2000)), Buffer.from('q'.repeat(2000))) // another publish's allocations
      if (others.length > 8) others.splice(0, 2)
      await log.append(body(i, 40))
    }
    const pinned = new Set<ArrayBufferLike>()
    for (let seq = 1; seq <= 1000; seq++) {
      const b = log.tailBatchFor(seq)
      if (b) pinned.add(b.frames.buffer)
    }
    expect(pinned.size).toBeGreaterThan(0)
    const bytes = [...pinned].reduce((n, a) => n + a.byteLength, 0)
    expect(bytes).toBeLessThanOrEqual(64 * 1024)
    await log.close()
  })

  it('log tail - trimmed at the ack position; a reader there still reads on', async () => {
    const log = await openLog(tempDir(), { segmentBytes: 256 * 1024, maxBytes: 4 * 1024 * 1024 })
    for (let b = 0; b < 10; b++) await Promise.all(Array.from({ length: 100 }, (_, i) => log.append(body(b * 100 + i))))
    const full = log.memoryTailHeldBytes
    expect(full).toBeGreaterThan(0)
    log.ack(550)
    expect(log.memoryTailHeldBytes).toBeLessThan(full)
    expect(log.memoryTailHeldBytes).toBeGreaterThan(0)
    const r = new LogReader(log, 551)
    expect((await drain(r)).map((x) => x.seq)).toEqual(Array.from({ length: 450 }, (_, i) => 551 + i))
    log.ack(1000)
    expect(log.memoryTailHeldBytes).toBe(0)
    await r.close()
    await log.close()
  })

  it('log tail - fsync batch: records wait for the interval sync, from memory as from disk', async () => {
    const log = await openLog(tempDir(), { fsync: 'batch', fsyncIntervalMs: 60_000, segmentBytes: 256 * 1024 })
    await Promise.all(Array.from({ length: 50 }, (_, i) => log.append(body(i))))
    expect(log.memoryTailHeldBytes).toBeGreaterThan(0)
    const r = new LogReader(log, 1)
    expect(await r.read(100, 1 << 20)).toEqual([]) // written, not yet synced
    await log.close() // syncs and seals: now durable
    expect((await r.read(100, 1 << 20)).map((x) => x.seq)).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
    await r.close()

    const log2 = await openLog(tempDir(), { fsync: 'batch', fsyncIntervalMs: 20, segmentBytes: 256 * 1024 })
    const r2 = new LogReader(log2, 1)
    const got: number[] = []
    for (let b = 0; b < 5; b++) {
      await Promise.all(Array.from({ length: 40 }, (_, i) => log2.append(body(b * 40 + i))))
      for (const x of await r2.read(1000, 1 << 20)) {
        expect(x.seq).toBeLessThanOrEqual(log2.durableSeq)
        got.push(x.seq)
      }
    }
    while (got.length < 200) {
      await log2.waitForData(got.at(-1) ?? 0)
      got.push(...(await r2.read(1000, 1 << 20)).map((x) => x.seq))
    }
    expect(got).toEqual(Array.from({ length: 200 }, (_, i) => i + 1))
    await r2.close()
    await log2.close()
  })

  it('log tail - a restart starts with an empty tail: old records from disk, new ones from memory, each epoch right', async () => {
    const dir = tempDir()
    const c = countingFs()
    let log = await openLog(dir, { fs: c.fs })
    await Promise.all(Array.from({ length: 300 }, (_, i) => log.append(body(i))))
    const e1 = log.epoch
    await log.close()
    log = await openLog(dir, { fs: c.fs })
    expect(log.memoryTailHeldBytes).toBe(0)
    await Promise.all(Array.from({ length: 300 }, (_, i) => log.append(body(300 + i))))
    c.reset()
    const r = new LogReader(log, 1)
    const first = await drain(r, 100)
    expect(c.bytesRead()).toBeGreaterThan(0)
    expect(first.map((x) => [x.seq, x.epoch])).toEqual(Array.from({ length: 600 }, (_, i) => [i + 1, i < 300 ? e1 : e1 + 1]))
    await r.close()
    await log.close()
  })

  it('log tail - eviction under discard old racing a reader: every record read once or counted once, as without a tail', async () => {
    const run = async (memoryTailBytes: number): Promise<void> => {
      const metrics = createMetrics()
      const log = await openLog(tempDir(), { segmentBytes: 64 * 1024, maxBytes: 256 * 1024, memoryTailBytes }, metrics)
      const r = new LogReader(log, 1)
      const kept: number[] = []
      const n = 20 * 400
      for (let round = 0; round < 20; round++) {
        // The read starts before the appends that evict: both race in one turn of the event loop.
        const reading = r.read(120 + round * 30, 1 << 20)
        const appending = Promise.all(Array.from({ length: 400 }, (_, i) => log.append(body(round * 400 + i))))
        const [recs] = await Promise.all([reading, appending])
        log.noteReadPosition(r.position)
        for (const x of recs) if (x.seq > log.acked) kept.push(x.seq) // as the forwarder does
        log.ack(Math.max(log.acked, (kept.at(-1) ?? 0) - 200))
      }
      for (const x of await drain(r)) if (x.seq > log.acked) kept.push(x.seq)
      await r.close()
      await log.close()
      const drops = metrics.drops.get({ reason: 'discard_old' })
      const keptSet = new Set(kept)
      let inWindow = 0 // evicted while read and unacknowledged: the forwarder counts those
      for (let s = 1; s <= n; s++) if (!keptSet.has(s) && log.evictedUncounted(s)) inWindow++
      expect(drops).toBeGreaterThan(0)
      expect(kept.every((s, i) => i === 0 || s > kept[i - 1]!)).toBe(true) // nothing read twice
      expect(kept.at(-1)).toBe(n)
      expect(kept.length + drops + inWindow).toBe(n)
    }
    await run(0)
    await run(1024 * 1024)
    await run(4 * 1024)
  })

  it('log tail - a reader opened mid-segment scans from a nearby mark, not from the segment start; damage there is still found', async () => {
    const c = countingFs()
    const dir = tempDir()
    const opts: Partial<RingLogOptions> = { fs: c.fs, segmentBytes: 8 * 1024 * 1024, maxBytes: 64 * 1024 * 1024, maxRecordBytes: 64 * 1024, memoryTailBytes: 0, readChunkBytes: 64 * 1024 }
    const log = await openLog(dir, opts)
    for (let b = 0; b < 40; b++) await Promise.all(Array.from({ length: 100 }, (_, i) => log.append(body(b * 100 + i, 1000))))
    const size = log.listSegments()[0]!.size
    expect(size).toBeGreaterThan(3 * 1024 * 1024)
    c.reset()
    const r = new LogReader(log, 3500)
    expect((await r.read(1, 1 << 20)).map((x) => x.seq)).toEqual([3500])
    await r.close()
    expect(c.bytesRead()).toBeLessThan(size / 4)

    // A damaged record after a mark: counted, and exactly the others are read.
    const file = segmentFiles(dir)[0]!
    flipBit(file, frameOffsets(file)[3600 - 1]! + 40)
    const damaged: number[] = []
    const r2 = new LogReader(log, 3550, (n, at) => damaged.push(n, at))
    const seqs = (await drain(r2)).map((x) => x.seq)
    await r2.close()
    expect(damaged).toEqual([1, 3600])
    expect(seqs).toEqual(Array.from({ length: 451 }, (_, i) => 3550 + i).filter((s) => s !== 3600))
    await log.close()

    // After a crash (no seal) recovery scans the segment and leaves marks for the readers after it.
    unseal(file)
    const again = await openLog(dir, opts)
    expect(again.recovery.scannedSegments).toBe(1)
    c.reset()
    const r3 = new LogReader(again, 3500)
    expect((await r3.read(1, 1 << 20)).map((x) => x.seq)).toEqual([3500])
    await r3.close()
    expect(c.bytesRead()).toBeLessThan(size / 4)
    await again.close()
  })

  it('log tail - a damaged record at the mark a scan starts from is skipped by its header, not replaced by a frame in its payload', async () => {
    // Every body carries a valid frame with its own record's seq (a device can send those bytes).
    // A scan that starts at a mark knows the seq before it (anchorSeq): the damaged record's intact
    // header says where it ends, as at a segment's first record, and the frame inside is never
    // looked at. Without that it would be taken as the record.
    const dir = tempDir()
    const log = await openLog(dir, { segmentBytes: 8 * 1024 * 1024, maxBytes: 64 * 1024 * 1024, maxRecordBytes: 64 * 1024, memoryTailBytes: 0 })
    const crafted = (seq: number): Buffer => {
      const b = Buffer.alloc(1000, 'x')
      writeFrame(b, 8, TYPE_DATA, seq, Date.now(), Buffer.from('EVIL'))
      return b
    }
    for (let b = 0; b < 40; b++) await Promise.all(Array.from({ length: 100 }, (_, i) => log.append(crafted(b * 100 + i + 1))))
    const seg = log.segmentFor(3500)!
    const mark = log.startFor(seg, 3500)!
    expect(mark.seq).toBeGreaterThan(seg.baseSeq)
    const file = segmentFiles(dir)[0]!
    expect(frameOffsets(file)[mark.seq - seg.baseSeq]).toBe(mark.offset)
    flipBit(file, mark.offset + 32 + 999) // the body's last byte: the header and the frame inside stay intact
    const damaged: number[] = []
    const r = new LogReader(log, mark.seq, (n, at) => damaged.push(n, at))
    const got = await r.read(3, 1 << 20)
    await r.close()
    expect(damaged).toEqual([1, mark.seq])
    expect(got.map((x) => [x.seq, x.body.length])).toEqual([1, 2, 3].map((k) => [mark.seq + k, 1000]))
    await log.close()
  })

  it('log tail - law: any appends, reads and acks give what a disk-only log gives', async () => {
    type Op = { kind: 'append'; n: number; size: number } | { kind: 'read'; records: number; bytes: number } | { kind: 'ack' } | { kind: 'restart' }
    const op: fc.Arbitrary<Op> = fc.oneof(
      { arbitrary: fc.record({ kind: fc.constant('append' as const), n: fc.integer({ min: 1, max: 300 }), size: fc.integer({ min: 1, max: 3000 }) }), weight: 4 },
      { arbitrary: fc.record({ kind: fc.constant('read' as const), records: fc.integer({ min: 1, max: 500 }), bytes: fc.integer({ min: 1, max: 200_000 }) }), weight: 4 },
      { arbitrary: fc.record({ kind: fc.constant('ack' as const) }), weight: 2 },
      { arbitrary: fc.record({ kind: fc.constant('restart' as const) }), weight: 1 },
    )
    const play = async (ops: readonly Op[], memoryTailBytes: number, fsync: 'always' | 'none', discard: 'old' | 'new'): Promise<unknown[]> => {
      const dir = tempDir()
      const metrics = createMetrics()
      const opts: Partial<RingLogOptions> = { segmentBytes: 64 * 1024, maxBytes: 320 * 1024, memoryTailBytes, fsync, discard }
      let log: RingLog = await openLog(dir, opts, metrics)
      let r = new LogReader(log, log.acked + 1, (n, at) => trace.push(['damaged', n, at]))
      const trace: unknown[] = []
      let k = 0
      for (const o of ops) {
        if (o.kind === 'append') {
          const res = await Promise.allSettled(Array.from({ length: o.n }, (_, i) => log.append(body(k + i, o.size))))
          k += o.n
          trace.push(['appended', res.filter((x) => x.status === 'fulfilled').length])
        } else if (o.kind === 'read') {
          const recs = await r.read(o.records, o.bytes)
          log.noteReadPosition(r.position)
          trace.push(['read', r.position, recs.map((x) => [x.seq, x.ts > 0, x.body.toString('latin1', 0, 20), x.body.length])])
        } else if (o.kind === 'ack') log.ack(r.position - 1)
        else {
          await r.close()
          await log.close()
          log = await openLog(dir, opts, metrics)
          r = new LogReader(log, log.acked + 1, (n, at) => trace.push(['damaged', n, at]))
          trace.push(['restarted', log.acked, log.durableSeq])
        }
      }
      trace.push(['drops', metrics.drops.get({ reason: 'discard_old' }), metrics.drops.get({ reason: 'discard_new' })])
      await r.close()
      await log.close()
      return trace
    }
    await fc.assert(
      fc.asyncProperty(
        fc.array(op, { minLength: 1, maxLength: 25 }),
        fc.constantFrom(2 * 1024, 16 * 1024, 200 * 1024, 4 * 1024 * 1024),
        fc.constantFrom('always' as const, 'none' as const),
        fc.constantFrom('old' as const, 'new' as const),
        async (ops, tail, fsync, discard) => {
          expect(await play(ops, tail, fsync, discard)).toEqual(await play(ops, 0, fsync, discard))
        },
      ),
      { numRuns: 25 },
    )
  }, 120_000)
})
