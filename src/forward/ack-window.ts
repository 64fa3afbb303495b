// The in-flight window and the contiguous ack, as a pure data structure: the only caller of the log's ack.
//
// Invariant: the log's ack cursor is moved only to a seq s such that every record <= s that the
// forwarder took is done (stored by JetStream, dead-lettered or dropped and counted), and it never
// moves backwards. Records the main reader skipped (evicted under discard "old", damaged) were
// never taken: the cursor passes them once the reader is past them and nothing before is pending.
//
// Two lanes feed the window:
// - the main reader adds records in seq order (`add`): the queue;
// - the live lane (live-lane.ts) sends newer records ahead of the main reader (`addLane`). They
//   join the queue, in seq order, only when the main reader reaches them (`absorb`, `readerAt`),
//   so the cursor still moves over a contiguous run and never past a backlog record not yet read.
//
// Completion may come in any order, and the same record may be completed more than once (a late
// PubAck of an older send): only the first counts.

/** Where the contiguous ack goes: the ring log's `ack(seq)`. */
export interface AckSink {
  ack(seq: number): void
}

/** What the window needs of an entry. `done` is set by the window only. */
export interface WindowEntry {
  readonly seq: number
  done: boolean
}

export class AckWindow<T extends WindowEntry> {
  /** Taken by the main reader (or absorbed from the lane), in seq order; done entries leave from the head. */
  private readonly queue: T[] = []
  /** Sent by the live lane, by seq, until the main reader reaches them (Map keeps insertion = seq order). */
  private readonly lane = new Map<number, T>()
  /** Done entries still in the queue (behind an entry that is not done). */
  private doneQueued = 0
  /** The last seq passed to the sink (-1: none yet). */
  private lastAck = -1

  constructor(private readonly sink: AckSink) {}

  /** The main reader took `e` (seq above every seq in the window and every seq absorbed). */
  add(e: T): void {
    this.queue.push(e)
    if (e.done) this.doneQueued++
  }

  /** The live lane took `e` (seq above every lane seq, at or above the main reader's position). */
  addLane(e: T): void {
    this.lane.set(e.seq, e)
  }

  /**
   * Marks `e` done (a second call is ignored). Returns true when the ack cursor moved, i.e. the
   * head of the queue was done and left it.
   */
  complete(e: T): boolean {
    if (e.done) return false
    e.done = true
    if (this.lane.get(e.seq) === e) return false // joins the queue later (absorb)
    this.doneQueued++
    return this.advance()
  }

  /**
   * Moves lane entries with seq < `upTo` into the queue, in seq order, and acks what that
   * completes. Returns the seq of the last entry moved, or -1.
   */
  absorb(upTo: number): number {
    let last = -1
    for (const [seq, e] of this.lane) {
      if (seq >= upTo) break
      this.lane.delete(seq)
      this.queue.push(e)
      if (e.done) this.doneQueued++
      last = seq
    }
    if (last >= 0) this.advance()
    return last
  }

  /**
   * The main reader has taken or skipped every record below `position`: lane entries below it join
   * the queue, and when nothing is left in the queue the cursor moves to `position - 1` (over
   * records the reader skipped). Returns true when the cursor was set.
   */
  readerAt(position: number): boolean {
    this.absorb(position)
    if (this.queue.length > 0) return false
    this.ack(position - 1)
    return true
  }

  /** Acks the log over the contiguous run of done entries at the head of the queue. */
  private advance(): boolean {
    let acked = -1
    while (this.queue.length > 0 && this.queue[0]!.done) {
      acked = this.queue.shift()!.seq
      this.doneQueued--
    }
    if (acked < 0) return false
    this.ack(acked)
    return true
  }

  private ack(seq: number): void {
    // Never backwards (the reader's position only grows, and the queue is in seq order).
    if (seq < this.lastAck) return
    this.lastAck = seq
    this.sink.ack(seq)
  }

  /** The last seq acked through this window (-1: none yet). */
  get acked(): number {
    return this.lastAck
  }

  /** Entries in the queue (taken by the main reader, or absorbed). */
  get size(): number {
    return this.queue.length
  }

  /** Done entries in the queue behind one that is not done (0: nothing after the head is done). */
  get doneAhead(): number {
    return this.doneQueued
  }

  /** The entries of the queue, in seq order (done ones included). */
  queued(): IterableIterator<T> {
    return this.queue.values()
  }

  /** True while `e` is held by the live lane (not yet in the queue). */
  inLane(e: T): boolean {
    return this.lane.get(e.seq) === e
  }

  /** Entries sent by the live lane and not yet in the queue. */
  get laneSize(): number {
    return this.lane.size
  }

  /** Lane entries, in seq order (done ones included). */
  laneEntries(): IterableIterator<T> {
    return this.lane.values()
  }

  /** Every entry not done: the queue first, then the lane (seq order within each). */
  *pending(): Generator<T> {
    for (const e of this.queue) if (!e.done) yield e
    for (const e of this.lane.values()) if (!e.done) yield e
  }
}
