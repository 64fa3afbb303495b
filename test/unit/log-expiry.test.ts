// Expiry reclaim: whole segments holding only acknowledged or expired records leave the log, counted
// as expired, with nothing forwarded; also at open after a restart, a crash, and for old seals.
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { frameBytes, SEAL_FRAME_BYTES, SEGMENT_HEADER_BYTES } from '../../src/log/format.js'
import { LogGroup, LogReader } from '../../src/log/index.js'
import type { LogDropReason, LogFs, LogMetrics, RingLog, RingLogOptions } from '../../src/log/index.js'
import { nodeFs } from '../../src/log/index.js'
import type { LogFields, Logger } from '../../src/logger.js'
import { silentLogger } from '../../src/logger.js'
import { segmentFiles } from '../helpers/damage.js'
import { openLog, tempDir } from '../helpers/log.js'

/** Test bodies carry their expiry: "<expiresAtMs|never>|..." */
const rec = (expiresAtMs: number, i: number): Buffer => Buffer.from(`${Number.isFinite(expiresAtMs) ? expiresAtMs : 'never'}|${i}|`.padEnd(1000, 'x'))
const expiryOf = (b: Uint8Array): number => {
  const s = Buffer.from(b).toString('latin1', 0, 20)
  const head = s.slice(0, s.indexOf('|'))
  return head === 'never' ? Infinity : Number(head)
}

class Counts {
  readonly drops = new Map<LogDropReason, number>()
  readonly metrics: LogMetrics = {
    logAppended: { inc: () => {} },
    logAppendedBytes: { inc: () => {} },
    logFsyncLatency: { observe: () => {} },
    drops: { inc: (n, { reason }) => void this.drops.set(reason, (this.drops.get(reason) ?? 0) + n) },
  }
  get(reason: LogDropReason): number {
    return this.drops.get(reason) ?? 0
  }
}

/** Keeps the warn lines (the "logged once with the seq range" check). */
function warnings(): { logger: Logger; lines: Array<{ msg: string; fields?: LogFields }> } {
  const lines: Array<{ msg: string; fields?: LogFields }> = []
  const logger: Logger = {
    debug: () => {},
    info: () => {},
    error: () => {},
    warn: (msg, fields) => void lines.push(fields ? { msg, fields } : { msg }),
    child: () => logger,
  }
  return { logger, lines }
}

async function until(cond: () => boolean, ms = 10_000): Promise<void> {
  const deadline = Date.now() + ms
  while (!cond()) {
    if (Date.now() > deadline) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 10))
  }
}

async function readSeqs(log: RingLog, from = log.acked + 1): Promise<number[]> {
  const r = new LogReader(log, from)
  const out: number[] = []
  for (let recs = await r.read(1000, 1 << 22); recs.length > 0; recs = await r.read(1000, 1 << 22)) out.push(...recs.map((x) => x.seq))
  await r.close()
  return out
}

const SEG = 64 * 1024
/** Records per segment: frames of 1,000-byte bodies in a 64 KiB segment (less header and seal). */
const PER_SEG = Math.floor((SEG - SEGMENT_HEADER_BYTES - SEAL_FRAME_BYTES) / frameBytes(1000))

function opts(counts: Counts, over: Partial<RingLogOptions> = {}): Partial<RingLogOptions> {
  return { segmentBytes: SEG, maxBytes: 64 * SEG, metrics: counts.metrics, expiryOf, expiryCheckMs: 20, ...over }
}

describe('log expiry', () => {
  it('log expiry - with nothing acknowledged, whole expired segments are deleted from the oldest, counted once and logged with their seq range', async () => {
    const counts = new Counts()
    const { logger, lines } = warnings()
    const log = await openLog(tempDir(), opts(counts, { logger }))
    // Far enough that every append is done before anything expires, even on a loaded machine (400 ms was not).
    const soon = Date.now() + 2000
    const expiring = 3 * PER_SEG
    for (let i = 0; i < expiring; i++) await log.append(rec(soon, i))
    for (let i = 0; i < 2 * PER_SEG; i++) await log.append(rec(Infinity, i))
    const before = log.sizeBytes
    const segs = log.segmentCount
    await until(() => counts.get('expired') >= expiring)
    expect(counts.get('expired')).toBe(expiring)
    expect(log.acked).toBe(expiring)
    expect(log.sizeBytes).toBeLessThan(before)
    expect(log.segmentCount).toBe(segs - 3)
    expect(await readSeqs(log)).toEqual(Array.from({ length: 2 * PER_SEG }, (_, i) => expiring + 1 + i))
    // Each reclaim pass logs one line with its seq range (a slow disk may spread them over passes).
    const logged = lines.filter((l) => l.msg.includes('expired')).map((l) => l.fields as { records: number; firstSeq: number; lastSeq: number })
    expect(logged.length).toBeGreaterThanOrEqual(1)
    expect(logged.reduce((a, l) => a + l.records, 0)).toBe(expiring)
    expect(logged[0]!.firstSeq).toBe(1)
    expect(logged.at(-1)!.lastSeq).toBe(expiring)
    for (let i = 1; i < logged.length; i++) expect(logged[i]!.firstSeq).toBe(logged[i - 1]!.lastSeq + 1)
    // Nothing more to reclaim: the count does not move again.
    await new Promise((r) => setTimeout(r, 200))
    expect(counts.get('expired')).toBe(expiring)
    await log.close()
  })

  it('log expiry - a segment with one record that never expires stops the reclaim at it (from the oldest only)', async () => {
    const counts = new Counts()
    const log = await openLog(tempDir(), opts(counts))
    const soon = Date.now() + 300
    for (let i = 0; i < PER_SEG; i++) await log.append(rec(soon, i)) // segment 1: all expire
    await log.append(rec(Infinity, PER_SEG)) // segment 2 starts with one that never expires
    for (let i = 1; i < PER_SEG; i++) await log.append(rec(soon, PER_SEG + i))
    for (let i = 0; i < PER_SEG; i++) await log.append(rec(soon, 2 * PER_SEG + i)) // segment 3: all expire
    await log.append(rec(Infinity, 0)) // segment 4 (active)
    await until(() => counts.get('expired') > 0)
    await new Promise((r) => setTimeout(r, 200))
    expect(counts.get('expired')).toBe(PER_SEG)
    expect(log.headSeq).toBe(PER_SEG + 1)
    await log.close()
  })

  it('log expiry - acknowledged segments go along with expired ones after them; forwarded-only segments stay as before', async () => {
    const counts = new Counts()
    const log = await openLog(tempDir(), opts(counts))
    for (let i = 0; i < 2 * PER_SEG; i++) await log.append(rec(Infinity, i))
    log.ack(2 * PER_SEG) // forwarded: kept until their room is needed (unchanged)
    const soon = Date.now() + 300
    for (let i = 0; i < PER_SEG; i++) await log.append(rec(soon, i)) // the third segment, all expiring
    await log.append(rec(Infinity, 0)) // the fourth (active)
    await new Promise((r) => setTimeout(r, 100))
    expect(log.headSeq).toBe(1)
    await until(() => counts.get('expired') > 0)
    expect(counts.get('expired')).toBe(PER_SEG)
    expect(log.headSeq).toBe(3 * PER_SEG + 1)
    await log.close()
  })

  it('log expiry - the active segment, entirely expired, is rolled and reclaimed; seqs go on after it and after a restart', async () => {
    const counts = new Counts()
    const dir = tempDir()
    let log = await openLog(dir, opts(counts))
    const soon = Date.now() + 200
    for (let i = 0; i < 10; i++) await log.append(rec(soon, i))
    await until(() => counts.get('expired') === 10)
    expect(log.segmentCount).toBe(0)
    expect(segmentFiles(dir)).toEqual([])
    expect(log.acked).toBe(10)
    expect(await log.append(rec(Infinity, 11))).toBe(11)
    await log.close()
    log = await openLog(dir, opts(counts))
    expect(await log.append(rec(Infinity, 12))).toBe(12)
    expect(await readSeqs(log)).toEqual([11, 12])
    expect(counts.get('expired')).toBe(10)
    await log.close()
  })

  it('log expiry - records that expired while the log was closed are reclaimed at open (seal expiry), counted once', async () => {
    const counts = new Counts()
    const dir = tempDir()
    let log = await openLog(dir, opts(counts))
    const soon = Date.now() + 300
    for (let i = 0; i < 2 * PER_SEG; i++) await log.append(rec(soon, i))
    for (let i = 0; i < 5; i++) await log.append(rec(Infinity, i))
    await log.close()
    expect(counts.get('expired')).toBe(0)
    await new Promise((r) => setTimeout(r, 1400)) // the seal holds the expiry in whole seconds, rounded up
    log = await openLog(dir, opts(counts))
    expect(counts.get('expired')).toBe(2 * PER_SEG) // before open() resolved
    expect(await readSeqs(log)).toEqual([1, 2, 3, 4, 5].map((i) => 2 * PER_SEG + i))
    await log.close()
    log = await openLog(dir, opts(counts))
    expect(counts.get('expired')).toBe(2 * PER_SEG) // not again
    await log.close()
  })

  it('log expiry - after a crash (no close, segments unsealed) the expiry is rebuilt by the scan and reclaimed at open', async () => {
    const counts = new Counts()
    const dir = tempDir()
    const log = await openLog(dir, opts(counts))
    const soon = Date.now() + 300
    for (let i = 0; i < PER_SEG + 10; i++) await log.append(rec(soon, i))
    const crash = tempDir()
    fs.cpSync(dir, crash, { recursive: true })
    fs.rmSync(path.join(crash, 'lock'), { force: true })
    await new Promise((r) => setTimeout(r, 1400)) // a seal holds the expiry in whole seconds, rounded up
    const c2 = new Counts()
    const reopened = await openLog(crash, opts(c2))
    expect(reopened.recovery.scannedSegments).toBeGreaterThan(0)
    expect(c2.get('expired')).toBe(PER_SEG + 10)
    expect(await readSeqs(reopened)).toEqual([])
    expect(await reopened.append(rec(Infinity, 0))).toBe(PER_SEG + 11)
    await reopened.close()
    await log.close()
  })

  it('log expiry - a seal written without expiry (previous version) is read; the expiry is learnt by one scan', async () => {
    const counts = new Counts()
    const dir = tempDir()
    const soon = Date.now() + 300
    let log = await openLog(dir, opts(counts, { expiryOf: undefined })) // seals carry no expiry word
    for (let i = 0; i < 2 * PER_SEG; i++) await log.append(rec(soon, i))
    await log.close()
    const words = segmentFiles(dir).map((f) => {
      const b = fs.readFileSync(f)
      return b.readUInt32LE(b.length - SEAL_FRAME_BYTES + 24)
    })
    expect(words.every((w) => w === 0)).toBe(true)
    let opened = 0
    const counting: LogFs = { ...nodeFs, open: (p, flags) => (flags === 'r' && p.endsWith('.seg') && opened++, nodeFs.open(p, flags)) }
    await new Promise((r) => setTimeout(r, 400))
    log = await openLog(dir, opts(counts, { fs: counting }))
    expect(counts.get('expired')).toBe(2 * PER_SEG)
    expect(opened).toBe(2) // the two old segments scanned once each
    expect(segmentFiles(dir)).toEqual([])
    await log.close()
  })

  it('log expiry - records in the forwarder window are not counted by the reclaim (the forwarder counts them), as with an eviction', async () => {
    const counts = new Counts()
    const log = await openLog(tempDir(), opts(counts))
    log.noteReadPosition(21) // seqs 1..20 are in the forwarder's window
    const soon = Date.now() + 300
    for (let i = 0; i < PER_SEG; i++) await log.append(rec(soon, i))
    await log.append(rec(Infinity, 0))
    await until(() => log.acked >= PER_SEG)
    expect(counts.get('expired')).toBe(PER_SEG - 20)
    expect(log.evictedUncounted(20)).toBe(true)
    expect(log.uncountedDropReason(20)).toBe('expired')
    expect(log.evictedUncounted(21)).toBe(false)
    await log.close()
  })

  it('log expiry - a segment reclaimed while the forwarder reads it: no record is both handed to the forwarder and counted as expired', async () => {
    // The main reader's second disk read of a segment waits on `gate` while `hold`: the reclaim
    // runs in the middle of a read() that already collected records of that segment.
    let hold = false
    let reads = 0
    let reached: () => void = () => {}
    const atRead = new Promise<void>((r) => (reached = r))
    let release: () => void = () => {}
    const gate = new Promise<void>((r) => (release = r))
    const fsys: LogFs = {
      ...nodeFs,
      read: async (fd, buf, off, len, pos) => {
        if (hold && ++reads === 2) {
          reached()
          await gate
        }
        return nodeFs.read(fd, buf, off, len, pos)
      },
    }
    const counts = new Counts()
    const log = await openLog(tempDir(), opts(counts, { fs: fsys, memoryTailBytes: 0, readChunkBytes: 16 * 1024 }))
    const soon = Date.now() + 300
    for (let i = 0; i < 2 * PER_SEG; i++) await log.append(rec(soon, i))
    for (let i = 0; i < 5; i++) await log.append(rec(Infinity, i))
    const appended = 2 * PER_SEG + 5
    // The forwarder's main reader.
    const reader = new LogReader(log, 1)
    log.noteReadPosition(1)
    hold = true
    const first = reader.read(10_000, 1 << 24)
    await atRead
    await until(() => log.headSeq > 2 * PER_SEG) // both expired segments reclaimed meanwhile
    release()
    const handed: number[] = (await first).map((r) => r.seq)
    log.noteReadPosition(reader.position) // what the forwarder does after each read
    for (let recs = await reader.read(10_000, 1 << 24); recs.length > 0; recs = await reader.read(10_000, 1 << 24)) handed.push(...recs.map((r) => r.seq))
    // Every record once: handed to the forwarder (and not expired by the log) or counted as expired.
    expect(handed.filter((seq) => seq <= 2 * PER_SEG)).toEqual([])
    expect(handed.length + counts.get('expired')).toBe(appended)
    await reader.close()
    await log.close()
  })

  it('log expiry - in a group, appends in every class go on while a class reclaims its expired segments', async () => {
    const dir = tempDir()
    const counts = new Map<string, Counts>()
    const group = await LogGroup.open({
      members: ['high', 'normal', 'low'].map((name) => ({ name, dir: name === 'normal' ? dir : path.join(dir, name) })),
      segmentBytes: SEG,
      maxBytes: 8 * SEG + 3 * 32 * 1024,
      discard: 'old',
      fsync: 'always',
      fsyncIntervalMs: 20,
      maxRecordBytes: 8 * 1024,
      checkpointIntervalMs: 50,
      expiryOf,
      expiryCheckMs: 20,
      metricsFor: (name) => {
        const c = new Counts()
        counts.set(name, c)
        return c.metrics
      },
      loggerFor: () => silentLogger,
    })
    const soon = Date.now() + 300
    const writes: Promise<number>[] = []
    for (let i = 0; i < 3 * PER_SEG; i++) writes.push(group.get('low').append(rec(soon, i)))
    await Promise.all(writes)
    const more: Promise<number>[] = []
    const started = Date.now()
    while (Date.now() - started < 800) {
      more.push(group.get('high').append(rec(Infinity, 0)), group.get('low').append(rec(Infinity, 0)))
      await new Promise((r) => setTimeout(r, 5))
    }
    const seqs = await Promise.all(more)
    expect(seqs.length).toBe(more.length)
    await until(() => (counts.get('low')?.get('expired') ?? 0) === 3 * PER_SEG)
    expect(counts.get('high')?.get('expired') ?? 0).toBe(0)
    const lowLeft = await readSeqs(group.get('low'))
    expect(lowLeft.length).toBe(more.length / 2)
    await group.close()
  })
})
