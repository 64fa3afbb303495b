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
    let log = await openLog(dir, { fs: faulty }, metrics)
    await log.append(body(1))
    enospc = true
    await expect(log.append(body(2))).rejects.toBeInstanceOf(LogFullError)
    expect(await log.append(body(3))).toBe(2)
    expect(metrics.drops.get({ reason: 'discard_new' })).toBe(1)
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
    expect(results.filter((r) => r.status === 'rejected').every((r) => (r as PromiseRejectedResult).reason instanceof LogFullError)).toBe(true)
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
