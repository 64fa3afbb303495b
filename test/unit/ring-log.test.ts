// Ring log: group commit, reading back, restarts, checkpoint, bound, fault injection, and the recovery law.
import fs from 'node:fs'
import path from 'node:path'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { LogFullError, LogIoError } from '../../src/errors.js'
import { LogReader, nodeFs } from '../../src/log/index.js'
import type { LogFs, RingLog } from '../../src/log/index.js'
import { createMetrics } from '../../src/metrics/index.js'
import { segmentFiles, unseal } from '../helpers/damage.js'
import { openLog, tempDir } from '../helpers/log.js'

async function readAll(log: RingLog, from = log.headSeq): Promise<{ seq: number; body: string; epoch: number }[]> {
  const r = new LogReader(log, from)
  const out: { seq: number; body: string; epoch: number }[] = []
  for (;;) {
    const recs = await r.read(1000, 1 << 20)
    if (recs.length === 0) break
    for (const x of recs) out.push({ seq: x.seq, body: x.body.toString(), epoch: x.epoch })
  }
  await r.close()
  return out
}

const body = (i: number): Buffer => Buffer.from(`record-${i}-`.padEnd(50 + (i % 37), 'x'))

describe('ring log', () => {
  it('log - appends resolve in order with consecutive seqs and read back identical', async () => {
    const log = await openLog(tempDir())
    const seqs = await Promise.all(Array.from({ length: 3000 }, (_, i) => log.append(body(i))))
    expect(seqs).toEqual(Array.from({ length: 3000 }, (_, i) => i + 1))
    const recs = await readAll(log)
    expect(recs.map((r) => r.body)).toEqual(Array.from({ length: 3000 }, (_, i) => body(i).toString()))
    expect(log.listSegments().length).toBeGreaterThan(1) // rolled across segments
    await log.close()
  })

  it('log - seqs are never reused across restarts and each start has a new epoch', async () => {
    const dir = tempDir()
    let log = await openLog(dir)
    await Promise.all([1, 2, 3].map((i) => log.append(body(i))))
    const e1 = log.epoch
    await log.close()
    log = await openLog(dir)
    expect(await log.append(body(4))).toBe(4)
    expect(log.epoch).toBe(e1 + 1)
    const recs = await readAll(log)
    expect(recs.map((r) => [r.seq, r.epoch])).toEqual([[1, e1], [2, e1], [3, e1], [4, e1 + 1]])
    await log.close()
  })

  it('log - the ack position survives a restart (checkpoint)', async () => {
    const dir = tempDir()
    let log = await openLog(dir)
    await Promise.all(Array.from({ length: 100 }, (_, i) => log.append(body(i))))
    log.ack(60)
    await log.close()
    log = await openLog(dir)
    expect(log.acked).toBe(60)
    expect((await readAll(log, log.acked + 1)).map((r) => r.seq)[0]).toBe(61)
    await log.close()
  })

  it('log - the reader never returns records beyond the durable seq', async () => {
    let release: (() => void) | undefined
    let hold = false
    const slowFs: LogFs = {
      ...nodeFs,
      fdatasync: async (fd) => {
        if (hold) await new Promise<void>((r) => (release = r))
        return nodeFs.fdatasync(fd)
      },
    }
    const log = await openLog(tempDir(), { fs: slowFs })
    await log.append(body(1))
    hold = true
    const pending = log.append(body(2))
    await new Promise((r) => setTimeout(r, 20))
    expect(log.durableSeq).toBe(1)
    expect((await readAll(log)).map((r) => r.seq)).toEqual([1])
    hold = false
    release?.()
    expect(await pending).toBe(2)
    expect((await readAll(log)).map((r) => r.seq)).toEqual([1, 2])
    await log.close()
  })

  it('log - a failed fdatasync fails the batch and stops the log (no retry: fsyncgate)', async () => {
    let fail = false
    const faulty: LogFs = { ...nodeFs, fdatasync: async (fd) => (fail ? Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' })) : nodeFs.fdatasync(fd)) }
    const log = await openLog(tempDir(), { fs: faulty })
    await log.append(body(1))
    fail = true
    await expect(log.append(body(2))).rejects.toBeInstanceOf(LogIoError)
    fail = false
    await expect(log.append(body(3))).rejects.toBeInstanceOf(LogIoError)
    expect(log.failure).toBeDefined()
    await log.close()
  })

  it('log - ENOSPC on write truncates the partial write, refuses the batch, and the log carries on', async () => {
    let enospc = false
    const faulty: LogFs = {
      ...nodeFs,
      write: async (fd, buf, off, len, pos) => {
        if (enospc) {
          enospc = false
          await nodeFs.write(fd, buf, off, Math.min(len, 10), pos) // a short write lands first
          throw Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' })
        }
        return nodeFs.write(fd, buf, off, len, pos)
      },
    }
    const dir = tempDir()
    const metrics = createMetrics()
    let log = await openLog(dir, { fs: faulty, diskFullRetryMs: 0, discard: 'new' }, metrics)
    await log.append(body(1))
    enospc = true
    await expect(log.append(body(2))).rejects.toBeInstanceOf(LogFullError)
    expect(await log.append(body(3))).toBe(2)
    expect(metrics.drops.get({ reason: 'disk_full' })).toBe(1)
    await log.close()
    log = await openLog(dir)
    expect((await readAll(log)).map((r) => r.body)).toEqual([body(1).toString(), body(3).toString()])
    await log.close()
  })

  it('log - discard old evicts whole segments and counts exactly the unforwarded records', async () => {
    const metrics = createMetrics()
    const log = await openLog(tempDir(), { segmentBytes: 64 * 1024, maxBytes: 256 * 1024 }, metrics)
    const n = 10_000
    await Promise.all(Array.from({ length: n }, (_, i) => log.append(body(i))))
    const recs = await readAll(log)
    const dropped = metrics.drops.get({ reason: 'discard_old' })
    expect(dropped + recs.length).toBe(n)
    expect(recs[0]!.seq).toBe(dropped + 1)
    expect(log.sizeBytes).toBeLessThanOrEqual(256 * 1024)
    await log.close()
  })

  it('log - discard new refuses appends when full and accepts them again once forwarded', async () => {
    const log = await openLog(tempDir(), { segmentBytes: 64 * 1024, maxBytes: 192 * 1024, discard: 'new' })
    const results = await Promise.allSettled(Array.from({ length: 5000 }, (_, i) => log.append(body(i))))
    const ok = results.filter((r) => r.status === 'fulfilled').length
    expect(ok).toBeGreaterThan(0)
    expect(ok).toBeLessThan(5000)
    expect(results.filter((r) => r.status === 'rejected').every((r) => r.reason instanceof LogFullError)).toBe(true)
    log.ack(log.durableSeq)
    expect(await log.append(body(1))).toBe(ok + 1)
    await log.close()
  })

  it('log - law: any truncation of an unsealed tail recovers a prefix of what was written', async () => {
    const src = tempDir()
    const n = 200
    const log = await openLog(src)
    await Promise.all(Array.from({ length: n }, (_, i) => log.append(body(i))))
    await log.close()
    const [file] = segmentFiles(src)
    unseal(file!)
    const full = fs.statSync(file!).size
    await fc.assert(
      fc.asyncProperty(fc.integer({ min: 64, max: full }), fc.option(fc.uint8Array({ minLength: 1, maxLength: 64 })), async (cut, garbage) => {
        const dir = tempDir()
        fs.mkdirSync(path.join(dir, 'segments'))
        const copy = path.join(dir, 'segments', path.basename(file!))
        fs.copyFileSync(file!, copy)
        fs.truncateSync(copy, cut)
        if (garbage) fs.appendFileSync(copy, garbage)
        const l = await openLog(dir)
        const recs = await readAll(l)
        expect(recs.map((r) => r.body)).toEqual(Array.from({ length: recs.length }, (_, i) => body(i).toString()))
        const next = await l.append(Buffer.from('after'))
        expect(next).toBe(recs.length + 1)
        await l.close()
        fs.rmSync(dir, { recursive: true, force: true })
      }),
      { numRuns: 60 },
    )
  })
})

describe('ring log - sync policies and recovery corners', () => {
  it('log - fsync batch: appends resolve after the write; the durable seq follows the interval sync', async () => {
    let syncs = 0
    // Segment syncs only: the checkpoint (with the seq floor) is synced on its own after each interval sync.
    const segmentFds = new Set<number>()
    const counting: LogFs = {
      ...nodeFs,
      open: async (p, flags) => {
        const fd = await nodeFs.open(p, flags)
        if (p.endsWith('.seg')) segmentFds.add(fd)
        return fd
      },
      fdatasync: async (fd) => (segmentFds.has(fd) && syncs++, nodeFs.fdatasync(fd)),
    }
    const log = await openLog(tempDir(), { fsync: 'batch', fsyncIntervalMs: 30, fs: counting })
    await log.append(body(0)) // the first append starts the segment (its header is synced)
    while (log.durableSeq < 1) await new Promise((r) => setTimeout(r, 5))
    const before = syncs
    const seqs = await Promise.all(Array.from({ length: 49 }, (_, i) => log.append(body(i))))
    expect(seqs.at(-1)).toBe(50)
    expect(syncs).toBe(before) // nothing waited for a sync
    expect(log.durableSeq).toBeLessThan(50)
    const until = Date.now() + 2000
    while (log.durableSeq < 50 && Date.now() < until) await new Promise((r) => setTimeout(r, 5))
    expect(log.durableSeq).toBe(50)
    expect(syncs).toBeGreaterThan(before)
    await log.close()
  })

  it('log - fsync none: appends resolve after the write and are readable at once', async () => {
    const log = await openLog(tempDir(), { fsync: 'none' })
    await Promise.all(Array.from({ length: 20 }, (_, i) => log.append(body(i))))
    expect(log.durableSeq).toBe(20)
    expect(await readAll(log)).toHaveLength(20)
    await log.close()
  })

  it('log - a segment with a damaged header is quarantined, the rest is kept, and the log starts', async () => {
    const dir = tempDir()
    let log = await openLog(dir, { segmentBytes: 64 * 1024 })
    await Promise.all(Array.from({ length: 3000 }, (_, i) => log.append(body(i))))
    await log.close()
    const files = segmentFiles(dir)
    expect(files.length).toBeGreaterThan(2)
    const fd = fs.openSync(files[1]!, 'r+')
    fs.writeSync(fd, Buffer.from('XXXX'), 0, 4, 0)
    fs.closeSync(fd)
    log = await openLog(dir, { segmentBytes: 64 * 1024 })
    expect(log.recovery.quarantined).toEqual([path.basename(files[1]!)])
    expect(fs.readdirSync(path.join(dir, 'quarantine'))).toHaveLength(1)
    const damaged: number[] = []
    const r = new LogReader(log, 1, (n) => damaged.push(n))
    let n = 0
    for (let recs = await r.read(1000, 1 << 20); recs.length > 0; recs = await r.read(1000, 1 << 20)) n += recs.length
    await r.close()
    expect(n + damaged.reduce((a, b) => a + b, 0)).toBe(3000)
    expect(await log.append(body(0))).toBe(3001)
    await log.close()
  })

  it('log - a torn checkpoint slot falls back to the other slot; never skips unforwarded data', async () => {
    const dir = tempDir()
    let log = await openLog(dir, { checkpointIntervalMs: 10_000 })
    await Promise.all(Array.from({ length: 10 }, (_, i) => log.append(body(i))))
    log.ack(4)
    await log.close() // writes the checkpoint with acked 4 (newest slot)
    const cp = path.join(dir, 'checkpoint')
    const buf = fs.readFileSync(cp)
    // Find the newest slot by generation and tear it.
    const gen = (at: number): bigint => buf.readBigUInt64LE(at + 8)
    const newest = gen(0) > gen(4096) ? 0 : 4096
    buf.fill(0, newest + 16, newest + 40)
    fs.writeFileSync(cp, buf)
    log = await openLog(dir)
    expect(log.acked).toBeLessThanOrEqual(4) // the older slot: resend a little more, skip nothing
    expect((await readAll(log, log.acked + 1))[0]!.seq).toBe(log.acked + 1)
    await log.close()
  })

  it('log - a checkpoint ahead of the data is clamped to the last record', async () => {
    const dir = tempDir()
    let log = await openLog(dir)
    await Promise.all(Array.from({ length: 10 }, (_, i) => log.append(body(i))))
    log.ack(10)
    await log.close()
    // Lose the data but keep the checkpoint (e.g. a disk that lied about a flush).
    for (const f of segmentFiles(dir)) fs.rmSync(f)
    log = await openLog(dir)
    expect(log.acked).toBe(10)
    expect(await log.append(body(0))).toBe(11) // seqs are not reused
    await log.close()
  })
})

describe('ring log - restarts and limits (review findings)', () => {
  it('log - idle runs leave no empty segment: repeated idle restarts work', async () => {
    const dir = tempDir()
    for (let i = 0; i < 3; i++) await (await openLog(dir)).close()
    const log = await openLog(dir)
    expect(await log.append(body(1))).toBe(1)
    await log.close()
    expect(segmentFiles(dir)).toHaveLength(1)
  })

  it('log - records lost from the tail (power loss under fsync none) are counted and their seqs never reused', async () => {
    const dir = tempDir()
    let log = await openLog(dir, { fsync: 'none' })
    await Promise.all(Array.from({ length: 30 }, (_, i) => log.append(body(i))))
    log.ack(20)
    await log.close()
    // The disk kept only 25 records (and no seal) but the checkpoint says 30 were written.
    const [file] = segmentFiles(dir)
    unseal(file!)
    const { frameOffsets } = await import('../helpers/damage.js')
    fs.truncateSync(file!, frameOffsets(file!)[25])
    const metrics = createMetrics()
    log = await openLog(dir, {}, metrics)
    expect(metrics.drops.get({ reason: 'power_loss' })).toBe(5) // counted at start, with the range logged
    expect(await log.append(body(99))).toBe(31)
    const lost: number[] = []
    const r = new LogReader(log, log.acked + 1, (n) => lost.push(n))
    const seqs: number[] = []
    for (let recs = await r.read(100, 1 << 20); recs.length > 0; recs = await r.read(100, 1 << 20)) seqs.push(...recs.map((x) => x.seq))
    await r.close()
    expect(seqs).toEqual([21, 22, 23, 24, 25, 31])
    expect(lost).toEqual([]) // not counted a second time as damage
    await log.close()
    // A later start neither counts them again nor reuses their seqs.
    const again = createMetrics()
    log = await openLog(dir, {}, again)
    expect(again.drops.get({ reason: 'power_loss' })).toBe(0)
    expect(await log.append(body(100))).toBe(32)
    await log.close()
  })

  it('log - lowering maxRecordBytes later does not make stored records look damaged', async () => {
    const dir = tempDir()
    let log = await openLog(dir, { maxRecordBytes: 8192 })
    await Promise.all([1, 2, 3].map(() => log.append(Buffer.alloc(3000, 1))))
    await log.close()
    unseal(segmentFiles(dir)[0]!) // as after a crash: the segment is scanned
    log = await openLog(dir, { maxRecordBytes: 2048 })
    expect(log.recovery.truncatedBytes).toBe(0)
    expect((await readAll(log)).map((r) => r.seq)).toEqual([1, 2, 3])
    await log.close()
  })

  it('log - ENOSPC while starting a new segment refuses the batch and is not fatal', async () => {
    let full = false
    const faulty: LogFs = {
      ...nodeFs,
      write: async (fd, buf, off, len, pos) => {
        if (full && pos === 0) throw Object.assign(new Error('ENOSPC'), { code: 'ENOSPC' }) // a segment header
        return nodeFs.write(fd, buf, off, len, pos)
      },
    }
    const dir = tempDir()
    const log = await openLog(dir, { fs: faulty, segmentBytes: 64 * 1024, diskFullRetryMs: 0 })
    await Promise.all(Array.from({ length: 200 }, (_, i) => log.append(body(i)))) // most of one segment
    full = true
    const results = await Promise.allSettled(Array.from({ length: 1000 }, (_, i) => log.append(body(i))))
    expect(results.some((r) => r.status === 'rejected' && r.reason instanceof LogFullError)).toBe(true)
    expect(log.failure).toBeUndefined()
    full = false
    const seq = await log.append(body(1))
    expect(seq).toBeGreaterThan(200)
    const files = fs.readdirSync(path.join(dir, 'segments'))
    expect(files.every((f) => fs.statSync(path.join(dir, 'segments', f)).size >= 64)).toBe(true)
    await log.close()
  })
})

describe('ring log - full at restart', () => {
  it('log - restarting a full log without traffic evicts nothing', async () => {
    const dir = tempDir()
    let log = await openLog(dir, { segmentBytes: 64 * 1024, maxBytes: 256 * 1024 })
    await Promise.all(Array.from({ length: 10_000 }, (_, i) => log.append(body(i))))
    const head = log.headSeq
    await log.close()
    const metrics = createMetrics()
    log = await openLog(dir, { segmentBytes: 64 * 1024, maxBytes: 256 * 1024 }, metrics)
    expect(log.headSeq).toBe(head)
    expect(metrics.drops.get({ reason: 'discard_old' })).toBe(0)
    await log.close()
  })
})

describe('ring log - reader errors', () => {
  it('reader - an I/O error in the middle of a read loses nothing: the next read starts where the failed one did', async () => {
    let failReads = 0
    const faulty: LogFs = {
      ...nodeFs,
      read: async (fd, buf, off, len, pos) => {
        if (failReads > 0 && --failReads === 0) throw Object.assign(new Error('EIO'), { code: 'EIO' })
        return nodeFs.read(fd, buf, off, len, pos)
      },
    }
    // No memory tail: the records must come from disk for the read to fail.
    const log = await openLog(tempDir(), { fs: faulty, segmentBytes: 64 * 1024, readChunkBytes: 4096, memoryTailBytes: 0 })
    await Promise.all(Array.from({ length: 2000 }, (_, i) => log.append(body(i))))
    const r = new LogReader(log, 1)
    const first = await r.read(100, 1 << 20)
    expect(first.map((x) => x.seq)).toEqual(Array.from({ length: 100 }, (_, i) => i + 1))
    failReads = 3 // fails on a later chunk read inside the next call
    await expect(r.read(1500, 1 << 20)).rejects.toThrow('EIO')
    const seqs: number[] = []
    for (let recs = await r.read(1000, 1 << 20); recs.length > 0; recs = await r.read(1000, 1 << 20)) seqs.push(...recs.map((x) => x.seq))
    expect(seqs).toEqual(Array.from({ length: 1900 }, (_, i) => i + 101))
    await r.close()
    await log.close()
  })
})
