// Log group: one bound over several class logs, the least important class evicted first, restarts.
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { LogFullError } from '../../src/errors.js'
import { DIR_RESERVE_BYTES, SEAL_FRAME_BYTES, SEGMENT_HEADER_BYTES } from '../../src/log/format.js'
import { LogGroup, LogReader, nodeFs } from '../../src/log/index.js'
import type { LogDropReason, LogFs, LogGroupOptions, LogMetrics, RingLog } from '../../src/log/index.js'
import { silentLogger } from '../../src/logger.js'
import { openLog, tempDir } from '../helpers/log.js'

const SEG = 64 * 1024
const CLASSES = ['high', 'normal', 'low'] as const
const body = (cls: string, i: number): Buffer => Buffer.from(`${cls}-${i}-`.padEnd(1000, 'x'))

/** Drops counted per member and reason; `onDrop` runs synchronously at each count (to check the order rule). */
class Counts {
  readonly drops = new Map<string, number>()
  onDrop: (member: string, reason: LogDropReason) => void = () => {}
  metricsFor = (name: string): LogMetrics => ({
    logAppended: { inc: () => {} },
    logAppendedBytes: { inc: () => {} },
    logFsyncLatency: { observe: () => {} },
    drops: {
      inc: (n, { reason }) => {
        this.onDrop(name, reason)
        this.drops.set(`${name}:${reason}`, (this.drops.get(`${name}:${reason}`) ?? 0) + n)
      },
    },
  })
  get(name: string, reason: LogDropReason): number {
    return this.drops.get(`${name}:${reason}`) ?? 0
  }
}

function groupOptions(dir: string, counts: Counts, over: Partial<LogGroupOptions> = {}): LogGroupOptions {
  return {
    members: CLASSES.map((name) => ({ name, dir: name === 'normal' ? dir : path.join(dir, name) })),
    segmentBytes: SEG,
    maxBytes: 8 * SEG + 3 * DIR_RESERVE_BYTES,
    discard: 'old',
    fsync: 'always',
    fsyncIntervalMs: 20,
    maxRecordBytes: 8 * 1024,
    checkpointIntervalMs: 50,
    metricsFor: counts.metricsFor,
    loggerFor: () => silentLogger,
    ...over,
  }
}

/** Bytes of every segment file under `dir` (all members' segments directories). */
function segmentBytesOnDisk(dir: string): number {
  let n = 0
  for (const sub of ['', 'high', 'low']) {
    const d = path.join(dir, sub, 'segments')
    if (!fs.existsSync(d)) continue
    for (const f of fs.readdirSync(d)) n += fs.statSync(path.join(d, f)).size
  }
  return n
}

async function readSeqs(log: RingLog, from = log.acked + 1): Promise<number[]> {
  const r = new LogReader(log, from)
  const out: number[] = []
  for (let recs = await r.read(1000, 1 << 22); recs.length > 0; recs = await r.read(1000, 1 << 22)) out.push(...recs.map((x) => x.seq))
  await r.close()
  return out
}

/** Fails the test (at the end) if a member lost a record while a less important one had unacknowledged records on disk. */
function checkOrder(counts: Counts, group: () => LogGroup | undefined): string[] {
  const violations: string[] = []
  counts.onDrop = (name, reason) => {
    const g = group()
    // Only evictions follow the class order; expiry reclaims whatever expired, in any class.
    if (!g || reason !== 'discard_old') return
    const rank = CLASSES.indexOf(name as (typeof CLASSES)[number])
    for (const less of CLASSES.slice(rank + 1)) if (g.get(less).hasUnackedOnDisk()) violations.push(`${name} lost records while ${less} had some on disk`)
  }
  return violations
}

describe('log group', () => {
  it('log group - one member is exactly its RingLog: same files, same bound, same evictions', async () => {
    const a = tempDir()
    const b = tempDir()
    const ca = new Counts()
    const cb = new Counts()
    const group = await LogGroup.open({ ...groupOptions(a, ca, { maxBytes: 4 * SEG + DIR_RESERVE_BYTES }), members: [{ name: 'normal', dir: a }] })
    const single = await openLog(b, { segmentBytes: SEG, maxBytes: 4 * SEG + DIR_RESERVE_BYTES, metrics: cb.metricsFor('normal') })
    const g = group.get('normal')
    for (let i = 0; i < 600; i++) await Promise.all([g.append(body('n', i)), single.append(body('n', i))])
    expect(g.listSegments().map((s) => [s.baseSeq, s.lastSeq, s.size])).toEqual(single.listSegments().map((s) => [s.baseSeq, s.lastSeq, s.size]))
    expect(ca.get('normal', 'discard_old')).toBe(cb.get('normal', 'discard_old'))
    expect(ca.get('normal', 'discard_old')).toBeGreaterThan(0)
    expect(fs.readdirSync(a).sort()).toEqual(fs.readdirSync(b).sort())
    await group.close()
    await single.close()
  })

  it('log group - under discard old the least important class loses data first; a class is never evicted while a less important one has records on disk', async () => {
    const dir = tempDir()
    const counts = new Counts()
    let group: LogGroup | undefined
    const violations = checkOrder(counts, () => group)
    const opts = groupOptions(dir, counts)
    const g = await LogGroup.open(opts)
    group = g
    const bound = opts.maxBytes - 3 * DIR_RESERVE_BYTES
    const appended = { high: 0, normal: 0, low: 0 }
    const add = async (cls: (typeof CLASSES)[number], n: number): Promise<void> => {
      for (let i = 0; i < n; i++) {
        await g.get(cls).append(body(cls, appended[cls]++))
        expect(segmentBytesOnDisk(dir)).toBeLessThanOrEqual(bound)
      }
    }
    // Low fills the whole bound: it evicts its own oldest (nothing else has records).
    await add('low', 700)
    expect(counts.get('low', 'discard_old')).toBeGreaterThan(0)
    const lowLostBefore = counts.get('low', 'discard_old')
    // Normal and high take their room from low only.
    await add('normal', 150)
    await add('high', 100)
    expect(counts.get('low', 'discard_old')).toBeGreaterThan(lowLostBefore)
    expect(counts.get('normal', 'discard_old')).toBe(0)
    expect(counts.get('high', 'discard_old')).toBe(0)
    // High keeps coming: low is emptied, then normal, then high evicts its own oldest.
    await add('high', 700)
    expect(group.get('low').hasUnackedOnDisk()).toBe(false)
    expect(group.get('normal').hasUnackedOnDisk()).toBe(false)
    expect(counts.get('high', 'discard_old')).toBeGreaterThan(0)
    // Counts are exact: what was appended is either still readable or counted as dropped, per class.
    for (const cls of CLASSES) {
      const readable = (await readSeqs(group.get(cls))).length
      expect(readable + counts.get(cls, 'discard_old')).toBe(appended[cls])
    }
    expect(violations).toEqual([])
    await group.close()
  })

  it('log group - under discard old an append never evicts a more important class: refused as discard new instead', async () => {
    const dir = tempDir()
    const counts = new Counts()
    const g = await LogGroup.open(groupOptions(dir, counts))
    const bound = 8 * SEG
    // High fills the whole bound (it evicts its own oldest once full): only high has records.
    for (let i = 0; i < 700; i++) await g.get('high').append(body('high', i))
    // ... to the last few bytes (smaller records), so a new segment of another class does not fit either.
    const free = (): number => 8 * SEG + 3 * DIR_RESERVE_BYTES - CLASSES.reduce((a, c) => a + g.get(c).boundUsageBytes(), 0) - 3 * DIR_RESERVE_BYTES
    for (let k = 0; k < 5000 && free() >= 200; k++) await g.get('high').append(Buffer.alloc(Math.max(8, Math.min(1000, free() - 200)), 'h'))
    expect(free()).toBeLessThan(200)
    const highLost = counts.get('high', 'discard_old')
    expect(highLost).toBeGreaterThan(0)
    const highReadable = await readSeqs(g.get('high'))
    // A low or normal append cannot push alarms out: once the room high left is used, refused
    // (LogFullError, not a full disk), counted on its class; high loses nothing more.
    for (const cls of ['low', 'normal'] as const) {
      let err: unknown
      let accepted = 0
      for (let i = 0; i < 200 && err === undefined; i++) {
        err = await g
          .get(cls)
          .append(body(cls, i))
          .then(
            () => {
              accepted++
              return undefined
            },
            (e: unknown) => e,
          )
      }
      expect(err).toBeInstanceOf(LogFullError)
      expect((err as LogFullError).diskFull).toBe(false)
      expect(counts.get(cls, 'discard_new')).toBe(1)
      expect(counts.get(cls, 'disk_full')).toBe(0)
      expect(counts.get(cls, 'discard_old')).toBe(0)
      expect((await readSeqs(g.get(cls))).length).toBe(accepted)
      expect(counts.get('high', 'discard_old')).toBe(highLost)
    }
    expect(counts.get('high', 'discard_old')).toBe(highLost)
    expect(await readSeqs(g.get('high'))).toEqual(highReadable)
    // Once high is forwarded its segments make room for low again.
    g.get('high').ack(g.get('high').durableSeq)
    expect(await g.get('low').append(body('low', 1))).toBeGreaterThan(0)
    // Low then takes its room from itself only: with high holding records again, low evicts low.
    for (let i = 0; i < 200; i++) await g.get('high').append(body('high', 700 + i))
    const highLost2 = counts.get('high', 'discard_old')
    let lowAccepted = 0
    for (let i = 0; i < 500; i++) {
      await g
        .get('low')
        .append(body('low', 2 + i))
        .then(() => lowAccepted++, () => {})
      expect(segmentBytesOnDisk(dir)).toBeLessThanOrEqual(bound)
    }
    expect(lowAccepted).toBeGreaterThan(0)
    expect(counts.get('high', 'discard_old')).toBe(highLost2)
    await g.close()
  })

  it('log group - concurrent appends in every class stay within the one bound and keep the order rule', async () => {
    const dir = tempDir()
    const counts = new Counts()
    let group: LogGroup | undefined
    const violations = checkOrder(counts, () => group)
    const opts = groupOptions(dir, counts)
    group = await LogGroup.open(opts)
    const appended = { high: 0, normal: 0, low: 0 }
    // An append that would need room only a more important class can give is refused (discard_new).
    const refused = { high: 0, normal: 0, low: 0 }
    for (let round = 0; round < 40; round++) {
      const batch: Promise<void>[] = []
      for (const cls of CLASSES) {
        const n = cls === 'low' ? 30 : cls === 'normal' ? 12 : 3
        for (let i = 0; i < n; i++) {
          batch.push(
            group
              .get(cls)
              .append(body(cls, appended[cls]++))
              .then(
                () => {},
                (err: unknown) => {
                  expect(err).toBeInstanceOf(LogFullError)
                  refused[cls]++
                },
              ),
          )
        }
      }
      await Promise.all(batch)
      expect(segmentBytesOnDisk(dir)).toBeLessThanOrEqual(opts.maxBytes - 3 * DIR_RESERVE_BYTES)
    }
    expect(counts.get('low', 'discard_old')).toBeGreaterThan(0)
    expect(counts.get('high', 'discard_old')).toBe(0)
    expect(refused.high).toBe(0)
    for (const cls of CLASSES) {
      expect(counts.get(cls, 'discard_new')).toBe(refused[cls])
      expect((await readSeqs(group.get(cls))).length + counts.get(cls, 'discard_old')).toBe(appended[cls] - refused[cls])
    }
    expect(violations).toEqual([])
    await group.close()
  })

  it('log group - evictions and expiry reclaims in several classes at once: no deadlock, every record accounted for once', async () => {
    const dir = tempDir()
    const counts = new Counts()
    let group: LogGroup | undefined
    const violations = checkOrder(counts, () => group)
    // Bodies "<expiresAtMs>|...": low and normal records expire 150 ms after they are written.
    const expiryOf = (b: Uint8Array): number => Number(Buffer.from(b).toString('latin1', 0, 13))
    const rec = (cls: string, i: number, ttlMs: number): Buffer => Buffer.from(`${Date.now() + ttlMs}|${cls}-${i}|`.padEnd(700 + (i % 300), 'x'))
    const g = await LogGroup.open(groupOptions(dir, counts, { expiryOf, expiryCheckMs: 10 }))
    group = g
    const appended = { high: 0, normal: 0, low: 0 }
    const started = Date.now()
    for (let round = 0; round < 60; round++) {
      const batch: Promise<number>[] = []
      for (let i = 0; i < 25; i++) batch.push(g.get('low').append(rec('low', appended.low++, 150)))
      for (let i = 0; i < 8; i++) batch.push(g.get('normal').append(rec('normal', appended.normal++, round < 30 ? 150 : 1e9)))
      for (let i = 0; i < 2; i++) batch.push(g.get('high').append(rec('high', appended.high++, 1e9)))
      await Promise.all(batch)
      expect(segmentBytesOnDisk(dir)).toBeLessThanOrEqual(8 * SEG)
      if (round % 10 === 0) await new Promise((r) => setTimeout(r, 30))
    }
    expect(Date.now() - started).toBeLessThan(60_000)
    await new Promise((r) => setTimeout(r, 300)) // let reclaims settle
    for (const cls of CLASSES) {
      const readable = (await readSeqs(g.get(cls))).length
      expect(readable + counts.get(cls, 'discard_old') + counts.get(cls, 'expired')).toBe(appended[cls])
    }
    expect(counts.get('low', 'expired') + counts.get('low', 'discard_old')).toBeGreaterThan(0)
    expect(counts.get('normal', 'expired') + counts.get('normal', 'discard_old')).toBeGreaterThan(0)
    expect(counts.get('high', 'discard_old')).toBe(0)
    expect(violations).toEqual([])
    await g.close()
  }, 90_000)

  it('log group - a class sealing its segment while another makes room: no deadlock between its writer and the group lock', async () => {
    // Low's seal write waits on `gate` while `holdSeal`: low's writer is busy rolling when high
    // needs room, so the group (lock held) waits for low's writer to seal low's only segment.
    let holdSeal = false
    let reached: () => void = () => {}
    const atSeal = new Promise<void>((r) => (reached = r))
    let release: () => void = () => {}
    const gate = new Promise<void>((r) => (release = r))
    const lowFds = new Set<number>()
    const dir = tempDir()
    const fsys: LogFs = {
      ...nodeFs,
      open: async (p, flags) => {
        const fd = await nodeFs.open(p, flags)
        if (p.startsWith(path.join(dir, 'low', 'segments') + path.sep)) lowFds.add(fd)
        return fd
      },
      close: async (fd) => {
        lowFds.delete(fd)
        await nodeFs.close(fd)
      },
      write: async (fd, buf, off, len, pos) => {
        if (holdSeal && lowFds.has(fd) && len === SEAL_FRAME_BYTES) {
          holdSeal = false
          reached()
          await gate
        }
        return nodeFs.write(fd, buf, off, len, pos)
      },
    }
    const counts = new Counts()
    const g = await LogGroup.open(groupOptions(dir, counts, { fs: fsys }))
    const low = g.get('low')
    // Low: one segment, full (its next record starts a new one).
    while (low.segmentCount === 0 || low.listSegments()[0]!.size + 1032 <= SEG - SEAL_FRAME_BYTES) await low.append(body('low', low.next))
    expect(low.segmentCount).toBe(1)
    // High takes the rest of the bound but a few hundred bytes: room for low's next segment header, not for a record.
    const free = (): number => 8 * SEG - CLASSES.reduce((a, c) => a + g.get(c).boundUsageBytes(), 0)
    // (A writer gives back its reservation just after the append resolves: measured a turn later.)
    const settle = (): Promise<void> => new Promise((r) => setImmediate(r))
    for (await settle(); free() >= 1000; await settle()) await g.get('high').append(Buffer.alloc(Math.max(40, Math.min(1000, free() - 500)), 'h'))
    expect(free()).toBeGreaterThanOrEqual(SEGMENT_HEADER_BYTES + SEAL_FRAME_BYTES)
    expect(counts.get('low', 'discard_old') + counts.get('high', 'discard_old')).toBe(0)
    holdSeal = true
    const lowAppend = low.append(body('low', low.next)) // rolls: seals its segment (held)
    await atSeal
    const highAppend = g.get('high').append(body('high', 0)) // needs room: evicts low (least important)
    // Let high's room making reach low's writer, then let low's seal go on.
    for (let i = 0; i < 100 && (Reflect.get(low, 'writerQueue') as unknown[]).length === 0; i++) await new Promise((r) => setTimeout(r, 10))
    release()
    const settled = await Promise.race([Promise.allSettled([lowAppend, highAppend]), new Promise((r) => setTimeout(() => r('deadlock'), 5000))])
    expect(settled).not.toBe('deadlock')
    expect(counts.get('high', 'discard_old')).toBe(0)
    await g.close()
  })

  it('log group - acknowledged segments of any class are deleted before anything is evicted', async () => {
    const dir = tempDir()
    const counts = new Counts()
    const group = await LogGroup.open(groupOptions(dir, counts))
    for (let i = 0; i < 300; i++) await group.get('high').append(body('high', i))
    group.get('high').ack(group.get('high').durableSeq) // all of high forwarded
    const highSegments = group.get('high').segmentCount
    // 350 records of low need 6 segments: they fit only once high's forwarded segments are gone.
    for (let i = 0; i < 350; i++) await group.get('low').append(body('low', i))
    expect(counts.get('low', 'discard_old')).toBe(0) // low took high's forwarded room
    expect(group.get('high').segmentCount).toBeLessThan(highSegments - 1)
    await group.close()
  })

  it('log group - disk full (ENOSPC): forwarded segments of another class are deleted first, then the least important class is evicted', async () => {
    // Writes fail with ENOSPC while `full`; any deletion gives space back.
    let full = false
    const fsys: LogFs = {
      ...nodeFs,
      write: async (fd, buf, off, len, pos) => {
        if (full) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })
        return nodeFs.write(fd, buf, off, len, pos)
      },
      unlink: async (p) => {
        full = false
        await nodeFs.unlink(p)
      },
    }
    const dir = tempDir()
    const counts = new Counts()
    let group: LogGroup | undefined
    const violations = checkOrder(counts, () => group)
    const g = await LogGroup.open(groupOptions(dir, counts, { fs: fsys, maxBytes: 64 * SEG }))
    group = g
    for (let i = 0; i < 200; i++) await g.get('high').append(body('high', i))
    g.get('high').ack(g.get('high').durableSeq)
    for (let i = 0; i < 200; i++) await g.get('low').append(body('low', i))
    const highSegments = g.get('high').segmentCount
    full = true
    expect(await g.get('low').append(body('low', 200))).toBe(201)
    expect(g.get('high').segmentCount).toBeLessThan(highSegments) // high's forwarded segment went
    expect(counts.get('low', 'discard_old') + counts.get('low', 'disk_full')).toBe(0)
    // Nothing forwarded left but high's active segment: a full disk evicts low (not high) for high's write.
    for (let i = 0; i < 100; i++) await g.get('high').append(body('high', 200 + i))
    full = true
    expect(await g.get('high').append(body('high', 300))).toBeGreaterThan(0)
    expect(counts.get('low', 'discard_old')).toBeGreaterThan(0)
    expect(counts.get('high', 'discard_old') + counts.get('high', 'disk_full')).toBe(0)
    expect(violations).toEqual([])
    full = false
    await g.close()
  })

  it('log group - disk full (ENOSPC) with only a more important class holding records: the append is refused, nothing of that class is evicted', async () => {
    let full = false
    const fsys: LogFs = {
      ...nodeFs,
      write: async (fd, buf, off, len, pos) => {
        if (full) throw Object.assign(new Error('ENOSPC: no space left on device'), { code: 'ENOSPC' })
        return nodeFs.write(fd, buf, off, len, pos)
      },
      unlink: async (p) => {
        full = false
        await nodeFs.unlink(p)
      },
    }
    const dir = tempDir()
    const counts = new Counts()
    const g = await LogGroup.open(groupOptions(dir, counts, { fs: fsys, maxBytes: 64 * SEG }))
    for (let i = 0; i < 200; i++) await g.get('high').append(body('high', i))
    full = true
    const err = await g
      .get('low')
      .append(body('low', 0))
      .then(
        () => undefined,
        (e: unknown) => e,
      )
    expect(err).toBeInstanceOf(LogFullError)
    expect(counts.get('low', 'disk_full')).toBe(1)
    expect(counts.get('high', 'discard_old')).toBe(0)
    expect((await readSeqs(g.get('high'))).length).toBe(200)
    full = false
    await g.close()
  })

  it('log group - discard new refuses when the shared bound is full and evicts nothing', async () => {
    const dir = tempDir()
    const counts = new Counts()
    const group = await LogGroup.open(groupOptions(dir, counts, { discard: 'new' }))
    let refused = 0
    for (let i = 0; i < 700; i++) {
      await group
        .get(i % 2 === 0 ? 'low' : 'high')
        .append(body('x', i))
        .catch((err: unknown) => {
          expect(err).toBeInstanceOf(LogFullError)
          refused++
        })
    }
    expect(refused).toBeGreaterThan(0)
    expect(counts.get('low', 'discard_old') + counts.get('high', 'discard_old')).toBe(0)
    expect(counts.get('low', 'discard_new') + counts.get('high', 'discard_new')).toBe(refused)
    expect(segmentBytesOnDisk(dir)).toBeLessThanOrEqual(8 * SEG)
    await group.close()
  })

  it('log group - a restart keeps each class log, its ack position and the bound', async () => {
    const dir = tempDir()
    const counts = new Counts()
    let group = await LogGroup.open(groupOptions(dir, counts))
    for (let i = 0; i < 200; i++) await group.get('low').append(body('low', i))
    for (let i = 0; i < 50; i++) await group.get('high').append(body('high', i))
    group.get('low').ack(20)
    await group.close()
    group = await LogGroup.open(groupOptions(dir, counts))
    expect(group.get('low').acked).toBe(20)
    expect(await readSeqs(group.get('high'))).toEqual(Array.from({ length: 50 }, (_, i) => i + 1))
    expect(await group.get('high').append(body('high', 50))).toBe(51)
    // The restarted group still evicts low first.
    for (let i = 0; i < 700; i++) await group.get('high').append(body('high', 51 + i))
    expect(counts.get('low', 'discard_old')).toBe(200 - 20)
    expect(segmentBytesOnDisk(dir)).toBeLessThanOrEqual(8 * SEG)
    await group.close()
  })

  it('log group - reopened from a crash image (no close): records kept, seqs not reused, the order rule holds', async () => {
    const dir = tempDir()
    const counts = new Counts()
    const group = await LogGroup.open(groupOptions(dir, counts))
    for (let i = 0; i < 300; i++) await group.get('low').append(body('low', i))
    for (let i = 0; i < 30; i++) await group.get('high').append(body('high', i))
    // What a kill -9 leaves: the files as they are, active segments unsealed, no clean checkpoint.
    const crash = tempDir()
    fs.cpSync(dir, crash, { recursive: true })
    for (const sub of ['', 'high', 'low']) fs.rmSync(path.join(crash, sub, 'lock'), { force: true })
    const c2 = new Counts()
    let g2: LogGroup | undefined
    const violations = checkOrder(c2, () => g2)
    g2 = await LogGroup.open(groupOptions(crash, c2))
    expect(g2.get('low').recovery.scannedSegments).toBeGreaterThan(0)
    expect(await readSeqs(g2.get('high'))).toEqual(Array.from({ length: 30 }, (_, i) => i + 1))
    expect(await g2.get('high').append(body('high', 30))).toBe(31)
    for (let i = 0; i < 600; i++) await g2.get('high').append(body('high', 31 + i))
    expect(c2.get('low', 'discard_old')).toBe(300)
    expect(violations).toEqual([])
    await g2.close()
    await group.close()
  })
})
