// Disk full is a state, not an error: ENOSPC injected at every write site of the log through its fs seam.
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { LogFullError, LogIoError } from '../../src/errors.js'
import { Checkpoint } from '../../src/log/checkpoint.js'
import { DIR_RESERVE_BYTES } from '../../src/log/format.js'
import { DeadLetters } from '../../src/forward/dead-letter.js'
import { LogReader, nodeFs, readCheckpointState } from '../../src/log/index.js'
import type { LogFs, RingLog } from '../../src/log/index.js'
import { createLogger } from '../../src/logger.js'
import { createMetrics } from '../../src/metrics/index.js'
import { openLog, tempDir } from '../helpers/log.js'

const body = (i: number): Buffer => Buffer.from(`record-${i}-`.padEnd(200, 'x'))
const enospc = (): Error => Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })

/** A file system whose writes fail with ENOSPC while `full()` says so (optionally only some writes). */
function fullableFs(full: (fd: number, position: number, length: number) => boolean): LogFs {
  return {
    ...nodeFs,
    write: async (fd, buf, off, len, pos) => {
      if (full(fd, pos, len)) {
        // A short write lands first, as on a real file system that runs out mid-write.
        if (len > 16) await nodeFs.write(fd, buf, off, 8, pos)
        throw enospc()
      }
      return nodeFs.write(fd, buf, off, len, pos)
    },
  }
}

/** A file system whose writes fail with ENOSPC when `full(path, position)` says so (it knows each fd's path). */
function pathAwareFs(full: (path: string | undefined, position: number) => boolean): LogFs {
  const paths = new Map<number, string>()
  return {
    ...nodeFs,
    open: async (p, flags) => {
      const fd = await nodeFs.open(p, flags)
      paths.set(fd, p)
      return fd
    },
    write: async (fd, buf, off, len, pos) => {
      if (full(paths.get(fd), pos)) throw enospc()
      return nodeFs.write(fd, buf, off, len, pos)
    },
  }
}

async function readSeqs(log: RingLog, from = log.acked + 1): Promise<number[]> {
  const r = new LogReader(log, from)
  const out: number[] = []
  for (let recs = await r.read(1000, 1 << 20); recs.length > 0; recs = await r.read(1000, 1 << 20)) out.push(...recs.map((x) => x.seq))
  await r.close()
  return out
}

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 5))
  }
}

describe('disk full - ring log', () => {
  it('disk full - ENOSPC on a record write refuses appends for the retry period, then resumes by itself', async () => {
    let full = false
    const writes = { tried: 0 }
    const metrics = createMetrics()
    const log = await openLog(tempDir(), { fs: fullableFs(() => (writes.tried++, full)), diskFullRetryMs: 300, discard: 'new' }, metrics)
    expect(await log.append(body(1))).toBe(1)
    full = true
    await expect(log.append(body(2))).rejects.toMatchObject({ code: 'FERRY_ERR_LOG_FULL', diskFull: true })
    expect(log.diskFullForMs).toBeGreaterThan(0)
    // While full, appends are refused at once, without touching the disk.
    const before = writes.tried
    const refused = await Promise.allSettled(Array.from({ length: 20 }, (_, i) => log.append(body(10 + i))))
    expect(refused.every((r) => r.status === 'rejected' && r.reason instanceof LogFullError)).toBe(true)
    expect(writes.tried).toBe(before)
    expect(metrics.drops.get({ reason: 'disk_full' })).toBe(21)
    expect(metrics.drops.get({ reason: 'discard_new' })).toBe(0)
    full = false // someone else freed space
    await new Promise((r) => setTimeout(r, 320))
    expect(await log.append(body(3))).toBe(2)
    expect(log.diskFullForMs).toBe(0)
    expect(log.failure).toBeUndefined()
    expect(await readSeqs(log, 1)).toEqual([1, 2])
    await log.close()
  })

  it('disk full - a segment freed by the drain ends the wait at once', async () => {
    let full = false
    const metrics = createMetrics()
    const log = await openLog(tempDir(), { fs: fullableFs(() => full), segmentBytes: 64 * 1024, diskFullRetryMs: 60_000, discard: 'new' }, metrics)
    await Promise.all(Array.from({ length: 600 }, (_, i) => log.append(body(i)))) // two sealed segments and an active one
    expect(log.listSegments().length).toBeGreaterThanOrEqual(3)
    full = true
    await expect(log.append(body(1000))).rejects.toBeInstanceOf(LogFullError)
    expect(log.diskFullForMs).toBeGreaterThan(0)
    // The disk really has room once the forwarded segment is gone (simulated: the first unlink frees it).
    const first = log.listSegments()[0]!
    log.ack(first.lastSeq)
    full = false
    await until(() => !fs.existsSync(first.path))
    // Well before the 60 s retry period, appends are tried again (the deletion's callback may
    // still be on its way when the file is already gone: allow a few turns).
    let seq = 0
    const t0 = Date.now()
    while (seq === 0 && Date.now() - t0 < 2000) seq = await log.append(body(1001)).catch(async () => (await new Promise((r) => setTimeout(r, 5)), 0))
    expect(seq).toBe(601)
    await log.close()
  })

  it('disk full - a write that hits ENOSPC first deletes forwarded segments and succeeds without refusing anything', async () => {
    let failNext = false
    const metrics = createMetrics()
    const log = await openLog(
      tempDir(),
      {
        fs: fullableFs(() => {
          const f = failNext
          failNext = false
          return f
        }),
        segmentBytes: 64 * 1024,
      },
      metrics,
    )
    await Promise.all(Array.from({ length: 600 }, (_, i) => log.append(body(i))))
    const segs = log.listSegments()
    log.ack(segs[1]!.lastSeq)
    failNext = true
    expect(await log.append(body(700))).toBe(601)
    expect(metrics.drops.get({ reason: 'disk_full' })).toBe(0)
    expect(fs.existsSync(segs[0]!.path)).toBe(false)
    expect(fs.existsSync(segs[1]!.path)).toBe(false)
    await log.close()
  })

  it('disk full - ENOSPC while sealing or starting a segment is not fatal, and the log rolls once space returns', async () => {
    for (const site of ['seal', 'header'] as const) {
      let full = false
      const dir = tempDir()
      const metrics = createMetrics()
      const fsys = fullableFs((_fd, pos, len) => full && (site === 'header' ? pos === 0 : len === 64 && pos > 0))
      const log = await openLog(dir, { fs: fsys, segmentBytes: 64 * 1024, diskFullRetryMs: 0, discard: 'new' }, metrics)
      let n = 0
      while (log.listSegments().length < 2) await log.append(body(n++)) // one segment sealed: the next roll is near
      full = true
      for (let i = 0; i < 400 && metrics.drops.get({ reason: 'disk_full' }) === 0; i++) await log.append(body(n++)).catch(() => {})
      expect(metrics.drops.get({ reason: 'disk_full' }), site).toBeGreaterThan(0)
      expect(log.failure, site).toBeUndefined()
      full = false
      const seq = await log.append(body(n++))
      expect(seq, site).toBe(n - metrics.drops.get({ reason: 'disk_full' })) // refused appends took no seq
      await log.close()
      // Every file left behind is a valid segment: reopen and read everything back.
      const again = await openLog(dir)
      expect((await readSeqs(again, 1)).at(-1), site).toBe(seq)
      await again.close()
    }
  })

  it('disk full - under discard old, ENOSPC evicts the oldest segment and counts exactly the records not yet read', async () => {
    let full = false
    const metrics = createMetrics()
    const segmentBytes = 64 * 1024
    // Writes fail while more than 3 segment files exist: a disk that holds three segments.
    const dir = tempDir()
    const segDir = path.join(dir, 'segments')
    const fsys = fullableFs(() => full && fs.readdirSync(segDir).length >= 3)
    const log = await openLog(dir, { fs: fsys, segmentBytes, maxBytes: 64 * segmentBytes, discard: 'old' }, metrics)
    await Promise.all(Array.from({ length: 600 }, (_, i) => log.append(body(i))))
    expect(log.listSegments().length).toBe(3)
    const oldest = log.listSegments()[0]!
    log.noteReadPosition(101) // the forwarder holds seqs 1..100 in its window
    full = true
    let n = 600
    while (log.listSegments()[0]!.baseSeq === oldest.baseSeq) await log.append(body(n++))
    expect(metrics.drops.get({ reason: 'discard_old' })).toBe(oldest.lastSeq - 100)
    expect(metrics.drops.get({ reason: 'disk_full' })).toBe(0)
    expect(log.acked).toBe(oldest.lastSeq)
    await log.close()
  })

  it('disk full - a failed checkpoint write is not fatal and forwarded segments are deleted anyway', async () => {
    let checkpointFull = false
    const dir = tempDir()
    const cpPath = path.join(dir, 'checkpoint')
    const fsys = pathAwareFs((p) => checkpointFull && p === cpPath)
    const segmentBytes = 64 * 1024
    const log = await openLog(dir, { fs: fsys, segmentBytes, maxBytes: 4 * segmentBytes, discard: 'new', checkpointIntervalMs: 10 }, createMetrics())
    checkpointFull = true
    let n = 0
    // Forward as we go: the bound needs forwarded segments deleted, and no checkpoint can be written.
    for (; n < 3000; n++) log.ack(await log.append(body(n)))
    expect(log.failure).toBeUndefined()
    expect(log.listSegments().length).toBeLessThanOrEqual(4)
    expect(log.headSeq).toBeGreaterThan(1000)
    checkpointFull = false
    await log.close()
    // Recovery copes with an ack position older than the oldest segment.
    const again = await openLog(dir)
    expect(again.acked).toBe(n)
    expect(await again.append(body(0))).toBe(n + 1)
    await again.close()
  })

  it('disk full - the checkpoint file is fully allocated at creation, and an older half-allocated one is completed', async () => {
    const dir = tempDir()
    const log = await openLog(dir)
    await log.append(body(1))
    log.ack(1)
    await log.close()
    const cp = path.join(dir, 'checkpoint')
    expect(fs.statSync(cp).size).toBe(8192)
    expect(fs.statSync(cp).blocks * 512).toBeGreaterThanOrEqual(8192)
    // An older version left 4 KiB (a hole where the second slot goes): completed at open, state kept.
    fs.truncateSync(cp, 4096)
    const { checkpoint, state } = await Checkpoint.open(nodeFs, cp)
    await checkpoint.close()
    expect(fs.statSync(cp).size).toBe(8192)
    expect(state).toBeDefined()
    // Or 8 KiB with a hole in the first slot (its first write went to the second): the size says
    // nothing, reading the hole gives zeros. Filled at open all the same.
    const slot1 = fs.readFileSync(cp).subarray(4096, 8192)
    const holey = path.join(dir, 'holey')
    const fd = fs.openSync(holey, 'w')
    fs.writeSync(fd, slot1, 0, 4096, 4096)
    fs.closeSync(fd)
    if (fs.statSync(holey).blocks * 512 < 8192) {
      const again = await Checkpoint.open(nodeFs, holey)
      await again.checkpoint.close()
      expect(fs.statSync(holey).blocks * 512).toBeGreaterThanOrEqual(8192)
    }
    const again = await openLog(dir)
    expect(again.acked).toBe(1)
    await again.close()
  })

  it('disk full - a failed fdatasync (EIO) stops the log and names what failed', async () => {
    let eio = false
    const fsys: LogFs = {
      ...nodeFs,
      fdatasync: async (fd) => {
        if (eio) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })
        return nodeFs.fdatasync(fd)
      },
    }
    const log = await openLog(tempDir(), { fs: fsys })
    await log.append(body(1))
    eio = true
    await expect(log.append(body(2))).rejects.toBeInstanceOf(LogIoError)
    expect(log.failure?.message).toMatch(/^fdatasync of 0+1\.seg failed: EIO$/)
    await expect(log.append(body(3))).rejects.toBeInstanceOf(LogIoError)
    await log.close()
  })

  it('disk full - a dead letter that hits ENOSPC leaves no partial line and is written once space returns', async () => {
    let full = false
    let syncs = 0
    const fsys: LogFs = { ...fullableFs(() => full), fdatasync: async (fd) => (syncs++, nodeFs.fdatasync(fd)) }
    const dir = tempDir()
    const dl = new DeadLetters(dir, fsys)
    const d = (seq: number): { seq: number; epoch: number; ts: number; body: Buffer; reason: string } => ({ seq, epoch: 1, ts: 0, body: body(seq), reason: 'too large' })
    await dl.write(d(1))
    full = true
    await expect(dl.write(d(2))).rejects.toMatchObject({ code: 'ENOSPC' })
    full = false
    // Written off the event loop; those that arrive together share one write and one fdatasync.
    const before = syncs
    await Promise.all([dl.write(d(3)), dl.write(d(4)), dl.write(d(5))])
    expect(syncs - before).toBeLessThanOrEqual(2)
    dl.close()
    const lines = fs.readFileSync(dl.path, 'utf8').trim().split('\n').map((l) => (JSON.parse(l) as { seq: number }).seq)
    expect(lines).toEqual([1, 3, 4, 5])
  })

  it('disk full - an error while deleting segments to make room stops the log (named), never leaves an append hanging', async () => {
    let full = false
    const fsys: LogFs = {
      ...fullableFs(() => full),
      fsyncDir: async (d) => {
        if (full) throw Object.assign(new Error('EIO: i/o error, fsync'), { code: 'EIO' })
        return nodeFs.fsyncDir(d)
      },
    }
    const log = await openLog(tempDir(), { fs: fsys, segmentBytes: 64 * 1024 })
    await Promise.all(Array.from({ length: 600 }, (_, i) => log.append(body(i))))
    log.ack(log.listSegments()[0]!.lastSeq)
    full = true
    await expect(log.append(body(1000))).rejects.toBeInstanceOf(LogIoError)
    expect(log.failure?.message).toMatch(/deleting segments to make room on a full disk failed: EIO/)
    await log.close()
  })

  it('disk full - the last segment on disk is kept (or the floor checkpointed first), so a crash never reuses seqs', async () => {
    let full = false
    let checkpointFull = false
    const dir = tempDir()
    const cpPath = path.join(dir, 'checkpoint')
    const fsys = pathAwareFs((p, pos) => (full && pos === 0 && p?.endsWith('.seg') === true) || (checkpointFull && p === cpPath))
    const log = await openLog(dir, { fs: fsys, segmentBytes: 64 * 1024, diskFullRetryMs: 0, discard: 'new', checkpointIntervalMs: 60_000 })
    let n = 0
    while (log.listSegments().length < 2) await log.append(body(n++))
    // The next roll seals the active segment, then cannot start a new one; every checkpoint fails.
    full = true
    checkpointFull = true
    while (log.listSegments().every((s) => !s.sealed || log.listSegments().length > 1)) {
      const before = log.listSegments().length
      await log.append(body(n++)).catch(() => {})
      if (log.listSegments().length === before && log.listSegments().at(-1)!.sealed) break
    }
    const last = log.listSegments().at(-1)!.lastSeq
    log.ack(last) // all forwarded: the drain would like to free everything
    await new Promise((r) => setTimeout(r, 50))
    await log.append(body(n++)).catch(() => {})
    expect(log.listSegments().length).toBeGreaterThanOrEqual(1) // no checkpoint possible: the last one stays
    // A crash now (no close): the next start must not give out seqs again.
    const again = await openLog(dir)
    expect(await again.append(body(0))).toBe(last + 1)
    await again.close()
  })

  it('disk full - a seal that fails at close leaves no clean checkpoint, so the next start scans the last segment', async () => {
    let failSeal = false
    const fsys: LogFs = { ...fullableFs((_fd, pos, len) => failSeal && len === 64 && pos > 0) }
    const dir = tempDir()
    const log = await openLog(dir, { fs: fsys })
    await Promise.all(Array.from({ length: 20 }, (_, i) => log.append(body(i))))
    failSeal = true
    await log.close()
    // Not "clean": a clean checkpoint would let the next start trust whatever the segment ends with
    // (a device's payload can end with bytes that look like a seal).
    expect(readCheckpointState(path.join(dir, 'checkpoint'))?.clean).toBe(false)
    const again = await openLog(dir)
    expect(again.recovery.scannedSegments).toBe(1)
    expect(await again.append(body(0))).toBe(21)
    await again.close()
  })

  it('disk full - under fsync batch, a segment sealed by a roll that could not start the next one is readable to its end', async () => {
    let full = false
    const dir = tempDir()
    const fsys = fullableFs((_fd, pos) => full && pos === 0)
    const log = await openLog(dir, { fs: fsys, fsync: 'batch', fsyncIntervalMs: 60_000, segmentBytes: 64 * 1024, diskFullRetryMs: 60_000 })
    let n = 0
    await log.append(body(n++))
    // Fill the segment (no interval sync will come), then the roll seals it and fails to start the next.
    full = true
    while (log.diskFullForMs === 0) await log.append(body(n++)).catch(() => {})
    const sealedSeg = log.listSegments().at(-1)!
    expect(sealedSeg.sealed).toBe(true)
    expect(log.durableSeq).toBe(sealedSeg.lastSeq)
    await log.close()
  })

  it('disk full - no file descriptors (EMFILE) for a new segment refuses appends as no_descriptors, evicts nothing, and resumes', async () => {
    let exhausted = false
    const dir = tempDir()
    const metrics = createMetrics()
    const emfile = (): Error => Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' })
    const fsys: LogFs = {
      ...nodeFs,
      open: async (p, flags) => {
        if (exhausted) throw emfile()
        return nodeFs.open(p, flags)
      },
      fsyncDir: async (d) => {
        if (exhausted) throw emfile()
        return nodeFs.fsyncDir(d)
      },
    }
    // discard "old": were EMFILE taken for a full disk, the oldest (unforwarded) segment would be evicted.
    const log = await openLog(dir, { fs: fsys, diskFullRetryMs: 0, discard: 'old' }, metrics)
    let n = 0
    while (log.listSegments().length < 2) await log.append(body(n++))
    const segmentsBefore = log.listSegments().length
    exhausted = true
    let refused: unknown
    for (let i = 0; i < 400 && metrics.drops.get({ reason: 'no_descriptors' }) === 0; i++) await log.append(body(n++)).catch((err: unknown) => (refused = err))
    expect(metrics.drops.get({ reason: 'no_descriptors' })).toBeGreaterThan(0)
    expect(refused).toBeInstanceOf(LogFullError)
    expect(String((refused as Error).message)).toContain('no file descriptors')
    expect(metrics.drops.get({ reason: 'disk_full' })).toBe(0)
    expect(metrics.drops.get({ reason: 'discard_old' })).toBe(0)
    expect(log.failure).toBeUndefined()
    expect(log.listSegments().length).toBeGreaterThanOrEqual(segmentsBefore)
    exhausted = false
    const seq = await log.append(body(n++))
    expect(seq).toBe(n - metrics.drops.get({ reason: 'no_descriptors' }))
    expect(await log.append(body(n++))).toBe(seq + 1)
    await log.close()
    const again = await openLog(dir)
    expect((await readSeqs(again, 1)).at(-1)).toBe(seq + 1)
    await again.close()
  })

  it('disk full - no descriptor to sync the directory after deleting a forwarded segment: owed to the next segment start, not fatal', async () => {
    let failNextDirSync = false
    let dirSyncFailures = 0
    const lines: string[] = []
    const fsys: LogFs = {
      ...nodeFs,
      fsyncDir: async (d) => {
        if (failNextDirSync) {
          failNextDirSync = false
          dirSyncFailures++
          throw Object.assign(new Error('EMFILE: too many open files'), { code: 'EMFILE' })
        }
        return nodeFs.fsyncDir(d)
      },
    }
    const logger = createLogger({ level: 'warn', format: 'json', write: (l) => lines.push(l) })
    const dir = tempDir()
    // Four segments fit (and the data directory's reserve): from then on every roll deletes the oldest (forwarded) one first.
    const log = await openLog(dir, { fs: fsys, logger, maxBytes: 256 * 1024 + DIR_RESERVE_BYTES, discard: 'new' })
    let n = 0
    const appendAcked = async (): Promise<void> => log.ack(await log.append(body(n++)))
    while (log.listSegments().length < 4) await appendAcked()
    const before = log.listSegments()[0]!.baseSeq
    failNextDirSync = true
    while (log.listSegments()[0]!.baseSeq === before) await appendAcked()
    expect(dirSyncFailures).toBe(1)
    expect(log.failure).toBeUndefined()
    expect(lines.some((l) => l.includes('the next segment start syncs it'))).toBe(true)
    for (let i = 0; i < 1000; i++) await appendAcked() // more rolls and deletions
    expect(log.failure).toBeUndefined()
    await log.close()
    const again = await openLog(dir)
    expect((await readSeqs(again, 1)).at(-1)).toBe(n)
    await again.close()
  })
})
