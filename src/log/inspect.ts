// Reading a data directory without opening the log: what `ferry log stat|dump` and `ferry replay`
// use. Nothing is created, truncated or locked, so it also works (read-only) beside a running
// gateway; a running gateway may append meanwhile, so figures are a snapshot.
import fs from 'node:fs'
import path from 'node:path'
import { readCheckpointState } from './checkpoint.js'
import type { CheckpointState } from './checkpoint.js'
import { decodeSegmentHeader, MAX_BODY_BYTES, parseSegmentFileName, SEGMENT_HEADER_BYTES } from './format.js'
import { nodeFs } from './fs.js'
import { DirLock } from './lock.js'
import { SegmentScanner } from './scanner.js'

export interface SegmentStat {
  readonly file: string
  readonly bytes: number
  readonly baseSeq: number
  readonly epoch: number
  readonly createdAt: number
  readonly sealed: boolean
  readonly records: number
  readonly firstSeq: number | null
  readonly lastSeq: number | null
  /** Records skipped as damaged (gaps in seq inside the segment). */
  readonly corrupt: number
  /** Bytes after the last valid frame of an unsealed segment (a torn tail, or appends in progress). */
  readonly tailBytes: number
  /** Why the segment cannot be read (bad header), or undefined. */
  readonly problem?: string
}

export interface LogStat {
  readonly dir: string
  readonly segments: SegmentStat[]
  readonly checkpoint: CheckpointState | undefined
  readonly firstSeq: number | null
  readonly lastSeq: number | null
  readonly records: number
  readonly bytes: number
  readonly acked: number
  /** Records after the acknowledged position (not yet forwarded). */
  readonly backlog: number
  readonly corrupt: number
  /** Pid of the running gateway that holds the directory, or null. */
  readonly runningPid: number | null
}

export interface InspectedRecord {
  readonly seq: number
  readonly ts: number
  readonly epoch: number
  readonly body: Buffer
  readonly segment: string
}

function segmentFiles(dir: string): string[] {
  const segDir = path.join(dir, 'segments')
  if (!fs.existsSync(segDir)) throw new Error(`${dir} is not a Ferry data directory (no segments/ inside)`)
  return fs
    .readdirSync(segDir)
    .filter((n) => parseSegmentFileName(n) !== undefined)
    .sort()
    .map((n) => path.join(segDir, n))
}

/** Scans every record of every segment with seq > afterSeq, in order; `visit` returns false to stop. */
export async function scanLog(dir: string, afterSeq: number, visit: (r: InspectedRecord, seg: SegmentStat) => boolean | void): Promise<SegmentStat[]> {
  const out: SegmentStat[] = []
  let stopped = false
  for (const file of segmentFiles(dir)) {
    // A running gateway may remove a segment (eviction) while we read: skip what is gone.
    let bytes: number
    let fd: number
    try {
      bytes = fs.statSync(file).size
      fd = await nodeFs.open(file, 'r')
    } catch (err) {
      if ((err as NodeJS.ErrnoException).code === 'ENOENT') continue
      throw err
    }
    try {
      const head = Buffer.alloc(SEGMENT_HEADER_BYTES)
      await nodeFs.read(fd, head, 0, head.length, 0)
      const h = decodeSegmentHeader(head)
      const name = path.basename(file)
      if (typeof h === 'string') {
        out.push({ file: name, bytes, baseSeq: parseSegmentFileName(name) ?? 0, epoch: 0, createdAt: 0, sealed: false, records: 0, firstSeq: null, lastSeq: null, corrupt: 0, tailBytes: 0, problem: h })
        continue
      }
      const scanner = new SegmentScanner(nodeFs, fd, { afterSeq: Math.max(afterSeq, h.baseSeq - 1), limit: () => bytes, chunkBytes: 1024 * 1024, maxBodyBytes: MAX_BODY_BYTES })
      let records = 0
      let first: number | null = null
      let last: number | null = null
      let corrupt = 0
      const stat = (): SegmentStat => ({ file: name, bytes, baseSeq: h.baseSeq, epoch: h.epoch, createdAt: h.createdAt, sealed: scanner.sealed, records, firstSeq: first, lastSeq: last, corrupt, tailBytes: scanner.sealed ? 0 : bytes - scanner.lastEnd })
      for (;;) {
        if (stopped) break
        const r = await scanner.next()
        if (!r) break
        corrupt += scanner.gapBefore // (before the first record: damage at the segment's start)
        records++
        first ??= r.seq
        last = r.seq
        if (visit({ seq: r.seq, ts: r.ts, epoch: h.epoch, body: r.body, segment: name }, stat()) === false) stopped = true
      }
      out.push(stat())
    } finally {
      await nodeFs.close(fd)
    }
    if (stopped) break
  }
  return out
}

/** Segments, positions, backlog and damage of a data directory. */
export async function statLog(dir: string): Promise<LogStat> {
  const segments = await scanLog(dir, 0, () => {})
  const checkpoint = readCheckpointState(path.join(dir, 'checkpoint'))
  const withRecords = segments.filter((s) => s.records > 0)
  const firstSeq = withRecords[0]?.firstSeq ?? null
  const lastSeq = withRecords.at(-1)?.lastSeq ?? null
  const acked = Math.max(checkpoint?.acked ?? 0, (firstSeq ?? 1) - 1)
  return {
    dir,
    segments,
    checkpoint,
    firstSeq,
    lastSeq,
    records: segments.reduce((a, s) => a + s.records, 0),
    bytes: segments.reduce((a, s) => a + s.bytes, 0),
    acked,
    backlog: lastSeq === null ? 0 : Math.max(0, lastSeq - acked),
    corrupt: segments.reduce((a, s) => a + s.corrupt, 0),
    runningPid: DirLock.holder(dir) ?? null,
  }
}
