// The ring log: a bounded, segmented, crash-safe append log with group commit and an ack cursor.
//
// Positions (invariant: head <= acked + 1 <= durable + 1 <= next):
//   head    first seq still on disk
//   acked   every seq <= acked reached upstream (set by the forwarder, contiguous)
//   durable last seq covered by the sync policy (always: fdatasync; batch: the interval sync;
//           none: the write). The reader never reads past it.
//   next    next seq to assign; seqs are never reused, and each start writes a new segment with a
//           new epoch, so `<epoch>:<seq>` never names two different records.
//
// Disk full (ENOSPC on any write: record, seal, segment header, checkpoint) is a state, not an
// error. The partial write is undone; forwarded segments are deleted (and under discard "old" the
// oldest segment evicted, counted) to make room and the write is tried again; if nothing can be
// freed the batch is refused (counted as `disk_full`) and so is every append for `diskFullRetryMs`,
// after which the next append tries again. A segment deleted by the drain ends the wait at once.
// Deleting a forwarded segment never waits on a checkpoint write: recovery takes an ack position
// older than the oldest segment as "everything before the oldest segment was forwarded".
//
// No file descriptors (EMFILE/ENFILE: too many sockets open) is the same kind of state: a segment
// that cannot be opened refuses the batch (counted as `no_descriptors`) and every append for
// `diskFullRetryMs`, then the next append tries again; it never stops the log. The directory sync
// after deleting a segment is owed, not failed, when it cannot open the directory: the next
// segment start syncs the same directory (a deletion lost to a crash meanwhile only brings back
// forwarded records, below the ack position).
import { randomBytes, randomInt } from 'node:crypto'
import path from 'node:path'
import { FerryError, LogClosedError, LogFullError, LogIoError } from '../errors.js'
import { ClosedSignal } from '../lifecycle.js'
import type { Component, Deadline } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import { Checkpoint } from './checkpoint.js'
import type { CheckpointState } from './checkpoint.js'
import {
  decodeSealExpiry,
  decodeSegmentHeader,
  encodeSealBody,
  encodeSealExpiry,
  encodeSegmentHeader,
  DIR_RESERVE_BYTES,
  frameBytes,
  parseSegmentFileName,
  SEAL_FRAME_BYTES,
  SEGMENT_HEADER_BYTES,
  segmentFileName,
  TYPE_DATA,
  TYPE_SEAL,
  writeFrame,
  checkFrame,
  decodeSealBody,
  MAX_BODY_BYTES,
} from './format.js'
import { nodeFs, writeFully } from './fs.js'
import { DirLock } from './lock.js'
import type { LogFs } from './fs.js'
import type { LogMetrics } from './metrics.js'
import { SegmentScanner } from './scanner.js'
import type { BoundMember, SharedBound } from './shared-bound.js'

export type DiscardPolicy = 'old' | 'new'
export type FsyncPolicy = 'always' | 'batch' | 'none'

/** Options of {@link RingLog.open}. Sizes in bytes, times in milliseconds. */
export interface RingLogOptions {
  /** Data directory; segments live in `<dir>/segments`. */
  readonly dir: string
  /** Size of one segment file. */
  readonly segmentBytes: number
  /** Bound on the bytes of all segment files together. */
  readonly maxBytes: number
  /** When full: "old" evicts the oldest segment (counted), "new" refuses appends. */
  readonly discard: DiscardPolicy
  /** When an append counts as stored, see README "Guarantees". */
  readonly fsync: FsyncPolicy
  /** fdatasync period under fsync "batch". */
  readonly fsyncIntervalMs: number
  /** Largest record body accepted. */
  readonly maxRecordBytes: number
  /** How often the ack position is checkpointed when it moved. */
  readonly checkpointIntervalMs: number
  /** After ENOSPC, appends are refused at once for this long, then tried again. Default 1000. */
  readonly diskFullRetryMs?: number
  /** Largest single write (one group commit). Default 1 MiB. */
  readonly maxBatchBytes?: number
  /** Bytes per sequential read of the backlog. Default 1 MiB. */
  readonly readChunkBytes?: number
  /**
   * Bytes of the newest durable-bound batches kept in memory, so readers at the tail get records
   * without reading them back from disk (see {@link TailBatch}). Default
   * {@link DEFAULT_MEMORY_TAIL_BYTES}; 0 keeps none (every read goes to disk).
   */
  readonly memoryTailBytes?: number
  readonly logger: Logger
  /** What the log counts (see metrics.ts); gauges of its state are read by the owner from its getters. */
  readonly metrics: LogMetrics
  /** File-system seam (tests inject faults). Default: the real file system. */
  readonly fs?: LogFs
  /** Called after each segment recovery looked at (progress of a long start). */
  readonly onRecoveryProgress?: (segmentsDone: number, segmentsTotal: number) => void
  /**
   * When a record expires: absolute ms since the epoch, Infinity for never (the gateway passes the
   * codec's entryExpiresAtMs). With it the log reclaims whole segments, from the oldest, that hold
   * only acknowledged or expired records (counted as drops{reason="expired"}); without it nothing
   * expires in the log and seals carry no expiry (exactly as before).
   */
  readonly expiryOf?: (body: Uint8Array) => number
  /** How often expired segments are looked for, in ms. Default 1000. */
  readonly expiryCheckMs?: number
  /**
   * A bound shared with other logs (a LogGroup's members), replacing this log's own: every write
   * (a batch, a new segment's header and seal) reserves its bytes with the bound first, which makes
   * room across the members when they do not fit. Without it the log bounds itself (maxBytes, one
   * full segment reserved when a new one is started), exactly as before.
   */
  readonly bound?: SharedBound
}

/** One segment file as the log tracks it. */
export interface SegmentInfo {
  readonly baseSeq: number
  readonly epoch: number
  readonly path: string
  /** Last seq in the segment; baseSeq - 1 when empty. */
  lastSeq: number
  /** Bytes in the file (for the active segment: bytes written). */
  size: number
  sealed: boolean
  /** Seqs at the end (up to lastSeq) lost to a power loss and already counted: readers skip them. */
  lostSeqs: number
  /**
   * Latest expiry of the segment's records (ms since the epoch; Infinity if one never expires;
   * -Infinity while empty), tracked only with {@link RingLogOptions.expiryOf}. Undefined: not known
   * yet (a seal written before expiry tracking: learnt by a scan when reclaim reaches the segment).
   */
  maxExpiresAtMs?: number
}

interface PendingAppend {
  readonly body: Uint8Array
  readonly resolve: (seq: number) => void
  readonly reject: (err: Error) => void
}

/**
 * Default of {@link RingLogOptions.memoryTailBytes}: 4 MiB. The tail is trimmed at the ack
 * position, so in steady state it holds only records in the forwarder's window (which holds their
 * bodies anyway) and the few not read yet; the bound only bites when the forwarder falls behind,
 * and then it is what the tail adds to the resident set at most. 4 MiB is the default in-flight
 * window (2,048 records) of records up to 2 KiB, a quarter of a second of the heaviest load we
 * measure; a reader further behind than that reads from disk in large sequential reads, where a
 * bigger cache would save little.
 */
export const DEFAULT_MEMORY_TAIL_BYTES = 4 * 1024 * 1024

/**
 * One group commit kept in memory for readers. `frames` are exactly the bytes written at `offset`
 * of `seg`'s file; the buffer is never written to again (each batch gets its own), so a reader may
 * hand out views of it that outlive the batch's time in the tail. Records served from here are not
 * checksummed: the log wrote them from these very bytes. Readers never read past the durable seq.
 */
export interface TailBatch {
  readonly seg: SegmentInfo
  readonly firstSeq: number
  readonly lastSeq: number
  /** Receive time of every record of the batch. */
  readonly ts: number
  readonly frames: Buffer
  /** File offset of `frames` in the segment. */
  readonly offset: number
}

/**
 * Spacing of the seq -> file offset marks kept per segment (see `startFor`): a reader opened in the
 * middle of a segment (the health check's reader at the ack position, once a second; a reader that
 * fell out of the memory tail) scans at most this much before its first record instead of the
 * segment from its start. 256 marks (4 KiB) for a 64 MiB segment.
 */
const MARK_EVERY_BYTES = 256 * 1024

/**
 * What one batch costs the memory tail besides its frames (the batch and Buffer objects), counted
 * against the bound: at a low rate every record is its own batch, and 4 MiB of 40-byte batches
 * would otherwise be 100,000 objects.
 */
const TAIL_BATCH_OVERHEAD_BYTES = 256

/** What recovery found at open, for logs and tests. */
export interface RecoveryReport {
  readonly segments: number
  readonly scannedSegments: number
  readonly truncatedBytes: number
  readonly damagedRecords: number
  readonly quarantined: readonly string[]
  readonly durationMs: number
}

/** Acks between checkpoints besides the timer (`checkpointIntervalMs`). */
const CHECKPOINT_EVERY = 10_000

function isEnospc(err: unknown): boolean {
  return (err as { code?: unknown }).code === 'ENOSPC'
}

/** Why appends were refused, as counted in ferry_drops_total. */
type RefusalReason = 'discard_new' | 'disk_full' | 'no_descriptors'

/** Out of file descriptors, for the process (EMFILE) or the system (ENFILE). */
function isNoDescriptors(err: unknown): boolean {
  const code = (err as { code?: unknown }).code
  return code === 'EMFILE' || code === 'ENFILE'
}

/** A segment could not be opened for want of file descriptors: refused and retried like a full disk. */
class NoDescriptorsError extends LogFullError {
  /** EMFILE or ENFILE. */
  readonly errno: string
  constructor(what: string, cause: unknown) {
    super(`no file descriptors (${errCode(cause)}) while ${what}; record not stored`, true)
    this.errno = errCode(cause)
  }
}

/** Why a segment left the log with records not yet acknowledged. */
type SegmentDropReason = 'discard_old' | 'expired'

/** What dropping one segment did to its records not yet acknowledged. */
interface SegmentDrop {
  /** Records counted as dropped now. */
  readonly lost: number
  /** First seq counted (records below it were in the forwarder's window). */
  readonly from: number
  readonly lastSeq: number
  /** Records read by the forwarder before the drop: not counted here (see evictedUncounted). */
  readonly inFlight: number
}

function errCode(err: unknown): string {
  const c = (err as { code?: unknown }).code
  return typeof c === 'string' ? c : err instanceof Error ? err.message : String(err)
}

export class RingLog implements Component, BoundMember {
  private readonly fs: LogFs
  private readonly segDir: string
  private readonly capacity: number
  /** Room of maxBytes kept for the data directory's other files (checkpoint, lock, directories). */
  private readonly reserveBytes: number
  private readonly maxBatchBytes: number
  readonly readChunkBytes: number
  private readonly segments: SegmentInfo[] = []
  private active: { seg: SegmentInfo; fd: number } | undefined
  private pending: PendingAppend[] = []
  private pendingBytes = 0
  private writing = false
  private scheduled = false
  /** close() began: appends are refused. */
  private shut = false
  private closing: Promise<void> | undefined
  private readonly stopped = new ClosedSignal()
  private failed: Error | undefined
  private nextSeq = 1
  private durable = 0
  private durableSize = 0
  private ackedSeq = 0
  private checkpointedAcked = -1
  /** Seq floor of the last checkpoint written. */
  private checkpointedFloor = -1
  /**
   * performance.now() when the disk filled up (0: not full); appends are refused until
   * diskFullRetryAt. Monotonic, so a step of the wall clock neither prolongs nor cuts the wait.
   */
  private diskFullSince = 0
  private diskFullRetryAt = 0
  private diskFullRefused = 0
  /** What the refusal episode is about (diskFullSince > 0). */
  private fullReason: 'disk_full' | 'no_descriptors' = 'disk_full'
  /** A deletion's directory sync could not run (no descriptors); the next segment start makes up for it. */
  private dirSyncOwed = false
  private freeRun: Promise<boolean> | undefined
  /** A checkpoint was wanted while one was being written: write another when it is done. */
  private checkpointAgain = false
  /**
   * A recovered segment recovery could not seal (disk full): sealed before the next segment is
   * started, so that only the last segment on disk can ever lack its seal.
   */
  private unsealedOnDisk: SegmentInfo | undefined
  /** Seqs a power loss took from the end of the log (counted at open); the reader does not count them again. */
  private lostTail: { first: number; last: number } | undefined
  /** Where the forwarder's main reader is (records below it were read; see evictOldest). */
  private readPosition = 0
  /** Seq ranges [from, to] of evicted records not counted then (in the forwarder's window); the latest few. */
  private readonly uncountedEvictions: Array<{ from: number; to: number; reason: SegmentDropReason }> = []
  /** Callers waiting for the writer (see withWriter); the pump hands it over between batches. */
  private writerQueue: Array<() => void> = []
  /**
   * The writer's holder waits on the shared bound at a point where the active segment may be sealed
   * (no write in flight on it): the bound may seal it meanwhile (sealActiveForBound) without the writer.
   */
  private parked = 0
  /** Callers of sealActiveForBound waiting for the writer's holder to park (see parkedOn). */
  private parkWaiters: Array<() => void> = []
  /** Bytes reserved against a shared bound for writes under way. */
  private boundReserved = 0
  /** An expiry reclaim pass is running. */
  private reclaimingExpired = false
  private checkpointing = false
  private checkpointRetryAt = 0
  private checkpointWarnAt = 0
  private checkpointFailures = 0
  private epochValue = 0
  private logId: Buffer = Buffer.alloc(16)
  private checkpoint!: Checkpoint
  private checkpointChain: Promise<void> = Promise.resolve()
  private dataWaiter: { promise: Promise<void>; resolve: () => void } | undefined
  private idleWaiters: Array<() => void> = []
  private timers: NodeJS.Timeout[] = []
  private syncing = false
  private lock: DirLock | undefined
  /**
   * Reused for every group commit when there is no memory tail (one write is in flight at a time);
   * grows to the largest batch. With a tail each batch gets its own buffer (readers keep views).
   */
  private arena: Buffer = Buffer.alloc(0)
  private readonly memoryTailBytes: number
  /** The memory tail: consecutive batches, oldest at `tailStart` (entries before it are dropped). */
  private tail: TailBatch[] = []
  private tailStart = 0
  private tailBytes = 0
  /** Where small tail batches are carved from (see tailBuffer), and how much of it is taken. */
  private slab: Buffer = Buffer.alloc(0)
  private slabAt = 0
  /** Per segment: known record boundaries as flat [seq, offset, seq, offset, ...], ascending. */
  private readonly marks = new WeakMap<SegmentInfo, number[]>()
  /** Findings of the recovery at open. */
  recovery!: RecoveryReport

  private constructor(readonly opts: RingLogOptions) {
    this.fs = opts.fs ?? nodeFs
    this.segDir = path.join(opts.dir, 'segments')
    this.capacity = opts.segmentBytes - SEAL_FRAME_BYTES
    // The data directory's other files get DIR_RESERVE_BYTES of the bound, or what two segments leave
    // of it (a bound of exactly two segments, valid before the reserve, keeps working as then).
    this.reserveBytes = Math.max(0, Math.min(DIR_RESERVE_BYTES, opts.maxBytes - 2 * opts.segmentBytes))
    this.maxBatchBytes = opts.maxBatchBytes ?? 1024 * 1024
    this.readChunkBytes = opts.readChunkBytes ?? 1024 * 1024
    this.memoryTailBytes = opts.memoryTailBytes ?? DEFAULT_MEMORY_TAIL_BYTES
  }

  /** Opens the log in `opts.dir`: recovers what is on disk. The first append starts a new segment. */
  static async open(opts: RingLogOptions): Promise<RingLog> {
    if (frameBytes(opts.maxRecordBytes) > opts.segmentBytes - SEGMENT_HEADER_BYTES - SEAL_FRAME_BYTES) {
      throw new FerryError('FERRY_ERR_LOG_RECORD_TOO_LARGE', `maxRecordBytes ${opts.maxRecordBytes} does not fit in a segment of ${opts.segmentBytes} bytes`)
    }
    const log = new RingLog(opts)
    await (opts.fs ?? nodeFs).mkdir(opts.dir)
    log.lock = DirLock.acquire(opts.dir)
    try {
      await log.recover()
    } catch (err) {
      log.lock.release()
      throw err
    }
    log.timers.push(setInterval(() => log.checkpointIfMoved(), opts.checkpointIntervalMs))
    if (opts.fsync === 'batch') log.timers.push(setInterval(() => void log.syncTick(), opts.fsyncIntervalMs))
    if (opts.expiryOf) log.timers.push(setInterval(() => void log.reclaimExpired(), opts.expiryCheckMs ?? 1000))
    for (const t of log.timers) t.unref()
    // Segments that expired while the gateway was stopped are reclaimed before it takes traffic.
    if (opts.expiryOf) await log.reclaimExpired()
    return log
  }

  // ---------------------------------------------------------------- recovery

  private async recover(): Promise<void> {
    const started = Date.now()
    const log = this.opts.logger
    const fsys = this.fs
    await fsys.mkdir(this.segDir)
    const { checkpoint, state } = await Checkpoint.open(fsys, path.join(this.opts.dir, 'checkpoint'))
    this.checkpoint = checkpoint
    const quarantined: string[] = []
    let scanned = 0
    let truncatedBytes = 0
    let damaged = 0
    let maxEpoch = state?.epoch ?? 0
    const names = (await fsys.readdir(this.segDir)).sort()
    const lastName = names.filter((n) => parseSegmentFileName(n) !== undefined).at(-1)
    const floor = state?.seqFloor ?? 0
    let lostCounted = 0
    const quarantine = async (name: string, why: string): Promise<void> => {
      const qdir = path.join(this.opts.dir, 'quarantine')
      await fsys.mkdir(qdir)
      await fsys.rename(path.join(this.segDir, name), path.join(qdir, `${name}.${Date.now()}`))
      quarantined.push(name)
      log.error('segment quarantined: its records are not forwarded', { segment: name, reason: why })
    }
    let done = 0
    for (const name of names) {
      this.opts.onRecoveryProgress?.(done++, names.length)
      const base = parseSegmentFileName(name)
      if (base === undefined) {
        if (name.endsWith('.tmp')) await fsys.unlink(path.join(this.segDir, name))
        continue
      }
      const p = path.join(this.segDir, name)
      const fd = await fsys.open(p, 'r+')
      try {
        const size = await fsys.fsize(fd)
        const hbuf = Buffer.alloc(SEGMENT_HEADER_BYTES)
        const hn = await fsys.read(fd, hbuf, 0, SEGMENT_HEADER_BYTES, 0)
        const header = decodeSegmentHeader(hbuf.subarray(0, hn))
        if (typeof header === 'string' || header.baseSeq !== base) {
          const why = typeof header === 'string' ? header : `header baseSeq ${header.baseSeq} does not match the name`
          // A segment torn while being created never held an acknowledged record.
          if (size <= SEGMENT_HEADER_BYTES) {
            await fsys.close(fd)
            await fsys.unlink(p)
            log.warn('removed a segment torn during creation', { segment: name })
          } else {
            await fsys.close(fd)
            await quarantine(name, why)
          }
          continue
        }
        const prev = this.segments[this.segments.length - 1]
        if (prev && base <= prev.lastSeq) {
          await fsys.close(fd)
          await quarantine(name, `its seqs overlap the previous segment (base ${base} <= ${prev.lastSeq})`)
          continue
        }
        if (this.logId.every((b) => b === 0)) this.logId = header.logId
        maxEpoch = Math.max(maxEpoch, header.epoch)
        const seg: SegmentInfo = { baseSeq: base, epoch: header.epoch, path: p, lastSeq: base - 1, size, sealed: false, lostSeqs: 0 }
        // Fast path: a valid seal at the end of the file. Not for the last segment unless the
        // previous run stopped cleanly: a crash leaves the last segment unsealed, and its last
        // record's payload (device bytes) could end with something that looks like a seal.
        if (size >= SEGMENT_HEADER_BYTES + SEAL_FRAME_BYTES && (name !== lastName || state?.clean === true)) {
          const sbuf = Buffer.alloc(SEAL_FRAME_BYTES)
          await fsys.read(fd, sbuf, 0, SEAL_FRAME_BYTES, size - SEAL_FRAME_BYTES)
          const f = checkFrame(sbuf, 0, SEAL_FRAME_BYTES, SEAL_FRAME_BYTES)
          if (typeof f !== 'string' && f.type === TYPE_SEAL) {
            const s = decodeSealBody(f.body)
            if (s.firstSeq === base && s.lastSeq >= base - 1) {
              seg.lastSeq = s.lastSeq
              seg.lostSeqs = s.lostSeqs
              seg.sealed = true
              // The seal's expiry word (see format.ts); undefined for a seal that predates it.
              if (this.opts.expiryOf) {
                const e = decodeSealExpiry(sbuf.readUInt32LE(24))
                if (e !== undefined) seg.maxExpiresAtMs = e
              }
            }
          }
        }
        if (seg.sealed && seg.lastSeq < base) {
          // An empty segment (an idle run's active segment): nothing to keep, and its name would
          // collide with the next segment this start creates.
          await fsys.close(fd)
          await fsys.unlink(p)
          continue
        }
        if (!seg.sealed) {
          scanned++
          const sc = new SegmentScanner(fsys, fd, {
            afterSeq: base - 1,
            limit: () => size,
            chunkBytes: this.readChunkBytes,
            maxBodyBytes: MAX_BODY_BYTES,
          })
          let gaps = 0
          const expiryOf = this.opts.expiryOf
          let maxExpiry = -Infinity
          for (let r = await sc.next(); r; r = await sc.next()) {
            gaps += sc.gapBefore
            // Offset marks for the readers that start in this segment (the backlog, retransmissions).
            if (sc.clean) this.noteRecordAt(seg, r.seq, r.offset)
            if (expiryOf) maxExpiry = Math.max(maxExpiry, expiryOf(r.body))
          }
          if (expiryOf) seg.maxExpiresAtMs = maxExpiry
          seg.lastSeq = sc.lastSeq
          damaged += gaps
          if (gaps > 0) log.warn('damaged records found mid-segment; they will be skipped and counted', { segment: name, records: gaps })
          if (sc.lastEnd < size) {
            // Torn tail: no valid record follows, so these bytes were never acknowledged.
            truncatedBytes += size - sc.lastEnd
            log.warn('truncating torn tail of segment', { segment: name, bytes: size - sc.lastEnd, lastSeq: sc.lastSeq })
            await fsys.ftruncate(fd, sc.lastEnd)
          }
          if (name === lastName && state && floor >= base && floor > seg.lastSeq) {
            // The checkpoint's seq floor says records up to `floor` were written (and acknowledged
            // to devices) in this segment, but they are gone: a power loss under --fsync
            // batch|none. The seal claims them with a lost count, so they are counted once, here,
            // and readers skip them; those the checkpoint says were forwarded are not lost.
            const first = Math.max(seg.lastSeq, state.acked) + 1
            if (first <= floor) {
              lostCounted = floor - first + 1
              log.warn('records acknowledged to devices are missing from the end of the log (power loss under --fsync batch|none?); counted as lost (power_loss)', {
                segment: name,
                records: lostCounted,
                firstSeq: first,
                lastSeq: floor,
              })
            }
            seg.lostSeqs = floor - seg.lastSeq
            seg.lastSeq = floor
          }
          if (seg.lastSeq < base) {
            await fsys.close(fd)
            await fsys.unlink(p)
            continue
          }
          const seal = this.sealFrame(seg)
          seg.size = sc.lastEnd
          try {
            await writeFully(fsys, fd, seal, sc.lastEnd)
            await fsys.fdatasync(fd)
            seg.size = sc.lastEnd + SEAL_FRAME_BYTES
          } catch (err) {
            // A full disk must not stop a restart: the segment is not written to again in this run
            // (each start writes a new segment), so it is treated as sealed and scanned again next time.
            if (!isEnospc(err)) throw err
            await fsys.ftruncate(fd, sc.lastEnd)
            this.unsealedOnDisk = seg
            log.warn('disk full: could not seal a recovered segment; it is scanned again at the next start', { segment: name })
          }
          seg.sealed = true
        }
        this.segments.push(seg)
      } finally {
        await fsys.close(fd).catch(() => {})
      }
    }
    if (quarantined.length > 0 || truncatedBytes > 0) await fsys.fsyncDir(this.segDir)
    if (this.logId.every((b) => b === 0)) this.logId = state?.logId ?? randomBytes(16)
    const last = this.segments[this.segments.length - 1]
    // Seqs are never reused: the next one is above both the data and the checkpoint's floor (which
    // can be higher when a power loss took records under --fsync batch|none). `durable` is what is
    // really on disk; the reader counts the seqs in between as lost.
    const lastSeq = Math.max(last?.lastSeq ?? 0, state?.seqFloor ?? 0)
    this.nextSeq = lastSeq + 1
    this.durable = last?.lastSeq ?? 0
    const head = this.segments[0]?.baseSeq ?? this.nextSeq
    let acked = state?.acked ?? 0
    if (acked > lastSeq) {
      log.warn('checkpoint is ahead of the data; resuming from the last record on disk', { checkpoint: acked, lastSeq })
      acked = lastSeq
    }
    if (state && floor > this.durable) {
      // Seqs up to the floor were written, but the last segment ends earlier and could not carry
      // the lost count (it was sealed, quarantined or removed): count them now; this run's readers
      // skip them. (A restart before new records are written counts them again.)
      const first = Math.max(this.durable, state.acked) + 1
      if (first <= floor) {
        this.lostTail = { first, last: floor }
        lostCounted += floor - first + 1
        log.warn('records acknowledged to devices are missing from the end of the log (power loss under --fsync batch|none?); counted as lost (power_loss)', {
          records: floor - first + 1,
          firstSeq: first,
          lastSeq: floor,
          lastOnDisk: this.durable,
        })
      }
    }
    if (lostCounted > 0) this.opts.metrics.drops.inc(lostCounted, { reason: 'power_loss' })
    this.ackedSeq = Math.max(acked, head - 1)
    // A new data directory starts at a random epoch: a gateway that keeps its --gateway-id but
    // loses its data directory (or a second gateway given the same id) must not reuse message ids
    // (`<gateway-id>:<epoch>:<seq>`) that JetStream may still hold in its duplicate window.
    this.epochValue = maxEpoch > 0 ? maxEpoch + 1 : randomInt(1, 2 ** 31)
    if (state && !state.clean) log.info('previous run did not shut down cleanly; recovered', { lastSeq, acked: this.ackedSeq })
    if (!checkpoint.allocated) log.warn('disk full: the checkpoint file could not be allocated; checkpoint writes may fail until space returns')
    await this.writeCheckpoint(false).catch((err: unknown) => {
      // Not fatal: the previous checkpoint stays valid (a seq floor no higher than the data's).
      if (!isEnospc(err)) throw err
      log.warn('disk full: could not write the checkpoint at start; retried with the next one', { error: err })
    })
    this.recovery = {
      segments: this.segments.length,
      scannedSegments: scanned,
      truncatedBytes,
      damagedRecords: damaged,
      quarantined,
      durationMs: Date.now() - started,
    }
    // The new segment (with this start's epoch) is created by the first append, not here: a
    // restart without traffic must not evict anything from a full log to make room for it.
  }

  // ---------------------------------------------------------------- writing

  /**
   * Appends one record. Resolves with its seq once stored under the fsync policy; rejects with
   * LogFullError (full under discard "new"), LogIoError or LogClosedError. Appends are stored in
   * call order.
   */
  append(body: Uint8Array): Promise<number> {
    if (this.shut) return Promise.reject(new LogClosedError())
    if (this.failed) return Promise.reject(new LogIoError('ring log failed earlier; restart to recover', { cause: this.failed }))
    if (body.length === 0 || body.length > this.opts.maxRecordBytes) {
      return Promise.reject(new FerryError('FERRY_ERR_LOG_RECORD_TOO_LARGE', `record of ${body.length} bytes; accepted 1..${this.opts.maxRecordBytes}`))
    }
    return new Promise<number>((resolve, reject) => {
      this.pending.push({ body, resolve, reject })
      this.pendingBytes += body.length
      this.schedule()
    })
  }

  private schedule(): void {
    if (this.writing || this.scheduled) return
    this.scheduled = true
    // Group commit: everything appended in this turn of the event loop joins one write.
    queueMicrotask(() => {
      this.scheduled = false
      void this.pump()
    })
  }

  private async pump(): Promise<void> {
    if (this.writing) return
    this.writing = true
    try {
      while (this.pending.length > 0 && !this.failed) {
        // Between batches: let a caller waiting for the writer (an expiry reclaim, a shared bound
        // sealing this log's segment) have its turn.
        if (this.writerQueue.length > 0) {
          await this.yieldWriter()
          if (this.pending.length === 0 || this.failed) break
        }
        if (this.diskFullSince > 0 && performance.now() < this.diskFullRetryAt) {
          this.rejectPending(
            new LogFullError(this.fullReason === 'no_descriptors' ? 'no file descriptors (EMFILE); record not stored' : 'disk full (ENOSPC); record not stored', true),
            this.fullReason,
          )
          break
        }
        const first = this.pending[0]!
        if (!this.active || this.active.seg.size + frameBytes(first.body.length) > this.capacity) {
          try {
            await this.roll()
          } catch (err) {
            if (err instanceof LogFullError) {
              if (err.diskFull) this.enterDiskFull(err)
              this.rejectPending(err, err instanceof NoDescriptorsError ? 'no_descriptors' : err.diskFull ? 'disk_full' : 'discard_new')
              break
            }
            this.fail(err, 'starting a new segment')
            break
          }
        }
        const active = this.active!
        let bytes = 0
        let n = 0
        while (n < this.pending.length) {
          const f = frameBytes(this.pending[n]!.body.length)
          if (active.seg.size + bytes + f > this.capacity || (n > 0 && bytes + f > this.maxBatchBytes)) break
          bytes += f
          n++
        }
        const bound = this.opts.bound
        if (bound && !bound.tryReserve(this, bytes)) {
          // A shared bound counts every write: room is made first (this log parked: the bound may
          // seal its active segment meanwhile, to evict it; then the batch goes to a new segment).
          try {
            await this.parkedOn(() => bound.makeRoom(this, bytes))
          } catch (err) {
            if (err instanceof LogFullError) {
              if (err.diskFull) this.enterDiskFull(err)
              this.rejectPending(err, err.diskFull ? 'disk_full' : 'discard_new')
              break
            }
            this.fail(err, 'making room in the shared bound')
            break
          }
          if (this.active !== active) {
            this.boundReserved -= bytes
            continue
          }
        }
        try {
          if (!(await this.writeBatch(active, n, bytes))) break
        } finally {
          if (bound) this.boundReserved -= bytes
        }
      }
    } finally {
      this.releaseWriter()
    }
  }

  /**
   * Writes the first `n` pending appends (`bytes` of frames) to `active` and settles them. False
   * when the pump must stop (the log failed); true to go on (also after a batch refused or put back
   * on a full disk).
   */
  private async writeBatch(active: { seg: SegmentInfo; fd: number }, n: number, bytes: number): Promise<boolean> {
    const batch = this.pending.splice(0, n)
    let buf: Buffer
    if (this.memoryTailBytes > 0) buf = this.tailBuffer(bytes) // kept by the tail and readers' views: never reused
    else {
      if (this.arena.length < bytes) this.arena = Buffer.allocUnsafe(Math.max(bytes, Math.min(this.maxBatchBytes, 64 * 1024)))
      buf = this.arena.subarray(0, bytes)
    }
    const offset = active.seg.size
    const firstSeq = this.nextSeq
    const now = Date.now()
    const expiryOf = this.opts.expiryOf
    let maxExpiry = -Infinity
    let at = 0
    for (let i = 0; i < batch.length; i++) {
      const b = batch[i]!
      this.pendingBytes -= b.body.length
      at += writeFrame(buf, at, TYPE_DATA, firstSeq + i, now, b.body)
      if (expiryOf) maxExpiry = Math.max(maxExpiry, expiryOf(b.body))
    }
    const lastSeq = firstSeq + batch.length - 1
    try {
      await writeFully(this.fs, active.fd, buf, active.seg.size)
    } catch (err) {
      if (!isEnospc(err)) {
        for (const b of batch) b.reject(new LogIoError('write failed; batch not stored', { cause: err }))
        this.fail(err, `write to ${path.basename(active.seg.path)}`)
        return false
      }
      // Disk full: undo the partial write, make room if possible and try the batch again.
      try {
        await this.fs.ftruncate(active.fd, active.seg.size)
      } catch (terr) {
        for (const b of batch) b.reject(new LogIoError('write failed; batch not stored', { cause: err }))
        this.fail(terr, `truncating ${path.basename(active.seg.path)} after ENOSPC`)
        return false
      }
      let reclaimed: boolean
      try {
        reclaimed = await this.reclaim()
      } catch (rerr) {
        for (const b of batch) b.reject(new LogIoError('write failed; batch not stored', { cause: err }))
        this.fail(rerr, 'deleting segments to make room on a full disk')
        return false
      }
      if (reclaimed) {
        this.pending.unshift(...batch)
        for (const b of batch) this.pendingBytes += b.body.length
        return true
      }
      const full = new LogFullError('disk full (ENOSPC); record not stored', true)
      this.enterDiskFull(err)
      this.countRefused(batch.length, 'disk_full')
      for (const b of batch) b.reject(full)
      return true
    }
    if (this.opts.fsync === 'always') {
      const t0 = performance.now()
      try {
        await this.fs.fdatasync(active.fd)
      } catch (err) {
        for (const b of batch) b.reject(new LogIoError('fdatasync failed; batch not stored', { cause: err }))
        this.fail(err, `fdatasync of ${path.basename(active.seg.path)}`)
        return false
      }
      this.opts.metrics.logFsyncLatency.observe((performance.now() - t0) / 1000)
    }
    this.nextSeq = lastSeq + 1
    active.seg.size += bytes
    active.seg.lastSeq = lastSeq
    if (expiryOf) active.seg.maxExpiresAtMs = Math.max(active.seg.maxExpiresAtMs ?? -Infinity, maxExpiry)
    this.noteRecordAt(active.seg, firstSeq, offset)
    if (this.memoryTailBytes > 0) this.keepInTail({ seg: active.seg, firstSeq, lastSeq, ts: now, frames: buf, offset })
    this.opts.metrics.logAppended.inc(batch.length)
    this.opts.metrics.logAppendedBytes.inc(bytes)
    if (this.opts.fsync !== 'batch') this.setDurable(lastSeq, active.seg.size)
    if (this.diskFullSince > 0) this.leaveDiskFull()
    for (let i = 0; i < batch.length; i++) batch[i]!.resolve(firstSeq + i)
    return true
  }

  /**
   * Runs `fn` as the log's only writer: no batch is written meanwhile (the pump hands the writer
   * over between batches). Appends made meanwhile wait and are written after.
   */
  private async withWriter<T>(fn: () => Promise<T>): Promise<T> {
    if (this.writing) await new Promise<void>((resolve) => this.writerQueue.push(resolve))
    else this.writing = true
    try {
      return await fn()
    } finally {
      this.releaseWriter()
    }
  }

  /** The pump, between batches, lets the waiting callers run first and takes the writer back after them. */
  private async yieldWriter(): Promise<void> {
    const next = this.writerQueue.shift()
    if (!next) return
    await new Promise<void>((resolve) => {
      this.writerQueue.push(resolve)
      next()
    })
  }

  /** Hands the writer to the next caller waiting for it, or frees it (and writes what was appended meanwhile). */
  private releaseWriter(): void {
    const next = this.writerQueue.shift()
    if (next) {
      next() // `writing` stays true: the writer changes hands
      return
    }
    this.writing = false
    if (this.pending.length > 0 && !this.failed) this.schedule()
    else if (this.pending.length === 0) this.notifyIdle()
  }

  /** Waits on the shared bound with the writer held, at a point where the bound may seal the active segment. */
  private async parkedOn<T>(fn: () => Promise<T>): Promise<T> {
    this.parked++
    // A bound waiting (with its lock held) to seal the active segment may do so now: this holder
    // waits for that lock and would never hand the writer over.
    const waiters = this.parkWaiters
    this.parkWaiters = []
    for (const w of waiters) w()
    try {
      return await fn()
    } finally {
      this.parked--
    }
  }

  /** Syncs the segment directory after a deletion; without descriptors the sync is owed to the next segment start. */
  private async syncDirAfterDelete(): Promise<void> {
    try {
      await this.fs.fsyncDir(this.segDir)
    } catch (err) {
      if (!isNoDescriptors(err)) throw err
      if (!this.dirSyncOwed) this.opts.logger.warn('no file descriptors to sync the segment directory after a deletion; the next segment start syncs it', { error: errCode(err) })
      this.dirSyncOwed = true
    }
  }

  /** The disk is full (or no descriptors are left) and nothing could be freed: refuse appends for a while (logged once per episode). */
  private enterDiskFull(err: unknown): void {
    const now = performance.now()
    this.diskFullRetryAt = now + (this.opts.diskFullRetryMs ?? 1000)
    const reason = err instanceof NoDescriptorsError || isNoDescriptors(err) ? 'no_descriptors' : 'disk_full'
    if (this.diskFullSince > 0 && reason === this.fullReason) return
    this.fullReason = reason
    if (this.diskFullSince === 0) this.diskFullRefused = 0
    this.diskFullSince = now
    if (reason === 'no_descriptors') {
      this.opts.logger.error('no file descriptors (EMFILE/ENFILE) for a new segment: publishes are refused (no PUBACK) until one can be opened; forwarding goes on. Lower --max-connections or raise the limit (ulimit -n, LimitNOFILE=)', {
        dir: this.opts.dir,
        error: err instanceof NoDescriptorsError ? err.errno : errCode(err),
      })
      return
    }
    this.opts.logger.error('disk full (ENOSPC): publishes are refused (no PUBACK) until space returns; forwarding goes on, and forwarded segments are deleted as it does', {
      dir: this.opts.dir,
      error: errCode(err),
    })
  }

  private leaveDiskFull(): void {
    this.opts.logger.warn(this.fullReason === 'no_descriptors' ? 'file descriptors available again: publishes are accepted' : 'disk space available again: publishes are accepted', {
      fullForMs: Math.round(performance.now() - this.diskFullSince),
      refused: this.diskFullRefused,
    })
    this.diskFullSince = 0
    this.diskFullRetryAt = 0
  }

  /** Makes room on a full disk: forwarded segments first, then (discard "old") the oldest segment. */
  private async reclaim(): Promise<boolean> {
    const bound = this.opts.bound
    if (bound) return this.parkedOn(() => bound.reclaimDiskFull(this))
    if (await this.freeForwarded()) return true
    if (this.opts.discard === 'old') return this.evictOldest('disk full (ENOSPC)')
    return false
  }

  /** Stops the log for good after an I/O error it cannot trust itself to recover from (fsyncgate). */
  private fail(err: unknown, what: string): void {
    const cause = err instanceof Error ? err : new Error(String(err))
    this.failed = new LogIoError(`${what} failed: ${errCode(err)}`, { cause })
    this.opts.logger.error('ring log I/O failed; no more appends are accepted. Restart to recover from disk', { failed: what, error: err })
    this.stopped.resolve(this.failed)
    this.rejectPending(new LogIoError('ring log failed', { cause: err }))
    if (this.active) {
      const fd = this.active.fd
      this.active = undefined
      void this.fs.close(fd).catch(() => {})
    }
    this.wake()
    this.notifyIdle()
  }

  private countRefused(records: number, reason: RefusalReason): void {
    if (records === 0) return
    this.opts.metrics.drops.inc(records, { reason })
    if (reason !== 'discard_new') this.diskFullRefused += records // logged when the episode ends
    else this.opts.logger.warn('log full: appends refused (discard "new")', { records })
  }

  private rejectPending(err: Error, reason?: RefusalReason): void {
    const p = this.pending
    this.pending = []
    this.pendingBytes = 0
    if (reason) this.countRefused(p.length, reason)
    for (const a of p) a.reject(err)
  }

  /**
   * Seals the active segment (if any) and starts a new one, making room first. A full disk
   * (ENOSPC) here is not fatal: partial writes are undone, room is made as on a write, and
   * LogFullError (diskFull) refuses the batch when none can be made.
   */
  private async roll(): Promise<void> {
    for (;;) {
      try {
        await this.rollOnce()
        return
      } catch (err) {
        // Deleting (or evicting) segments frees no descriptors: a NoDescriptorsError goes straight to the refusal.
        if (!(err instanceof LogFullError) || !err.diskFull || err instanceof NoDescriptorsError || !(await this.reclaim())) throw err
      }
    }
  }

  /**
   * Deletes forwarded segments (all but the active one), oldest first; true when any was deleted.
   * Concurrent callers (the pump on ENOSPC, an ack during a full disk) share one run and its result.
   */
  private freeForwarded(): Promise<boolean> {
    this.freeRun ??= this.freeForwardedOnce().finally(() => (this.freeRun = undefined))
    return this.freeRun
  }

  private async freeForwardedOnce(): Promise<boolean> {
    let freed = 0
    while (this.segments.length > 0 && this.segments[0] !== this.active?.seg && this.segments[0]!.lastSeq <= this.ackedSeq) {
      if (this.segments.length === 1) {
        // The last segment on disk (sealed by a roll whose new segment could not be created):
        // after it is gone only the checkpoint's seq floor keeps seqs from being reused at the next
        // start, so that floor must be current first. (The checkpoint never needs new blocks.)
        const ok = await this.writeCheckpoint(false).then(() => true, () => false)
        if (!ok || this.segments.length !== 1 || this.segments[0]!.lastSeq > this.ackedSeq) break
      }
      // Removed from the list before the await, so a concurrent caller never picks it again.
      const oldest = this.segments.shift()!
      try {
        await this.unlinkSegment(oldest)
      } catch (err) {
        this.segments.unshift(oldest) // still on disk: keep tracking it
        throw err
      }
      freed++
      this.diskFullRetryAt = 0 // space came back: the next append tries at once
    }
    if (freed > 0) {
      await this.syncDirAfterDelete()
      this.opts.logger.info('disk full: deleted forwarded segments to make room', { segments: freed })
      this.checkpointIfMoved()
    }
    return freed > 0
  }

  private async unlinkSegment(seg: SegmentInfo): Promise<void> {
    try {
      await this.fs.unlink(seg.path)
    } catch (err) {
      if ((err as { code?: unknown }).code !== 'ENOENT') throw err
    }
  }

  /**
   * Evicts the oldest segment although not all of it was forwarded (discard "old"). Records the
   * forwarder has not read yet are counted as `discard_old` drops and logged with their seq range;
   * those it already read are in its window and still forwarded (see the forwarder's close).
   * `allowLast`: also the last segment on disk (a shared bound), after a checkpoint with the seq floor.
   */
  private async evictOldest(why: string, allowLast = false): Promise<boolean> {
    const oldest = this.segments[0]
    // Never the last segment on disk: its seqs keep the next start from reusing them.
    if (!oldest || oldest === this.active?.seg || (this.segments.length === 1 && !allowLast)) return false
    const d = await this.dropSegment(oldest, 'discard_old')
    if (d === undefined) return false
    if (d !== 'forwarded') {
      this.opts.logger.warn(`${why}: evicted the oldest segment with records not yet forwarded (discard "old")`, {
        segment: path.basename(oldest.path),
        records: d.lost,
        firstSeq: d.from,
        lastSeq: d.lastSeq,
        // Read by the forwarder before the eviction: still forwarded from its window, not counted.
        inFlight: d.inFlight,
      })
    }
    return true
  }

  /**
   * Removes `seg`, the oldest segment (not the active one), from the log and deletes its file. Its
   * records not yet acknowledged are passed by the ack position: those the forwarder has not read
   * are counted as dropped for `reason`; those in its window are remembered (evictedUncounted) and
   * counted by the forwarder if never acknowledged. Undefined when `seg` is no longer the oldest, or
   * it is the last segment on disk and the checkpoint holding the seq floor could not be written
   * first; 'forwarded' when it held no unacknowledged record.
   */
  private async dropSegment(seg: SegmentInfo, reason: SegmentDropReason): Promise<SegmentDrop | 'forwarded' | undefined> {
    if (this.segments[0] !== seg || seg === this.active?.seg) return undefined
    if (this.segments.length === 1) {
      // After it is gone only the checkpoint's seq floor keeps seqs from being reused at the next
      // start, so that floor must be current first. (The checkpoint never needs new blocks.)
      const ok = await this.writeCheckpoint(false).then(
        () => true,
        () => false,
      )
      if (!ok || this.segments[0] !== seg || this.segments.length !== 1 || seg === this.active?.seg) return undefined
    }
    this.segments.shift()
    let result: SegmentDrop | 'forwarded' = 'forwarded'
    if (seg.lastSeq > this.ackedSeq) {
      const unacked = Math.max(this.ackedSeq + 1, seg.baseSeq)
      const from = Math.max(unacked, this.readPosition)
      if (from > unacked) {
        this.uncountedEvictions.push({ from: unacked, to: Math.min(from, seg.lastSeq + 1) - 1, reason })
        if (this.uncountedEvictions.length > 64) this.uncountedEvictions.shift()
      }
      const lost = Math.max(0, seg.lastSeq - seg.lostSeqs - from + 1)
      this.ackedSeq = seg.lastSeq
      this.trimTail()
      if (lost > 0) this.opts.metrics.drops.inc(lost, { reason })
      result = { lost, from, lastSeq: seg.lastSeq, inFlight: Math.max(0, Math.min(from, seg.lastSeq + 1) - unacked) }
    }
    await this.unlinkSegment(seg)
    await this.syncDirAfterDelete()
    this.wake()
    this.checkpointIfMoved()
    return result
  }

  /** The seal record of `seg` (see format.ts), with the segment's expiry when the log tracks it. */
  private sealFrame(seg: SegmentInfo): Buffer {
    const seal = Buffer.alloc(SEAL_FRAME_BYTES)
    const expiry = this.opts.expiryOf && seg.maxExpiresAtMs !== undefined ? encodeSealExpiry(seg.maxExpiresAtMs) : 0
    writeFrame(seal, 0, TYPE_SEAL, seg.lastSeq, Date.now(), encodeSealBody(seg.baseSeq, seg.lastSeq, seg.lostSeqs), expiry)
    return seal
  }

  /**
   * Seals the active segment and closes it; the next append starts a new one. The caller holds the
   * writer (or the log is parked on the shared bound). ENOSPC: the partial seal is undone, the
   * segment stays active, and LogFullError (diskFull) is thrown.
   */
  private async sealActive(): Promise<void> {
    const active = this.active
    if (!active) return
    const { seg, fd } = active
    const fsys = this.fs
    try {
      await writeFully(fsys, fd, this.sealFrame(seg), seg.size)
    } catch (err) {
      if (!isEnospc(err)) throw err
      await fsys.ftruncate(fd, seg.size) // undo the partial seal; the segment stays active
      throw new LogFullError('disk full (ENOSPC) while sealing a segment; record not stored', true)
    }
    await fsys.fdatasync(fd)
    seg.size += SEAL_FRAME_BYTES
    seg.sealed = true
    this.active = undefined
    await fsys.close(fd)
    // The seal's fdatasync made the whole segment durable (under --fsync batch the interval sync
    // may not have covered its tail yet, and without an active segment it never would).
    this.setDurable(Math.max(this.durable, seg.lastSeq), 0)
  }

  private async rollOnce(): Promise<void> {
    const bound = this.opts.bound
    if (!bound) {
      await this.makeRoom()
      return this.startSegment()
    }
    // The new segment's header and its future seal (the old segment's seal is counted already).
    const need = SEGMENT_HEADER_BYTES + SEAL_FRAME_BYTES
    if (!bound.tryReserve(this, need)) await this.parkedOn(() => bound.makeRoom(this, need))
    try {
      await this.startSegment()
    } finally {
      this.boundReserved -= need
    }
  }

  /** Seals the active segment (if any) and starts a new one (room was made). */
  private async startSegment(): Promise<void> {
    const fsys = this.fs
    await this.sealActive()
    const unsealed = this.unsealedOnDisk && this.segments.includes(this.unsealedOnDisk) ? this.unsealedOnDisk : undefined
    this.unsealedOnDisk = unsealed
    if (unsealed) {
      let ufd: number
      try {
        ufd = await fsys.open(unsealed.path, 'r+')
      } catch (err) {
        if (isNoDescriptors(err)) throw new NoDescriptorsError('sealing a recovered segment', err)
        throw err
      }
      try {
        const seal = this.sealFrame(unsealed)
        try {
          await writeFully(fsys, ufd, seal, unsealed.size)
        } catch (err) {
          if (!isEnospc(err)) throw err
          await fsys.ftruncate(ufd, unsealed.size)
          throw new LogFullError('disk full (ENOSPC) while sealing a recovered segment; record not stored', true)
        }
        await fsys.fdatasync(ufd)
        unsealed.size += SEAL_FRAME_BYTES
        this.unsealedOnDisk = undefined
      } finally {
        await fsys.close(ufd).catch(() => {})
      }
    }
    const base = this.nextSeq
    const p = path.join(this.segDir, segmentFileName(base))
    let fd: number | undefined
    try {
      fd = await fsys.open(p, 'wx')
      const header = encodeSegmentHeader({ baseSeq: base, createdAt: Date.now(), epoch: this.epochValue, logId: this.logId })
      await writeFully(fsys, fd, header, 0)
      await fsys.fdatasync(fd)
      // The directory entry is the state: make it durable before any record in it is acknowledged.
      await fsys.fsyncDir(this.segDir)
    } catch (err) {
      if (fd !== undefined) {
        await fsys.close(fd).catch(() => {})
        await fsys.unlink(p).catch(() => {})
      }
      if (isEnospc(err)) throw new LogFullError('disk full (ENOSPC) while starting a segment; record not stored', true)
      if (isNoDescriptors(err)) throw new NoDescriptorsError('starting a segment', err)
      throw err
    }
    this.dirSyncOwed = false
    const seg: SegmentInfo = { baseSeq: base, epoch: this.epochValue, path: p, lastSeq: base - 1, size: SEGMENT_HEADER_BYTES, sealed: false, lostSeqs: 0 }
    if (this.opts.expiryOf) seg.maxExpiresAtMs = -Infinity
    this.segments.push(seg)
    this.active = { seg, fd }
    this.durableSize = SEGMENT_HEADER_BYTES
  }

  /** Deletes or evicts the oldest segments until a new full segment fits in maxBytes (less the data directory's other files). */
  private async makeRoom(): Promise<void> {
    for (;;) {
      const used = this.segments.reduce((s, g) => s + g.size, 0) + (this.active ? SEAL_FRAME_BYTES : 0)
      if (used + this.opts.segmentBytes + this.reserveBytes <= this.opts.maxBytes) return
      const oldest = this.segments[0]
      if (!oldest || oldest === this.active?.seg) return // cannot happen with maxBytes >= 2 segments + reserveBytes
      if (oldest.lastSeq > this.ackedSeq) {
        if (this.opts.discard === 'new') {
          throw new LogFullError(`ring log is full (${used} of ${this.opts.maxBytes} bytes) and the oldest segment is not yet forwarded`)
        }
        await this.evictOldest('log full')
        continue
      }
      // No checkpoint write first: recovery treats an ack position below the oldest segment as
      // "all before it forwarded", and on a full disk a checkpoint write must not hold this up.
      this.segments.shift()
      await this.unlinkSegment(oldest)
      await this.syncDirAfterDelete()
      this.wake()
      this.checkpointIfMoved()
    }
  }

  private setDurable(seq: number, size: number): void {
    this.durable = seq
    this.durableSize = size
    this.wake()
  }

  private wake(): void {
    const w = this.dataWaiter
    this.dataWaiter = undefined
    w?.resolve()
  }

  private notifyIdle(): void {
    const w = this.idleWaiters
    this.idleWaiters = []
    for (const f of w) f()
  }

  /** fsync "batch": one fdatasync per interval when something was written. */
  private async syncTick(): Promise<void> {
    const active = this.active
    if (this.syncing || !active || this.failed) return
    const seq = active.seg.lastSeq
    const size = active.seg.size
    if (seq <= this.durable) return
    this.syncing = true
    const t0 = performance.now()
    try {
      await this.fs.fdatasync(active.fd)
      this.opts.metrics.logFsyncLatency.observe((performance.now() - t0) / 1000)
      if (this.active === active) this.setDurable(seq, size)
      else this.setDurable(Math.max(this.durable, seq), this.durableSize)
      // The seq floor follows the sync, so a power loss that cuts the tail is found and counted.
      this.checkpointIfMoved()
    } catch (err) {
      this.fail(err, `fdatasync of ${path.basename(active.seg.path)}`)
    } finally {
      this.syncing = false
    }
  }

  // ---------------------------------------------------------------- cursor and checkpoint

  /** Marks every seq <= `seq` as acknowledged upstream. Late acks below the current position are ignored. */
  ack(seq: number): void {
    if (seq > this.ackedSeq) {
      this.ackedSeq = Math.min(seq, this.durable)
      this.trimTail()
    }
    if (this.diskFullSince > 0 && !this.freeRun) {
      const oldest = this.segments[0]
      if (oldest && oldest !== this.active?.seg && oldest.lastSeq <= this.ackedSeq) {
        // The drain made a segment deletable: give its space back and end the wait at once
        // (freeForwarded clears the retry time as it deletes).
        this.freeForwarded().catch((err: unknown) => this.fail(err, 'deleting forwarded segments on a full disk'))
      }
    }
    // Also checkpoint every CHECKPOINT_EVERY acks, so a fast crash loop during a big drain does
    // not resend everything since the last timed checkpoint.
    if (this.ackedSeq - this.checkpointedAcked >= CHECKPOINT_EVERY && !this.checkpointing && performance.now() >= this.checkpointRetryAt) {
      this.checkpointIfMoved()
    }
  }

  /** Writes a checkpoint (in the background) when the ack position or the seq floor moved. */
  private checkpointIfMoved(): void {
    const moved = this.ackedSeq !== this.checkpointedAcked || this.nextSeq - 1 !== this.checkpointedFloor
    if (moved && this.checkpointing) this.checkpointAgain = true
    if (moved && !this.failed && !this.shut && !this.checkpointing) {
      this.checkpointing = true
      this.writeCheckpoint(false)
        .catch((err: unknown) => {
          // After a failure only the timer retries: no write (and log line) per ack, and one
          // line a minute while it keeps failing.
          const now = performance.now()
          this.checkpointRetryAt = now + this.opts.checkpointIntervalMs
          this.checkpointFailures++
          if (now >= this.checkpointWarnAt) {
            this.checkpointWarnAt = now + 60_000
            this.opts.logger.error('checkpoint write failed; retrying (nothing is deleted or lost for it)', { error: err, failures: this.checkpointFailures })
          }
        })
        .finally(() => {
          this.checkpointing = false
          // A sync (or an ack) wanted one meanwhile: the seq floor must not wait for the timer.
          if (this.checkpointAgain && performance.now() >= this.checkpointRetryAt) {
            this.checkpointAgain = false
            this.checkpointIfMoved()
          }
        })
    }
  }

  private writeCheckpoint(clean: boolean): Promise<void> {
    const state: CheckpointState = {
      acked: this.ackedSeq,
      seqFloor: this.nextSeq - 1,
      epoch: this.epochValue,
      logId: this.logId,
      clean,
    }
    const run = this.checkpointChain.then(async () => {
      await this.checkpoint.write(state)
      this.checkpointedAcked = state.acked
      this.checkpointedFloor = state.seqFloor
      if (this.checkpointFailures > 0) {
        this.opts.logger.info('checkpoint written again', { after: this.checkpointFailures })
        this.checkpointFailures = 0
        this.checkpointWarnAt = 0
      }
    })
    this.checkpointChain = run.catch(() => {})
    return run
  }

  // ---------------------------------------------------------------- reading (for LogReader)

  /** Resolves when a record with seq > `seq` is durable, or the log closed or failed. */
  waitForData(seq: number): Promise<void> {
    if (this.durable > seq || this.shut || this.failed) return Promise.resolve()
    // One shared promise for all waiters: a waiter that gives up (timeout) leaves nothing behind.
    if (!this.dataWaiter) {
      let resolve!: () => void
      const promise = new Promise<void>((r) => (resolve = r))
      this.dataWaiter = { promise, resolve }
    }
    return this.dataWaiter.promise
  }

  /**
   * The forwarder's main reader reports its position: records below it are in the forwarder's
   * window, so an eviction (discard "old") does not count them as dropped.
   */
  noteReadPosition(seq: number): void {
    this.readPosition = seq
  }

  /**
   * True when `seq` was in a segment evicted under discard "old" while the forwarder held it in its
   * window, so the eviction did not count it (the forwarder counts it if it is never acknowledged).
   */
  evictedUncounted(seq: number): boolean {
    return this.uncountedEvictions.some((r) => seq >= r.from && seq <= r.to)
  }

  /**
   * Why `seq` left the log uncounted while in the forwarder's window (see evictedUncounted):
   * 'discard_old' (evicted) or 'expired' (its segment expired); undefined when it did not.
   */
  uncountedDropReason(seq: number): SegmentDropReason | undefined {
    return this.uncountedEvictions.find((r) => seq >= r.from && seq <= r.to)?.reason
  }

  // ---------------------------------------------------------------- expiry

  /**
   * Reclaims whole segments, from the oldest, that hold only acknowledged or expired records (with
   * {@link RingLogOptions.expiryOf}; on a timer and at open). The records not yet acknowledged are
   * counted as drops{reason="expired"} and logged with their seq range; the ack position passes them
   * as an eviction does. The active segment is rolled (sealed) when it is entirely expired and
   * everything before it goes too. Wall clock (Date.now()): expiry times are absolute.
   */
  private async reclaimExpired(): Promise<void> {
    if (!this.opts.expiryOf || this.reclaimingExpired || this.shut || this.failed) return
    this.reclaimingExpired = true
    try {
      if (!(await this.expiryWork(Date.now()))) return
      await this.withWriter(async () => {
        if (this.shut || this.failed) return
        const bound = this.opts.bound
        if (bound) await this.parkedOn(() => bound.exclusive(() => this.reclaimExpiredNow(Date.now())))
        else await this.reclaimExpiredNow(Date.now())
      })
    } catch (err) {
      if (err instanceof LogFullError) return // no room for a seal on a full disk: the next pass tries again
      this.fail(err, 'reclaiming expired segments')
    } finally {
      this.reclaimingExpired = false
    }
  }

  /**
   * True when the oldest segment with records not yet acknowledged has expired entirely (for the
   * active segment: only when it is the last one and holds records). Learns, by a scan, the expiry
   * of segments sealed before expiry tracking along the way, as far as they turn out expired (each
   * once per run; no lock held).
   */
  private async expiryWork(now: number): Promise<boolean> {
    let work = false
    for (const s of [...this.segments]) {
      if (s.lastSeq <= this.ackedSeq) continue
      if (s === this.active?.seg) return work || (s.lastSeq >= s.baseSeq && (s.maxExpiresAtMs ?? Infinity) <= now)
      if (s.maxExpiresAtMs === undefined) await this.learnExpiry(s)
      if (!((s.maxExpiresAtMs ?? Infinity) <= now)) return work
      work = true
    }
    return work
  }

  /** Scans a sealed segment whose seal carries no expiry for the latest expiry of its records. */
  private async learnExpiry(seg: SegmentInfo): Promise<void> {
    const expiryOf = this.opts.expiryOf
    if (!expiryOf) return
    let fd: number
    try {
      fd = await this.fs.open(seg.path, 'r')
    } catch (err) {
      const code = (err as { code?: unknown }).code
      if (code === 'ENOENT' || isNoDescriptors(err)) return // deleted meanwhile, or tried again at the next pass
      throw err
    }
    try {
      const sc = new SegmentScanner(this.fs, fd, { afterSeq: seg.baseSeq - 1, limit: () => seg.size, chunkBytes: this.readChunkBytes, maxBodyBytes: MAX_BODY_BYTES })
      let max = -Infinity
      for (let r = await sc.next(); r; r = await sc.next()) max = Math.max(max, expiryOf(r.body))
      seg.maxExpiresAtMs = max
    } finally {
      await this.fs.close(fd).catch(() => {})
    }
  }

  /** The reclaim itself, with the writer (and a shared bound's lock) held. */
  private async reclaimExpiredNow(now: number): Promise<void> {
    const drop: SegmentInfo[] = []
    let upTo = 0
    for (let i = 0; i < this.segments.length; i++) {
      const s = this.segments[i]!
      if (s === this.active?.seg) {
        // The segment being written, entirely expired and the last one: rolled, so it can go too.
        if (i === this.segments.length - 1 && s.lastSeq >= s.baseSeq && s.lastSeq > this.ackedSeq && (s.maxExpiresAtMs ?? Infinity) <= now) {
          await this.sealActive()
          drop.push(s)
          upTo = drop.length
        }
        break
      }
      if (s.lastSeq <= this.ackedSeq) drop.push(s)
      else if ((s.maxExpiresAtMs ?? Infinity) <= now) {
        drop.push(s)
        upTo = drop.length
      } else break
    }
    // Acknowledged segments go only along with expired ones after them (as before, the log keeps
    // forwarded segments until it needs their room).
    let records = 0
    let firstSeq = 0
    let lastSeq = 0
    let inFlight = 0
    let segments = 0
    for (const s of drop.slice(0, upTo)) {
      const d = await this.dropSegment(s, 'expired')
      if (d === undefined) break
      segments++
      if (d === 'forwarded') continue
      if (d.lost > 0 && firstSeq === 0) firstSeq = d.from
      if (d.lost > 0) lastSeq = d.lastSeq
      records += d.lost
      inFlight += d.inFlight
    }
    if (records > 0 || inFlight > 0) {
      this.opts.logger.warn('segments expired before they were forwarded: deleted, their records dropped (expired)', {
        segments,
        records,
        firstSeq,
        lastSeq,
        // Read by the forwarder before: not counted here (it counts them if they are never acknowledged).
        inFlight,
      })
    }
  }

  // ---------------------------------------------------------------- shared bound (BoundMember)

  boundUsageBytes(): number {
    let used = this.boundReserved
    for (const s of this.segments) used += s.size
    if (this.active) used += SEAL_FRAME_BYTES
    return used
  }

  hasUnackedOnDisk(): boolean {
    return this.segments.some((s) => s.lastSeq > this.ackedSeq)
  }

  oldestIsSealed(): boolean {
    const oldest = this.segments[0]
    return oldest !== undefined && oldest !== this.active?.seg
  }

  async deleteOldestForwarded(): Promise<boolean> {
    const oldest = this.segments[0]
    if (!oldest || oldest === this.active?.seg || oldest.lastSeq > this.ackedSeq) return false
    return (await this.dropSegment(oldest, 'discard_old')) !== undefined
  }

  evictOldestForBound(why: string): Promise<boolean> {
    return this.evictOldest(why, true)
  }

  async sealActiveForBound(): Promise<void> {
    const seal = async (): Promise<void> => {
      const a = this.active
      if (this.shut || this.failed || !a || this.segments[0] !== a.seg || a.seg.lastSeq <= this.ackedSeq) return
      try {
        await this.sealActive()
      } catch (err) {
        if (err instanceof LogFullError) throw err
        this.fail(err, `sealing ${path.basename(a.seg.path)} to evict it`)
      }
    }
    // Parked: the writer's holder waits on the bound at a point where sealing is safe.
    if (this.parked > 0) return seal()
    if (!this.writing) return this.withWriter(seal)
    // The writer is busy: wait for it, or for its holder to park on the bound (it then waits for the
    // lock our caller holds, and would never hand the writer over), whichever comes first.
    let handed = false
    const onWriter = (): void => {
      handed = true
      wake()
    }
    let wake: () => void = () => {}
    await new Promise<void>((resolve) => {
      wake = resolve
      this.writerQueue.push(onWriter)
      this.parkWaiters.push(resolve)
    })
    if (handed) {
      this.parkWaiters = this.parkWaiters.filter((w) => w !== wake)
      try {
        return await seal()
      } finally {
        this.releaseWriter()
      }
    }
    this.writerQueue = this.writerQueue.filter((w) => w !== onWriter)
    return seal()
  }

  get isShut(): boolean {
    return this.shut
  }

  reserveForBound(bytes: number): void {
    this.boundReserved += bytes
  }

  /** How long the disk has been full with appends refused, in ms (0: not full). */
  get diskFullForMs(): number {
    return this.diskFullSince > 0 ? Math.max(1, performance.now() - this.diskFullSince) : 0
  }

  /** Seqs in [from, to] not known to be lost to a power loss (those were counted at open). */
  unaccountedGap(from: number, to: number): number {
    const n = to - from + 1
    const t = this.lostTail
    if (!t || n <= 0) return Math.max(0, n)
    return n - Math.max(0, Math.min(to, t.last) - Math.max(from, t.first) + 1)
  }

  /**
   * A new buffer for a batch the tail keeps. Not from Node's shared Buffer pool (allocUnsafe below
   * Buffer.poolSize / 2, 32 KiB on Node 26): a small batch would keep its whole pool slab, with
   * whatever else the process allocated there, alive while the tail or a reader holds it. Small
   * batches are carved one after the other from the tail's own slabs instead (one buffer each would
   * cost more than a one-record batch's frame), so a slab holds batches only and is freed with the
   * last of them; what the tail pins beyond its bound is at most about two slabs.
   */
  private tailBuffer(bytes: number): Buffer {
    const slabBytes = Math.min(64 * 1024, Math.max(4096, this.memoryTailBytes >>> 4))
    if (bytes > slabBytes >>> 3) return Buffer.allocUnsafeSlow(bytes)
    if (this.slabAt + bytes > this.slab.length) {
      this.slab = Buffer.allocUnsafeSlow(slabBytes)
      this.slabAt = 0
    }
    const b = this.slab.subarray(this.slabAt, this.slabAt + bytes)
    this.slabAt += bytes
    return b
  }

  /** Adds a written batch to the memory tail and trims the tail to its bound. */
  private keepInTail(b: TailBatch): void {
    this.tail.push(b)
    this.tailBytes += b.frames.length + TAIL_BATCH_OVERHEAD_BYTES
    this.trimTail()
  }

  /**
   * Drops the tail's oldest batches while they are acknowledged (no reader at or above the ack
   * position needs them; this also covers segments evicted or deleted, which are all acknowledged)
   * or the tail is over its bound.
   */
  private trimTail(): void {
    const t = this.tail
    let i = this.tailStart
    while (i < t.length && (t[i]!.lastSeq <= this.ackedSeq || this.tailBytes > this.memoryTailBytes)) {
      this.tailBytes -= t[i]!.frames.length + TAIL_BATCH_OVERHEAD_BYTES
      t[i] = undefined as unknown as TailBatch // let the buffer go now
      i++
    }
    if (i === t.length) {
      this.tail = []
      this.tailStart = 0
    } else if (i > 1024 && i * 2 > t.length) {
      this.tail = t.slice(i)
      this.tailStart = 0
    } else this.tailStart = i
  }

  /** The memory-tail batch holding `seq`, if the tail has it (the caller bounds reads by durableSeq). */
  tailBatchFor(seq: number): TailBatch | undefined {
    const t = this.tail
    let lo = this.tailStart
    let hi = t.length - 1
    if (hi < lo || seq < t[lo]!.firstSeq || seq > t[hi]!.lastSeq) return undefined
    // Usually the newest batch (a reader keeping up): check it first.
    if (seq >= t[hi]!.firstSeq) return t[hi]
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (t[mid]!.lastSeq < seq) lo = mid + 1
      else hi = mid
    }
    return t[lo]
  }

  /** Bytes held by the memory tail, with a fixed overhead per batch (for tests). */
  get memoryTailHeldBytes(): number {
    return this.tailBytes
  }

  /**
   * Remembers that a valid record with `seq` starts at `offset` of `seg` (a record boundary), at
   * most one mark per MARK_EVERY_BYTES of the segment.
   */
  noteRecordAt(seg: SegmentInfo, seq: number, offset: number): void {
    let m = this.marks.get(seg)
    if (!m) this.marks.set(seg, (m = []))
    const n = m.length
    if (n === 0 || seq > m[n - 2]!) {
      if (n === 0 || offset - m[n - 1]! >= MARK_EVERY_BYTES) m.push(seq, offset)
      return
    }
    // Out of order (a reader going over an older part of the segment): insert where it belongs.
    let i = 0
    while (i < n && m[i]! < seq) i += 2
    if (i < n && m[i] === seq) return
    const before = i > 0 ? m[i - 1]! : -Infinity
    const after = i < n ? m[i + 1]! : Infinity
    if (offset - before >= MARK_EVERY_BYTES && after - offset >= MARK_EVERY_BYTES) m.splice(i, 0, seq, offset)
  }

  /** The last known record boundary of `seg` at or before `seq`: where a scan for `seq` may start. */
  startFor(seg: SegmentInfo, seq: number): { seq: number; offset: number } | undefined {
    const m = this.marks.get(seg)
    if (!m) return undefined
    let best = -1
    for (let i = 0; i < m.length && m[i]! <= seq; i += 2) best = i
    return best < 0 ? undefined : { seq: m[best]!, offset: m[best + 1]! }
  }

  /** The segment holding `seq`, or the first one after it; undefined if none. */
  segmentFor(seq: number): SegmentInfo | undefined {
    return this.segments.find((s) => s.lastSeq >= seq || s === this.active?.seg)
  }

  /** Bytes of `seg` that may be read: all of a sealed segment, the durable part of the active one. */
  readableSize(seg: SegmentInfo): number {
    return seg === this.active?.seg ? this.durableSize : seg.size
  }

  isActive(seg: SegmentInfo): boolean {
    return seg === this.active?.seg
  }

  get fsys(): LogFs {
    return this.fs
  }

  // ---------------------------------------------------------------- state

  get headSeq(): number {
    return this.segments[0]?.baseSeq ?? this.nextSeq
  }
  get durableSeq(): number {
    return this.durable
  }
  get acked(): number {
    return this.ackedSeq
  }
  get next(): number {
    return this.nextSeq
  }
  get epoch(): number {
    return this.epochValue
  }
  get sizeBytes(): number {
    return this.segments.reduce((s, g) => s + g.size, 0)
  }
  /** Segment files on disk. */
  get segmentCount(): number {
    return this.segments.length
  }
  get pendingAppendBytes(): number {
    return this.pendingBytes
  }
  /**
   * Bytes of the records after the acknowledged position: whole segments after it, and the
   * segment holding it in proportion to its records still to forward (an estimate: records differ
   * in size).
   */
  backlogBytesEstimate(): number {
    let bytes = 0
    for (const s of this.segments) {
      if (s.lastSeq <= this.ackedSeq) continue
      const records = s.lastSeq - s.baseSeq + 1
      const waiting = s.lastSeq - Math.max(this.ackedSeq, s.baseSeq - 1)
      bytes += records > 0 ? Math.round((s.size * waiting) / records) : 0
    }
    return bytes
  }

  /** The error that stopped the log, if any. */
  get failure(): Error | undefined {
    return this.failed
  }
  /** Snapshot of the segment list (for tools and tests). */
  listSegments(): readonly Readonly<SegmentInfo>[] {
    return this.segments.map((s) => ({ ...s }))
  }

  // ---------------------------------------------------------------- lifecycle

  /** Waits until every append made so far is written (not necessarily acknowledged upstream). */
  async drain(): Promise<void> {
    while (this.pending.length > 0 || this.writing) {
      await new Promise<void>((resolve) => this.idleWaiters.push(resolve))
    }
  }

  /**
   * Flushes, syncs, seals the active segment, writes a clean checkpoint, releases the lock and
   * closes. Idempotent. The deadline is not used: the log always finishes its close (a few writes
   * and syncs), because a sealed segment and a clean checkpoint are what make the next start fast.
   */
  close(_deadline?: Deadline): Promise<void> {
    this.closing ??= this.closeNow().finally(() => this.stopped.resolve())
    return this.closing
  }

  /**
   * Settles once the log stopped: with the error of a failed write or sync (no append is accepted
   * after it; restart to recover from disk), or with undefined after close().
   */
  closed(): Promise<Error | undefined> {
    return this.stopped.promise
  }

  private async closeNow(): Promise<void> {
    await this.drain()
    this.shut = true
    for (const t of this.timers) clearInterval(t)
    this.tail = []
    this.tailStart = 0
    this.tailBytes = 0
    this.slab = Buffer.alloc(0)
    this.rejectPending(new LogClosedError())
    const active = this.active
    // Whether the last segment on disk ends with a real seal (see the clean checkpoint below).
    let sealed = this.unsealedOnDisk === undefined
    if (active && !this.failed && active.seg.lastSeq < active.seg.baseSeq) {
      // Nothing was written in this run: leave no empty segment behind.
      this.active = undefined
      this.segments.pop()
      await this.fs.close(active.fd).catch(() => {})
      await this.fs.unlink(active.seg.path).catch(() => {})
    } else if (active && !this.failed) {
      const { seg, fd } = active
      sealed = false
      try {
        if (this.opts.fsync !== 'always') await this.fs.fdatasync(fd)
        await writeFully(this.fs, fd, this.sealFrame(seg), seg.size)
        await this.fs.fdatasync(fd)
        seg.size += SEAL_FRAME_BYTES
        seg.sealed = true
        this.durable = seg.lastSeq
        sealed = true
      } catch (err) {
        await this.fs.ftruncate(fd, seg.size).catch(() => {}) // no partial seal left behind
        this.opts.logger.error('could not seal the active segment at close; it will be scanned at next start', { error: err })
      }
      this.active = undefined
      await this.fs.close(fd).catch(() => {})
    }
    // "Clean" lets the next start trust the last segment's seal without a scan: only if it has one.
    if (!this.failed) await this.writeCheckpoint(sealed).catch((err: unknown) => this.opts.logger.error('final checkpoint failed', { error: err }))
    await this.checkpoint.close().catch(() => {})
    this.lock?.release()
    this.wake()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
