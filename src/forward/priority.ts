// Strict priority between the forwarders of the priority classes (--priority): who may take new records.
//
// Rule: a forwarder takes a NEW record into its window (main reader, live lane), or sends again a record
// it rewound after a failure, only while no more important member (lower rank) has records it has not
// taken yet: durable records beyond its read position, or rewound records still to be sent again
// (recovering). Records already in flight are never recalled; a member never waits for a less important one.
//
// Settling after a wait: a member that had to wait resumes only once the records the more important
// members had taken by then are settled (stored, dead-lettered or expired: their log's ack cursor is
// past them). Each class has its own NATS connection, so without this JetStream could store the last
// alarms of a drain, still in flight on one connection, after the first telemetry records sent on
// another. With it, every record of a more important class taken before a less important one had to
// wait is in the stream before anything that class takes afterwards. It costs one PubAck round trip at
// each hand-over, and nothing to a member that never waited.
//
// Consequences (README "When the uplink is down"):
// - strict priority: while a more important class has records waiting and cannot send them (NATS
//   unreachable, its stream refusing them), the less important classes wait too, however long; they
//   take records again once it has taken all of its own and they are settled (or its forwarder closed);
// - a more important class that is dead-lettering or recovering is never held by a less important one:
//   it only ever waits for the members above it;
// - a member whose forwarder closed or stopped (ring log failure) leaves the gate (`detach`): it blocks
//   nobody from then on.
//
// Event driven: each member says how to tell whether it has records not yet taken (`attach`), and
// tells the gate when that may have become false or its records settled (`notify`: after it read,
// after its ack cursor moved, after a recovery ended).
// A waiting member is woken only then, by a more important member, never by a timer of the gate.
// New records appended to a more important class's log need no notice: they only make the less
// important members wait more, which they see the next time they ask (`mayTake`, before each take).

/** What the gate reads of a member's forwarder. Seqs are those of the member's own log. */
export interface MemberState {
  /** Has records it has not taken yet (durable beyond its read position, or rewound to be sent again). */
  pending(): boolean
  /** The highest seq taken so far (its reader's position - 1). */
  takenUpTo(): number
  /** Every record up to this seq is settled (the log's ack cursor). */
  settledUpTo(): number
}

/** What a Forwarder takes as `ForwarderOptions.priority`: its seat at a PriorityGate. */
export interface PriorityMember {
  /** 0 = most important. */
  readonly rank: number
  /** Tells the gate how to read this member's state (called once by the forwarder). */
  attach(state: MemberState): void
  /**
   * True when no more important member has records it has not taken yet and, if this member had to
   * wait, what they had taken when they caught up is settled.
   */
  mayTake(): boolean
  /**
   * Resolves at once when mayTake() is true, else at the next notice of a more important member (ask
   * again then). One wait per member at most: calling it again while it waits returns the same promise,
   * so a caller that also gives up on a timer leaves nothing behind.
   */
  whenMayTake(): Promise<void>
  /** This member's state may have changed (it took records, its ack cursor moved, a recovery ended): wakes the less important members waiting. */
  notify(): void
  /** The forwarder closed or stopped: this member blocks nobody any more. Idempotent. */
  detach(): void
}

interface Waiter {
  readonly rank: number
  readonly resolve: () => void
}

/** Shared by the forwarders of all classes; `member(rank)` gives each its seat. */
export class PriorityGate {
  private readonly members: Seat[] = []
  private waiters: Waiter[] = []

  /** A seat for the forwarder of the class of rank `rank` (0 = most important). */
  member(rank: number): PriorityMember {
    if (!Number.isInteger(rank) || rank < 0) throw new RangeError(`priority rank must be an integer >= 0, got ${rank}`)
    const seat = new Seat(this, rank)
    this.members.push(seat)
    return seat
  }

  /** True when no attached member more important than `rank` has records not yet taken. */
  clearAbove(rank: number): boolean {
    for (const m of this.members) if (m.rank < rank && m.isPending()) return false
    return true
  }

  /** The members more important than `rank` that are attached (and not detached). */
  above(rank: number): Seat[] {
    return this.members.filter((m) => m.rank < rank && m.active)
  }

  /** Resolves at the next notice of a member more important than `rank`. */
  nextNotice(rank: number): Promise<void> {
    return new Promise((resolve) => this.waiters.push({ rank, resolve }))
  }

  /** A member of rank `rank` may have stopped being pending: wakes the less important waiters. */
  noticeFrom(rank: number): void {
    if (this.waiters.length === 0) return
    const keep: Waiter[] = []
    const wake: Waiter[] = []
    for (const w of this.waiters) (w.rank > rank ? wake : keep).push(w)
    if (wake.length === 0) return
    this.waiters = keep
    for (const w of wake) w.resolve()
  }

  /** Waiters not yet woken (for tests: a wait leaves nothing behind once woken). */
  get waiting(): number {
    return this.waiters.length
  }
}

class Seat implements PriorityMember {
  private state: MemberState | undefined
  private detached = false
  private wait: Promise<void> | undefined
  /** Had to wait: resumes once the more important members' records taken by then are settled. */
  private held = false
  /** Per more important member, the seq that must be settled before this one resumes (captured when they caught up). */
  private settleTo: Array<readonly [Seat, number]> | undefined

  constructor(
    private readonly gate: PriorityGate,
    readonly rank: number,
  ) {}

  attach(state: MemberState): void {
    this.state = state
  }

  /** Attached and not detached. */
  get active(): boolean {
    return !this.detached && this.state !== undefined
  }

  /** Has records not yet taken (a detached or not yet attached seat has none). */
  isPending(): boolean {
    return this.active && this.state!.pending()
  }

  /** True when every record up to `seq` is settled (or this member stopped). */
  settled(seq: number): boolean {
    return !this.active || this.state!.settledUpTo() >= seq
  }

  mayTake(): boolean {
    if (!this.gate.clearAbove(this.rank)) {
      this.held = true
      this.settleTo = undefined
      return false
    }
    if (!this.held) return true
    this.settleTo ??= this.gate.above(this.rank).map((m) => [m, m.state!.takenUpTo()] as const)
    if (!this.settleTo.every(([m, seq]) => m.settled(seq))) return false
    this.held = false
    this.settleTo = undefined
    return true
  }

  whenMayTake(): Promise<void> {
    if (this.mayTake()) return Promise.resolve()
    this.wait ??= this.gate.nextNotice(this.rank).then(() => {
      this.wait = undefined
    })
    return this.wait
  }

  notify(): void {
    // Only a member that has taken everything can unblock anybody (cheap when nobody waits: called on every ack).
    if (this.gate.waiting > 0 && !this.isPending()) this.gate.noticeFrom(this.rank)
  }

  detach(): void {
    if (this.detached) return
    this.detached = true
    this.gate.noticeFrom(this.rank)
  }
}
