// Sequential reader of the ring log from a seq onwards, never past the durable seq: from the log's
// memory tail when it still holds the position, else from the segment files in large reads.
import type { RingLog, SegmentInfo, TailBatch } from './ring-log.js'
import { frameBytes, MAX_BODY_BYTES, RECORD_HEADER_BYTES } from './format.js'
import { SegmentScanner } from './scanner.js'

/** One record handed to the forwarder. */
export interface LogRecord {
  readonly seq: number
  /** Epoch of the segment the record was written in (part of its upstream message id). */
  readonly epoch: number
  /** Receive time, ms since the epoch. */
  readonly ts: number
  readonly body: Buffer
}

/** Disk records between two offset marks the reader gives the log (see RingLog.noteRecordAt). */
const MARK_EVERY_BYTES = 256 * 1024

/**
 * Reads records in seq order. Damaged records (bad checksum, torn framing) are skipped and
 * reported to `onDamaged`; records evicted under discard "old" are skipped (the log counted them).
 * Memory is bounded by the read chunk size and what the caller keeps.
 *
 * While the position is inside the log's memory tail (the newest batches, see RingLog's
 * `memoryTailBytes`), records come from there: no read, no checksum (the log wrote those bytes
 * itself; damage on disk is found by a disk read, as before). Anywhere else (behind the tail after an
 * outage or an eviction from it, after a restart) they come from disk, each record's checksum
 * checked once. Both paths have the same bounds (durable seq, head seq), so switching between them
 * neither skips nor repeats a record.
 */
export class LogReader {
  private seg: SegmentInfo | undefined
  private fd: number | undefined
  private scanner: SegmentScanner | undefined
  private nextSeq: number
  /** Where the memory path stopped: the batch, and the byte offset of record `nextSeq` in it. */
  private memBatch: TailBatch | undefined
  private memAt = 0
  private memSeq = 0
  /** File offset of the last mark given to the log by the disk path. */
  private lastMarkAt = -Infinity

  constructor(
    private readonly log: RingLog,
    fromSeq: number,
    /** Called with the number of damaged records skipped (the forwarder counts them as `corrupt` drops). */
    private readonly onDamaged: (records: number, atSeq: number) => void = () => {},
  ) {
    this.nextSeq = fromSeq
  }

  /** Seq of the next record this reader will return. */
  get position(): number {
    return this.nextSeq
  }

  /** Up to `maxRecords` / about `maxBytes` records; empty when nothing durable is left to read now. */
  async read(maxRecords: number, maxBytes: number): Promise<LogRecord[]> {
    const start = this.nextSeq
    try {
      return await this.readFrom(maxRecords, maxBytes)
    } catch (err) {
      // The records collected so far are lost with the exception: rewind, and rescan the segment
      // from its start on the next call, so none of them is skipped.
      this.nextSeq = start
      await this.closeSegment()
      throw err
    }
  }

  private async readFrom(maxRecords: number, maxBytes: number): Promise<LogRecord[]> {
    const out: LogRecord[] = []
    let bytes = 0
    while (out.length < maxRecords && bytes < maxBytes) {
      if (this.nextSeq < this.log.headSeq) {
        // Evicted under discard "old" while we were behind: the log counted those records.
        this.nextSeq = this.log.headSeq
        await this.closeSegment()
      }
      const durable = this.log.durableSeq
      if (this.nextSeq > durable) break
      const batch = this.log.tailBatchFor(this.nextSeq)
      if (batch) {
        if (this.scanner) await this.closeSegment()
        bytes += this.readTail(batch, durable, out, maxRecords, maxBytes - bytes)
        continue
      }
      if (!this.scanner) {
        const seg = this.log.segmentFor(this.nextSeq)
        if (!seg) break
        if (seg.baseSeq > this.nextSeq) {
          // Seqs with no segment: a quarantined segment, or a tail lost to power loss under
          // --fsync batch|none (the seq floor survived in the checkpoint, the records did not).
          this.countCorrupt(this.log.unaccountedGap(this.nextSeq, seg.baseSeq - 1))
          this.nextSeq = seg.baseSeq
          continue
        }
        let fd: number
        try {
          fd = await this.log.fsys.open(seg.path, 'r')
        } catch (err) {
          // Evicted (discard "old") between segmentFor() and open(): the head check above moves on.
          if ((err as { code?: string }).code === 'ENOENT' && this.nextSeq < this.log.headSeq) continue
          throw err
        }
        this.seg = seg
        this.fd = fd
        // Start at the last known record boundary at or before the position (where the memory path
        // stopped, or a mark), not at the segment's start: the records before it need no checksum.
        const mark = this.resumePoint(seg)
        this.memBatch = undefined // (let its buffer go)
        this.lastMarkAt = mark?.offset ?? -Infinity
        this.scanner = new SegmentScanner(this.log.fsys, fd, {
          afterSeq: (mark?.seq ?? seg.baseSeq) - 1,
          ...(mark ? { start: mark.offset, anchorSeq: mark.seq - 1 } : {}),
          limit: () => this.log.readableSize(seg),
          chunkBytes: this.log.readChunkBytes,
          maxBodyBytes: MAX_BODY_BYTES,
        })
      }
      const seg = this.seg!
      const r = await this.scanner.next()
      if (!r) {
        if (this.log.isActive(seg)) {
          // Everything durable in the active segment was scanned; seqs not found are damaged.
          const durable = this.log.durableSeq
          if (this.scanner.atLimit() && durable >= this.nextSeq && this.log.isActive(seg)) {
            this.countCorrupt(durable - this.nextSeq + 1)
            this.nextSeq = durable + 1
          }
          break
        }
        // Segment finished. Seqs it should have held but did not yield were damaged (except those
        // its seal says a power loss took: recovery counted them).
        const end = Math.min(seg.lastSeq - seg.lostSeqs, this.log.durableSeq)
        if (end >= this.nextSeq) this.countCorrupt(end - this.nextSeq + 1)
        this.nextSeq = Math.max(this.nextSeq, seg.lastSeq + 1)
        await this.closeSegment()
        continue
      }
      if (r.seq < this.nextSeq) continue
      if (r.seq > this.log.durableSeq) break // cannot happen: the scanner's limit is the durable size
      if (r.seq > this.nextSeq) this.countCorrupt(r.seq - this.nextSeq)
      this.nextSeq = r.seq + 1
      if (r.offset - this.lastMarkAt >= MARK_EVERY_BYTES && this.scanner.clean) {
        this.lastMarkAt = r.offset
        this.log.noteRecordAt(seg, r.seq, r.offset)
      }
      out.push({ seq: r.seq, epoch: seg.epoch, ts: r.ts, body: r.body })
      bytes += r.body.length
    }
    // A segment dropped (evicted, expired) while this read waited on the disk: the log counted its
    // records the forwarder had not read yet, these among them, so they are not handed out.
    const head = this.log.headSeq
    if (out.length > 0 && out[0]!.seq < head) return out.filter((r) => r.seq >= head)
    return out
  }

  /**
   * Copies records from a memory-tail batch into `out` (bodies are views of the batch's buffer, which
   * is never reused), from `nextSeq` up to the durable seq and the limits; returns the body bytes.
   */
  private readTail(batch: TailBatch, durable: number, out: LogRecord[], maxRecords: number, maxBytes: number): number {
    const frames = batch.frames
    let seq: number
    let at: number
    if (this.memBatch === batch && this.memSeq === this.nextSeq) {
      seq = this.memSeq
      at = this.memAt
    } else {
      seq = batch.firstSeq
      at = 0
      while (seq < this.nextSeq) {
        at += frameBytes(frames.readUInt32LE(at + 4))
        seq++
      }
    }
    const last = Math.min(batch.lastSeq, durable)
    const epoch = batch.seg.epoch
    const ts = batch.ts
    let bytes = 0
    while (seq <= last && out.length < maxRecords && bytes < maxBytes) {
      const len = frames.readUInt32LE(at + 4)
      const start = at + RECORD_HEADER_BYTES
      out.push({ seq, epoch, ts, body: frames.subarray(start, start + len) })
      bytes += len
      at += frameBytes(len)
      seq++
    }
    this.nextSeq = seq
    this.memBatch = batch
    this.memAt = at
    this.memSeq = seq
    return bytes
  }

  /** Where a scan of `seg` for `nextSeq` may start: where the memory path stopped, or the log's mark. */
  private resumePoint(seg: SegmentInfo): { seq: number; offset: number } | undefined {
    const b = this.memBatch
    if (b?.seg === seg && this.memSeq === this.nextSeq) return { seq: this.memSeq, offset: b.offset + this.memAt }
    return this.log.startFor(seg, this.nextSeq)
  }

  private countCorrupt(n: number): void {
    if (n > 0) this.onDamaged(n, this.nextSeq)
  }

  private async closeSegment(): Promise<void> {
    const fd = this.fd
    this.scanner = undefined
    this.seg = undefined
    this.fd = undefined
    if (fd !== undefined) await this.log.fsys.close(fd).catch(() => {})
  }

  async close(): Promise<void> {
    await this.closeSegment()
  }
}
