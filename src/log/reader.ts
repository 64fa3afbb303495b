// Sequential reader of the ring log from a seq onwards, in large reads, never past the durable seq.
import type { RingLog, SegmentInfo } from './ring-log.js'
import { MAX_BODY_BYTES } from './format.js'
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

/**
 * Reads records in seq order. Damaged records (bad checksum, torn framing) are skipped and
 * reported to `onDamaged`; records evicted under discard "old" are skipped (the log counted them).
 * Memory is bounded by the read chunk size and what the caller keeps.
 */
export class LogReader {
  private seg: SegmentInfo | undefined
  private fd: number | undefined
  private scanner: SegmentScanner | undefined
  private nextSeq: number

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
      if (this.nextSeq > this.log.durableSeq) break
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
        this.scanner = new SegmentScanner(this.log.fsys, fd, {
          afterSeq: seg.baseSeq - 1,
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
      out.push({ seq: r.seq, epoch: seg.epoch, ts: r.ts, body: r.body })
      bytes += r.body.length
    }
    return out
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
