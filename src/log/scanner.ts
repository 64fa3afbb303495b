// Reads the records of one segment in order with large sequential reads, resyncing past damage.
import type { LogFs } from './fs.js'
import {
  checkFrame,
  decodeSealBody,
  decodeSegmentHeader,
  frameBytes,
  RECORD_HEADER_BYTES,
  RECORD_MAGIC,
  RECORD_VERSION,
  readU64,
  SEGMENT_HEADER_BYTES,
  TYPE_DATA,
  TYPE_SEAL,
} from './format.js'
import type { Frame } from './format.js'

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
  /**
   * Seq of the record that ends at `start`, when `start` is a known record boundary inside the
   * segment (as the segment header tells it for the first record): lets a resync right at `start`
   * skip a damaged record by its header as it would at the segment's first record.
   */
  anchorSeq?: number
  /** Current readable end of the segment (the durable size for the active segment). */
  limit: () => number
  /** Bytes per read. */
  chunkBytes: number
  maxBodyBytes: number
}

/** The smallest frame a data record can occupy (a 1-byte body, padded). */
const MIN_FRAME_BYTES = frameBytes(1)
/** Open chains remembered by one resync (see `resync`); more are ignored as fallbacks. */
const MAX_OPEN_CHAINS = 65_536

/**
 * A run of valid frames found while resyncing: each starts where the previous ends and has the next
 * seq. `confirmed`: it runs to the readable end (or a seal ending there); otherwise it ends at bytes
 * that are not a frame ("open"). A run that ends at a valid frame with another seq is refuted and
 * never becomes a Chain.
 */
interface Chain {
  readonly pos: number
  readonly first: number
  readonly last: number
  readonly end: number
  readonly confirmed: boolean
}

/** True when `b` (later) can follow `a` in one segment: higher seqs, and room for the seqs between. */
function consistent(a: Chain, b: Chain): boolean {
  return a.last < b.first && (b.first - a.last - 1) * MIN_FRAME_BYTES <= b.pos - a.end
}

/**
 * Sequential reader over one segment file.
 *
 * Reading is "aligned" while the position is a known record boundary: the start, or the end of a
 * frame read there. A valid frame at a record boundary is a record. A frame found anywhere else may
 * be bytes inside a record's body — a device payload can hold a perfectly valid frame, CRC and all —
 * so after damage (a position that is not a valid frame) the scanner never takes the first valid
 * frame it steps onto. It resyncs by these rules (data seqs in a segment are consecutive, records are
 * adjacent, and a frame inside a payload cannot cover the bytes of the records after it):
 *
 * 1. Header hint: if the damaged record's header still reads as the expected next record (magic,
 *    type, seq) and its length leads to the following record (or to the end), that record is skipped
 *    whole: nothing inside its body is looked at.
 * 2. Otherwise step forward 8 bytes at a time (frames are 8-aligned). A valid frame is a candidate
 *    only if its seq fits: above the last record, and at most one more than the records the skipped
 *    bytes could hold (one per MIN_FRAME_BYTES). When the last record's seq is known, the first
 *    damaged record is the next seq, so a candidate is at least two above it.
 * 3. A candidate is followed frame by frame. A run that reaches the readable end (or the seal that
 *    ends it and names the run's last seq) is confirmed and taken. A run that meets a valid frame
 *    with another seq is refuted: real records are adjacent and consecutive, so it was inside a
 *    payload. A run that ends at bytes that are not a frame is open (real records before more
 *    damage, or frames in a damaged payload).
 * 4. Open runs are kept only when consistent with the runs after them (the confirmed one, or else the
 *    last one): the run nearest the end wins a conflict. When nothing is confirmed, open runs inside
 *    a torn last record (its header survived and claims more bytes than there are) are not kept.
 * 5. A seal counts only where it ends the readable data.
 *
 * Seqs skipped are reported in `gapBefore`. One damaged record followed by intact records is always
 * resolved exactly. What stays ambiguous needs a crafted payload with the right seqs and more damage:
 * with two or more adjacent damaged records a crafted frame can take a damaged record's seq (no real
 * record is displaced); with damage in two places and nothing intact after the second it can
 * displace the records between them; in an unsealed segment whose last record lost its header, a
 * crafted frame ending exactly at the readable end is taken.
 */
export class SegmentScanner {
  private buf: Buffer = Buffer.alloc(0)
  private bufAt = 0
  /** The last read at `bufAt` returned fewer bytes than asked: the file ends before the limit. */
  private bufShort = false
  private pos: number
  /** Seq of the last valid data record returned (or `afterSeq`). */
  lastSeq: number
  /** End offset of the last valid frame (or the start offset). Anything after it at EOF is a torn tail. */
  lastEnd: number
  /** True once the seal record was read: the segment has no more records. */
  sealed = false
  /** Seal contents when sealed. */
  seal: { firstSeq: number; lastSeq: number } | undefined
  /** Seq of the last frame read at a record boundary (stale ones too); exact only when `anchorKnown`. */
  private anchorSeq: number
  private anchorKnown = false
  /** The position came from the start or a confirmed resync (not from an open run). */
  private trusted = true
  private headerChecked = false
  /** Runs chosen by the last resync that are still ahead, in order. */
  private plan: Chain[] = []
  /** Resyncs so far (damage met). */
  private resyncs = 0

  constructor(
    private readonly fsys: LogFs,
    private readonly fd: number,
    private readonly opts: ScannerOptions,
  ) {
    this.pos = opts.start ?? SEGMENT_HEADER_BYTES
    this.lastEnd = this.pos
    this.lastSeq = opts.afterSeq
    this.anchorSeq = opts.anchorSeq ?? opts.afterSeq
    this.anchorKnown = opts.anchorSeq !== undefined
  }

  /** True while no damage was met: every record returned so far was read at a record boundary. */
  get clean(): boolean {
    return this.resyncs === 0
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
      const check = this.checkAt(this.pos, limit)
      if (check === undefined) {
        if (!(await this.load(this.pos, limit))) return undefined
        continue
      }
      if (check === 'invalid') {
        await this.resync(limit)
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
      this.anchorSeq = check.seq
      this.anchorKnown = this.trusted
      // Stale (at or below afterSeq): a record at a boundary, so it is skipped whole, never searched.
      if (check.seq <= this.lastSeq) continue
      this.gapBefore = check.seq - this.lastSeq - 1
      this.lastSeq = check.seq
      return { seq: check.seq, ts: check.ts, body: check.body, offset }
    }
  }

  /** Moves `pos` from a damaged record boundary to the next record to read, or to the limit. */
  private async resync(limit: number): Promise<void> {
    this.resyncs++
    const from = this.pos
    while (this.plan.length > 0) {
      const next = this.plan.shift()!
      if (next.pos > from && next.first > this.lastSeq) {
        this.pos = next.pos
        this.trusted = next.confirmed
        return
      }
    }
    if (!this.anchorKnown && !this.headerChecked && this.trusted && from === SEGMENT_HEADER_BYTES) {
      // Damage at the first record: the header tells which seq it had.
      this.headerChecked = true
      const h = Buffer.alloc(SEGMENT_HEADER_BYTES)
      const n = await this.fsys.read(this.fd, h, 0, h.length, 0)
      const header = decodeSegmentHeader(h.subarray(0, n))
      if (typeof header !== 'string') {
        this.anchorSeq = header.baseSeq - 1
        this.anchorKnown = true
      }
    }
    const anchor = this.anchorSeq
    const lower = Math.max(this.lastSeq + 1, this.anchorKnown ? anchor + 2 : 0)

    // Rule 1: the damaged record's own header, when it survived, says where the next record is.
    // A header that runs past the readable end is a torn last record: it shadows what follows.
    let shadowFrom = Infinity
    if (this.anchorKnown) {
      const end = await this.claimedEnd(from, anchor + 1, limit)
      if (end !== undefined) {
        if (end === limit || (end < limit && (await this.startsRun(end, anchor + 2, limit)))) {
          this.pos = end
          this.anchorSeq = anchor + 1
          return
        }
        if (end > limit) shadowFrom = from
      }
    }

    // Rules 2 and 3: step, and follow each candidate.
    const open: Chain[] = []
    let confirmed: Chain | undefined
    for (let q = from + 8; q < limit; ) {
      const f = await this.frameAt(q, limit)
      if (f === 'end') break
      if (f === 'invalid') {
        q += 8
        continue
      }
      if (f.type === TYPE_SEAL) {
        if (q + f.length === limit) {
          const s = decodeSealBody(f.body)
          confirmed = { pos: q, first: s.lastSeq + 1, last: s.lastSeq, end: limit, confirmed: true }
          break
        }
        q += 8
        continue
      }
      if (f.seq < lower || f.seq > anchor + 1 + Math.floor((q - from) / MIN_FRAME_BYTES)) {
        q += 8
        continue
      }
      const { run, end } = await this.follow(q, f, limit)
      if (run?.confirmed) {
        confirmed = run
        break
      }
      if (run !== undefined) {
        if (open.length < MAX_OPEN_CHAINS) open.push(run)
        if (shadowFrom === Infinity && ((await this.claimedEnd(end, run.last + 1, limit)) ?? 0) > limit) shadowFrom = end
      }
      // Open or refuted, no record starts inside the run: a frame in a payload cannot cover the
      // records after it (its CRC would have to cover their bytes). Go on where it ends.
      q = end
    }

    // Rule 4: the run nearest the end wins; earlier open runs stay if consistent with what follows.
    // Without a confirmed run, open runs inside a torn last record are not records. (With one, the
    // torn-looking header had a damaged length: the confirmed run is inside what it claims.)
    if (confirmed === undefined) while ((open.at(-1)?.pos ?? -1) > shadowFrom) open.pop()
    const last = confirmed ?? open.pop()
    if (last === undefined) {
      this.pos = limit
      this.anchorKnown = false
      this.trusted = true // (the limit of an active segment is a record boundary)
      return
    }
    const chosen = [last]
    for (let i = open.length - 1; i >= 0; i--) if (consistent(open[i]!, chosen[0]!)) chosen.unshift(open[i]!)
    const first = chosen.shift()!
    this.plan = chosen
    this.pos = first.pos
    this.trusted = first.confirmed
  }

  /**
   * Follows the run of frames starting with `f` at `at`. `run` is undefined when refuted: the run
   * meets a valid frame with another seq, or a seal that does not end the readable data. `end` is
   * where the run stops (the refuting frame, or the bytes that are not a frame).
   */
  private async follow(at: number, f: Frame, limit: number): Promise<{ run: Chain | undefined; end: number }> {
    let last = f.seq
    let end = at + f.length
    const run = (confirmed: boolean): { run: Chain; end: number } => ({ run: { pos: at, first: f.seq, last, end, confirmed }, end })
    for (;;) {
      if (end >= limit) return run(true)
      const g = await this.frameAt(end, limit)
      if (g === 'end' || g === 'invalid') return run(false)
      if (g.type === TYPE_SEAL) return this.isFinalSeal(end, g, last, limit) ? run(true) : { run: undefined, end }
      if (g.seq !== last + 1) return { run: undefined, end }
      last = g.seq
      end += g.length
    }
  }

  /** True when the record after one with seq `seq - 1` is at `at`: seq `seq`, or the final seal. */
  private async startsRun(at: number, seq: number, limit: number): Promise<boolean> {
    const g = await this.frameAt(at, limit)
    if (g === 'end' || g === 'invalid') return false
    return g.type === TYPE_SEAL ? this.isFinalSeal(at, g, seq - 1, limit) : g.seq === seq
  }

  /** A seal at `at` ends the segment after the record with `lastSeq`: it ends the readable data and says so. */
  private isFinalSeal(at: number, seal: Frame, lastSeq: number, limit: number): boolean {
    return at + seal.length === limit && decodeSealBody(seal.body).lastSeq === lastSeq
  }

  /**
   * Where the record at `at` ends by its header, when the header (though the frame is damaged)
   * still reads as a data record with `seq`; undefined otherwise. May be beyond the limit (torn).
   */
  private async claimedEnd(at: number, seq: number, limit: number): Promise<number | undefined> {
    if (limit - at < RECORD_HEADER_BYTES) return undefined
    const h = Buffer.alloc(RECORD_HEADER_BYTES)
    const rel = at - this.bufAt
    if (rel >= 0 && rel + RECORD_HEADER_BYTES <= this.buf.length) this.buf.copy(h, 0, rel, rel + RECORD_HEADER_BYTES)
    else if ((await this.fsys.read(this.fd, h, 0, h.length, at)) < h.length) return undefined
    if (h.readUInt16LE(0) !== RECORD_MAGIC || h[2] !== RECORD_VERSION || h[3] !== TYPE_DATA) return undefined
    const bodyLen = h.readUInt32LE(4)
    if (bodyLen === 0 || bodyLen > this.opts.maxBodyBytes || readU64(h, 8) !== seq) return undefined
    return at + frameBytes(bodyLen)
  }

  /** The frame at `at` from the buffer; undefined when more must be read first. */
  private checkAt(at: number, limit: number): Frame | 'invalid' | undefined {
    const rel = at - this.bufAt
    if (rel < 0 || rel >= this.buf.length) return undefined
    const check = checkFrame(this.buf, rel, limit - at, this.opts.maxBodyBytes)
    if (check !== 'need-more') return check
    return rel === 0 && this.bufShort ? 'invalid' : undefined // (short: the file ends inside this frame)
  }

  /** Reads from `at` into a new buffer, more than last time if the buffer already started there. */
  private async load(at: number, limit: number): Promise<boolean> {
    const grow = at === this.bufAt && this.buf.length > 0 ? this.buf.length * 2 : this.opts.chunkBytes
    const want = Math.min(limit - at, Math.max(grow, this.opts.chunkBytes))
    if (want <= 0) return false
    const buf = Buffer.allocUnsafe(want)
    let got = 0
    while (got < want) {
      const n = await this.fsys.read(this.fd, buf, got, want - got, at + got)
      if (n === 0) break
      got += n
    }
    if (got === 0) return false
    this.buf = got === want ? buf : buf.subarray(0, got)
    this.bufAt = at
    this.bufShort = got < want
    return true
  }

  /** The frame at `at`, reading as much as it needs; 'end' when nothing can be read there now. */
  private async frameAt(at: number, limit: number): Promise<Frame | 'invalid' | 'end'> {
    for (;;) {
      const check = this.checkAt(at, limit)
      if (check !== undefined) return check
      if (!(await this.load(at, limit))) return 'end'
    }
  }
}
