// One shared scheduler for the whole fleet: a hashed timing wheel driven by a single interval timer.
//
// 10,000 devices must not mean 10,000 Node timers: every device's next publish, its reconnect after a backoff, the
// end of an offline episode and mqtt.js's keepalive timer (through its `timerVariant` hook) are tasks on this wheel.
// Scheduling and cancelling are O(1) (a Set per slot); a tick visits only the slots whose time has passed.
// Tasks run up to one resolution late, never early.

/** Something to run at a time; one object per recurring purpose, rescheduled in place (no allocation per run). */
export class Task {
  /** When it is due, in the scheduler's clock (performance.now() milliseconds). */
  at = 0
  /** Slot while scheduled, -1 otherwise. */
  slot = -1

  constructor(readonly run: (now: number) => void) {}

  get scheduled(): boolean {
    return this.slot >= 0
  }
}

/** A setInterval/clearInterval pair with numeric ids, the shape mqtt.js accepts as `timerVariant`. */
export interface IntervalTimer {
  set(fn: () => void, delayMs?: number): number
  clear(id: number): void
}

export class Scheduler {
  private readonly slots: Set<Task>[]
  private readonly mask: number
  /** Every tick up to and including this one has been processed. */
  private doneTick: number
  private count = 0
  private readonly intervals = new Map<number, Task>()
  private nextIntervalId = 1

  /**
   * @param resolutionMs width of one slot; tasks run up to this much (plus the driving timer's lateness) after `at`.
   * @param now the current time, same clock as every `at` passed in later.
   * @param slotCount slots on the wheel, a power of two; tasks further away than `slotCount * resolutionMs` are
   *   revisited once per revolution.
   */
  constructor(
    private readonly resolutionMs: number,
    now: number,
    slotCount = 4096,
  ) {
    if (!(resolutionMs > 0)) throw new RangeError(`resolutionMs must be > 0, got ${resolutionMs}`)
    if (slotCount < 2 || (slotCount & (slotCount - 1)) !== 0) throw new RangeError(`slotCount must be a power of two, got ${slotCount}`)
    this.slots = Array.from({ length: slotCount }, () => new Set<Task>())
    this.mask = slotCount - 1
    this.doneTick = Math.floor(now / resolutionMs) - 1
  }

  /** Scheduled tasks. */
  get size(): number {
    return this.count
  }

  /** (Re)schedules `task` at `at`; a time in the past means "at the next tick". */
  schedule(task: Task, at: number): void {
    if (task.slot >= 0) this.cancel(task)
    task.at = at
    const tick = Math.max(Math.floor(at / this.resolutionMs), this.doneTick + 1)
    task.slot = tick & this.mask
    this.slots[task.slot]?.add(task)
    this.count++
  }

  /** Unschedules `task`; no-op when it is not scheduled. */
  cancel(task: Task): void {
    if (task.slot < 0) return
    this.slots[task.slot]?.delete(task)
    task.slot = -1
    this.count--
  }

  /** Runs every task whose tick has fully passed by `now`, in tick order. */
  advance(now: number): void {
    const lastTick = Math.floor(now / this.resolutionMs) - 1
    if (lastTick <= this.doneTick) return
    // After a stall longer than a revolution, one pass over every slot covers everything that is due.
    const from = lastTick - this.doneTick > this.slots.length ? lastTick - this.slots.length + 1 : this.doneTick + 1
    // A slot also holds tasks of later revolutions (and tasks clamped to the next tick, whose `at` is earlier):
    // due is exactly what is scheduled before the end of `lastTick`.
    const limit = (lastTick + 1) * this.resolutionMs
    const due: Task[] = []
    for (let tick = from; tick <= lastTick; tick++) {
      const slot = this.slots[tick & this.mask]
      if (slot === undefined || slot.size === 0) continue
      for (const t of slot) if (t.at < limit) due.push(t)
    }
    this.doneTick = lastTick
    // Collected first, run after: a task may reschedule itself or others without being visited twice in one call.
    for (const t of due) {
      if (t.slot < 0) continue // cancelled by an earlier task of this batch
      this.cancel(t)
      t.run(now)
    }
  }

  /** setInterval-like timers on the wheel (for mqtt.js keepalive): `fn` runs every `delayMs` until cleared. */
  intervalTimer(clock: () => number): IntervalTimer {
    return {
      set: (fn, delayMs = 0) => {
        const id = this.nextIntervalId++
        const period = Math.max(delayMs, this.resolutionMs)
        const task = new Task((now) => {
          fn()
          // fn may have cleared this very timer (mqtt.js does on a keepalive timeout).
          if (this.intervals.get(id) === task) this.schedule(task, Math.max(task.at + period, now))
        })
        this.intervals.set(id, task)
        this.schedule(task, clock() + period)
        return id
      },
      clear: (id) => {
        const task = this.intervals.get(id)
        if (task === undefined) return
        this.intervals.delete(id)
        this.cancel(task)
      },
    }
  }

  /** Unschedules everything. */
  clear(): void {
    for (const s of this.slots) {
      for (const t of s) t.slot = -1
      s.clear()
    }
    this.intervals.clear()
    this.count = 0
  }
}
