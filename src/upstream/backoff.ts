// Exponential backoff and a sleep that close() can cut short, for the parts that talk to NATS.
//
// Timers here are monotonic (setTimeout runs on the monotonic clock): a step of the wall clock
// must not stall a retry.

/** Options of a {@link Backoff}. Times in milliseconds. */
export interface BackoffOptions {
  /** The first delay. */
  readonly minMs: number
  /** The largest delay. */
  readonly maxMs: number
  /** Each delay is drawn from [d/2, d) instead of d, so that many retries do not line up. */
  readonly jitter: boolean
}

/** Delays of minMs, 2·minMs, 4·minMs, … up to maxMs; reset() starts over. */
export class Backoff {
  private currentMs = 0

  constructor(private readonly opts: BackoffOptions) {}

  /** The step reached, in ms (0: reset, the next delay is minMs). */
  get current(): number {
    return this.currentMs
  }

  /** True when the steps reached the largest delay. */
  get atMax(): boolean {
    return this.currentMs >= this.opts.maxMs
  }

  /** The next delay to wait, in ms. */
  next(): number {
    this.currentMs = Math.min(this.opts.maxMs, this.currentMs === 0 ? this.opts.minMs : this.currentMs * 2)
    return this.opts.jitter ? this.currentMs / 2 + Math.random() * (this.currentMs / 2) : this.currentMs
  }

  reset(): void {
    this.currentMs = 0
  }
}

/** One sleeper at a time that wake() ends early (on close, or when there is work). */
export class Pause {
  private waker: (() => void) | undefined

  /** Resolves after `ms`, or at once when wake() is called meanwhile. Leaves no timer behind. */
  sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(done, ms)
      function done(): void {
        clearTimeout(t)
        resolve()
      }
      this.waker = done
    })
  }

  /** Ends the current sleep, if any. */
  wake(): void {
    const w = this.waker
    this.waker = undefined
    w?.()
  }
}
