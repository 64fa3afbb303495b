// Reads the records of one segment in order with large sequential reads, resyncing past damage.
import type { LogFs } from './fs.js'
import { checkFrame, decodeSealBody, SEGMENT_HEADER_BYTES, TYPE_SEAL } from './format.js'

/** A valid data record read from a segment. `body` is a view into a read buffer that is not reused. */
export interface ScannedRecord {
  readonly seq: number
  readonly ts: number
  readonly body: Buffer
  /** Byte offset of the frame in the segment file. */
  readonly offset: number
}

export interface ScannerOptions {
  /** File offset to start at; default just after the segment header. */
  start?: number
  /** Records with seq <= afterSeq are stale (or already read) and skipped. */
  afterSeq: number
  /** Current readable end of the segment (the durable size for the active segment). */
  limit: () => number
  /** Bytes per read. */
  chunkBytes: number
  maxBodyBytes: number
}

/**
 * Sequential reader over one segment file.
 *
 * Recovery rule (never give up on the rest of a segment because of one bad record): at a position
 * that is not a valid frame, step forward 8 bytes (frames are 8-aligned) until a valid frame with
 * a seq greater than the last good one. Seqs skipped that way are reported in `corruptSeqs`.
 */
export class SegmentScanner {
  private buf: Buffer = Buffer.alloc(0)
  private bufAt = 0
  private pos: number
  /** Seq of the last valid data record returned (or `afterSeq`). */
  lastSeq: number
  /** End offset of the last valid frame (or the start offset). Anything after it at EOF is a torn tail. */
  lastEnd: number
  /** True once the seal record was read: the segment has no more records. */
  sealed = false
  /** Seal contents when sealed. */
  seal: { firstSeq: number; lastSeq: number } | undefined

  constructor(
    private readonly fsys: LogFs,
    private readonly fd: number,
    private readonly opts: ScannerOptions,
  ) {
    this.pos = opts.start ?? SEGMENT_HEADER_BYTES
    this.lastEnd = this.pos
    this.lastSeq = opts.afterSeq
  }

  /** True when the scan has consumed everything up to the current limit. */
  atLimit(): boolean {
    return this.pos >= this.opts.limit()
  }

  /** Seqs between the previous record and this one that were never seen (damage). Reset by the caller. */
  gapBefore = 0

  /** The next valid data record, or undefined at the current end (call again after the limit grows). */
  async next(): Promise<ScannedRecord | undefined> {
    for (;;) {
      const limit = this.opts.limit()
      if (this.sealed || this.pos >= limit) return undefined
      const rel = this.pos - this.bufAt
      const check =
        rel >= 0 && rel < this.buf.length
          ? checkFrame(this.buf, rel, limit - this.pos, this.opts.maxBodyBytes)
          : 'need-more'
      if (check === 'need-more') {
        const grow = rel === 0 && this.buf.length > 0 ? this.buf.length * 2 : this.opts.chunkBytes
        const want = Math.min(limit - this.pos, Math.max(grow, this.opts.chunkBytes))
        const buf = Buffer.allocUnsafe(want)
        let got = 0
        while (got < want) {
          const n = await this.fsys.read(this.fd, buf, got, want - got, this.pos + got)
          if (n === 0) break
          got += n
        }
        if (got === 0) return undefined
        this.buf = got === want ? buf : buf.subarray(0, got)
        this.bufAt = this.pos
        continue
      }
      if (check === 'invalid' || (check.type !== TYPE_SEAL && check.seq <= this.lastSeq)) {
        this.pos += 8
        continue
      }
      const offset = this.pos
      this.pos += check.length
      this.lastEnd = this.pos
      if (check.type === TYPE_SEAL) {
        this.sealed = true
        this.seal = decodeSealBody(check.body)
        continue
      }
      this.gapBefore = check.seq - this.lastSeq - 1
      this.lastSeq = check.seq
      return { seq: check.seq, ts: check.ts, body: check.body, offset }
    }
  }
}
