// The NATS server's clock as seen from the gateway. A command's age is the server's now minus the time
// the server stored it, both on the server's clock: a gateway clock that is off (a device without
// RTC or NTP, a VM after a pause) then neither expires commands early nor delivers them late.
//
// A sample brackets one request that returns the server's current time between two readings of
// this process's monotonic clock (performance.now()): the server's time is taken to be at the
// midpoint, so its error is at most half the round trip. Between samples the server's time advances
// with the monotonic clock, which a step of the host's wall clock does not move. Samples are
// renewed every `refreshMs` (monotonic clocks drift by parts per million, and do not count suspend);
// after a failed one, the next is due `retryMs` later.

/** Returns the server's current time as an RFC 3339 timestamp. */
export type ServerTimeProbe = () => Promise<string>

export class ServerClock {
  /** Server time minus monotonic time at the last sample, ms; undefined before the first. */
  private offsetMs: number | undefined
  private sampledAt = Number.NEGATIVE_INFINITY
  private failedAt = Number.NEGATIVE_INFINITY
  private sampling: Promise<void> | undefined

  constructor(
    private readonly probe: ServerTimeProbe,
    private readonly refreshMs = 10 * 60_000,
    private readonly retryMs = 60_000,
    private readonly monotonicMs: () => number = () => performance.now(),
  ) {}

  /** Takes a sample (one at a time: a call while one runs shares it). Rejects when the probe fails. */
  sample(): Promise<void> {
    this.sampling ??= (async () => {
      try {
        const t0 = this.monotonicMs()
        const at = await this.probe()
        const t1 = this.monotonicMs()
        const serverMs = Date.parse(at)
        if (!Number.isFinite(serverMs)) throw new Error(`the server's time "${at}" is not a timestamp`)
        this.offsetMs = serverMs - (t0 + t1) / 2
        this.sampledAt = t1
      } catch (err) {
        this.failedAt = this.monotonicMs()
        throw err
      } finally {
        this.sampling = undefined
      }
    })()
    return this.sampling
  }

  /** The server's time now, ms since the epoch; undefined before the first sample. */
  now(): number | undefined {
    return this.offsetMs === undefined ? undefined : this.monotonicMs() + this.offsetMs
  }

  /** Whether a sample is due: none yet or the last older than `refreshMs`, none running, none failed in the last `retryMs`. */
  get due(): boolean {
    const now = this.monotonicMs()
    return this.sampling === undefined && now - this.sampledAt > this.refreshMs && now - this.failedAt > this.retryMs
  }
}
