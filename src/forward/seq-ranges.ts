// Seq numbers collected into ranges for one log line (e.g. the records dropped as expired):
// "12-40,45,47-90", not one line per record. Bounded: beyond RANGES_MAX ranges only counts grow.

const RANGES_MAX = 20

/** Seqs added in increasing order, reported as ranges and taken all at once. */
export class SeqRanges {
  private ranges: Array<[from: number, to: number]> = []
  private records = 0
  private extraRanges = 0
  private last = -2

  /** Adds one seq (normally greater than the last one added; otherwise it starts a range of its own). */
  add(seq: number): void {
    this.records++
    const open = this.ranges[this.ranges.length - 1]
    if (seq !== this.last + 1) {
      if (this.ranges.length < RANGES_MAX) this.ranges.push([seq, seq])
      else this.extraRanges++
    } else if (open && this.extraRanges === 0) {
      open[1] = seq
    }
    this.last = seq
  }

  /** Nothing added since the last take(). */
  get empty(): boolean {
    return this.records === 0
  }

  /** The ranges so far ("12-40,45", "+N more ranges" when there were too many) and their record count; clears them. */
  take(): { records: number; seqs: string } {
    let seqs = this.ranges.map(([a, b]) => (a === b ? `${a}` : `${a}-${b}`)).join(',')
    if (this.extraRanges > 0) seqs += ` (+${this.extraRanges} more ranges)`
    const out = { records: this.records, seqs }
    this.ranges = []
    this.records = 0
    this.extraRanges = 0
    this.last = -2
    return out
  }
}
