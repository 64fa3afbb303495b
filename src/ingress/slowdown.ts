// The forwarding-lag slow-down (--max-forward-lag): while the upstream is healthy and the oldest
// record not yet acknowledged by JetStream is older than the bound, PUBACKs of stored publishes are
// held and released at half the forwarding rate, so that acknowledgements do not outrun forwarding.
//
// Rules (README, "Overload: when devices publish faster than JetStream stores"):
// - Holding starts when lag > maxLagMs and the upstream is healthy. While lag > maxLagMs, every k
//   records JetStream acknowledges release floor(k/2) held PUBACKs (the fraction is carried), oldest
//   first: devices are acknowledged at half the forwarding rate, the backlog shrinks at the other half.
// - When lag <= maxLagMs again, everything held is released at once; then PUBACKs are paced at the
//   forwarding rate (k acknowledged records release k) until the lag has stayed at or under half
//   the bound for PACING_QUIET_MS, so the devices' pent-up messages do not arrive as one burst that
//   overshoots the bound. (Pacing at the forwarding rate keeps the backlog from growing; it shrinks
//   only when devices send less than JetStream stores, which is what ends the pacing.)
// - The upstream turning unhealthy (an outage: the log absorbs, as without the slow-down) and
//   close() release everything at once and end the slowing.
// - Invariant: something is held only while `slowing` (the queue is empty otherwise), so a PUBACK
//   that is not held is never written before one held earlier: PUBACK order is kept.
// - Bound: aedes reads a connection's next packets only once every publish of its last read was
//   answered, so a holding connection stops being read (TCP backpressure) and the queue holds at
//   most one read's worth of publishes per connection.
// - Nothing here touches the record: it is in the log before its PUBACK is held. A client that
//   disconnects has its held PUBACKs handed back at once (the core writes nothing on a closed
//   connection, as for a store that completes after a disconnect); the device's resend is
//   recognised by the retransmit index and acknowledged without a second record.
import type { MqttClientRef } from './aedes-seam.js'

/** How often the lag is checked while not slowing, and the release paced while slowing (ms). */
export const SLOWDOWN_TICK_MS = 100
export const SLOWDOWN_TICK_SLOWING_MS = 20
/**
 * After the lag is back under the bound, PUBACKs are still released at no more than the forwarding
 * rate until the lag has stayed at or under half the bound for this long (forwarding keeps up
 * again): devices released at once would otherwise send what they held back as one burst, and the
 * lag would overshoot the bound by all of it.
 */
export const PACING_QUIET_MS = 1000

/** What the slow-down records (structural: the gateway's metrics catalogue satisfies it). */
export interface SlowdownMetrics {
  /** ferry_ingress_slowed: 1 while PUBACKs may be held. */
  readonly ingressSlowed: { collect(read: () => number): void }
  /** ferry_ingress_slowed_seconds_total. */
  readonly ingressSlowedSeconds: { inc(n?: number): void }
  /** ferry_ingress_pubacks_held: PUBACKs held now. */
  readonly ingressPubacksHeld: { collect(read: () => number): void }
  /** ferry_ingress_pubacks_delayed_total: PUBACKs that were held (and released). */
  readonly ingressPubacksDelayed: { inc(n?: number): void }
  /** ferry_ingress_puback_delay_seconds: how long each held PUBACK was held. */
  readonly ingressPubackDelay: { observe(seconds: number): void }
}

/** What the slow-down reads: plain functions, so that ingress knows nothing of the log or the forwarder. */
export interface SlowdownSources {
  /** --max-forward-lag in milliseconds; 0 = never slow down. */
  readonly maxLagMs: number
  /** Age of the oldest record not yet acknowledged by JetStream, ms (0 without backlog). Called every tick. */
  readonly lagMs: () => number
  /** Connected, stream usable, PubAcks arriving within --ack-timeout-ms. */
  readonly healthy: () => boolean
  /** Records acknowledged by JetStream so far (monotonic). */
  readonly forwarded: () => number
  readonly metrics: SlowdownMetrics
  /** Clock in ms (monotonic); a seam for unit tests. */
  readonly now?: () => number
  /** Unit tests drive tick() themselves. */
  readonly manual?: boolean
}

/** The state shown on the status page and /status.json. */
export interface SlowdownState {
  /** --max-forward-lag, seconds (0 = off). */
  readonly maxLagSeconds: number
  /** Lag as the slow-down last measured it, seconds. */
  readonly lagSeconds: number
  readonly slowed: boolean
  /** PUBACKs held now. */
  readonly held: number
  readonly delayedTotal: number
}

interface Held {
  readonly client: MqttClientRef
  readonly packetId: number
  readonly at: number
  release: () => void
  /** Released (or handed back): a hole in the queue until `head` passes it. */
  done: boolean
}

/** The PUBACK gate. `slowing` is the only thing the publish path reads when nothing is held. */
export class PubackGate {
  /** True while PUBACKs are held: a stored publish's acknowledgement goes through hold(). */
  slowing = false
  /** Slowing, at or under the bound: PUBACKs are released at the forwarding rate (see PACING_QUIET_MS). */
  private pacing = false
  private quietSince = 0
  private readonly queue: Held[] = []
  private head = 0
  /** Entries of `queue` from `head` on that are not done (a gone client's leave holes). */
  private count = 0
  /**
   * Each client's held entries, oldest first: a disconnect or a resend looks only at that client's
   * own (a fleet dropping together would otherwise cost devices x everything held).
   */
  private readonly byClient = new Map<MqttClientRef, Held[]>()
  private credit = 0
  private lastForwarded: number
  private slowingSince = 0
  private lastLagMs = 0
  private delayed = 0
  private timer: NodeJS.Timeout | undefined
  private closed = false
  private readonly now: () => number

  constructor(private readonly src: SlowdownSources) {
    this.now = src.now ?? (() => performance.now())
    this.lastForwarded = src.forwarded()
    src.metrics.ingressSlowed.collect(() => (this.slowing ? 1 : 0))
    src.metrics.ingressPubacksHeld.collect(() => this.held)
    if (src.maxLagMs > 0 && !src.manual) this.schedule()
  }

  /** PUBACKs held now. */
  get held(): number {
    return this.count
  }

  get state(): SlowdownState {
    return {
      maxLagSeconds: this.src.maxLagMs / 1000,
      lagSeconds: Math.round(this.lastLagMs) / 1000,
      slowed: this.slowing,
      held: this.held,
      delayedTotal: this.delayed,
    }
  }

  /**
   * Holds the acknowledgement of a stored publish (call only while `slowing`); `release` writes it.
   * With `join`, a retransmission whose original is still held is released together with it, so
   * that a packet id is never acknowledged twice far apart (the second could acknowledge a new
   * publish reusing the id).
   */
  hold(client: MqttClientRef, packetId: number, release: () => void, join = false): void {
    // A store that completed after its client went away: nothing will be written, nothing to pace.
    if (!this.slowing || client.closed) return release()
    const mine = this.byClient.get(client)
    if (join && mine) {
      for (const h of mine) {
        if (h.packetId === packetId) {
          const first = h.release
          h.release = () => {
            first()
            release()
          }
          return
        }
      }
    }
    const h: Held = { client, packetId, at: this.now(), release, done: false }
    this.queue.push(h)
    if (mine) mine.push(h)
    else this.byClient.set(client, [h])
    this.count++
    this.releaseCredited()
  }

  /** A client went away: its held PUBACKs are handed back at once (nothing is written on a closed connection). */
  clientGone(client: MqttClientRef): void {
    const mine = this.byClient.get(client)
    if (!mine) return
    this.byClient.delete(client)
    for (const h of mine) this.finish(h)
    this.skipEmpty()
  }

  /** Re-evaluates the lag and health, and releases what the forwarding since the last tick paid for. */
  tick(): void {
    const now = this.now()
    const forwarded = this.src.forwarded()
    const acked = Math.max(0, forwarded - this.lastForwarded)
    this.lastForwarded = forwarded
    this.lastLagMs = this.src.maxLagMs > 0 ? this.src.lagMs() : 0
    // Health is read every tick, not only when over the bound: it tracks since when records wait.
    const healthy = this.src.maxLagMs > 0 && this.src.healthy()
    const over = !this.closed && healthy && this.lastLagMs > this.src.maxLagMs
    if (this.slowing) {
      this.src.metrics.ingressSlowedSeconds.inc((now - this.slowingSince) / 1000)
      this.slowingSince = now
    }
    if (!healthy || this.closed) {
      if (this.slowing) this.stop()
      return
    }
    if (over) {
      if (!this.slowing) {
        this.slowing = true
        this.slowingSince = now
        this.credit = 0
      }
      this.pacing = false
      this.credit += acked / 2
      this.releaseCredited()
      return
    }
    if (!this.slowing) return
    if (!this.pacing) {
      // Back at or under the bound: what is held goes now; from here on PUBACKs keep pace with forwarding.
      this.releaseAll()
      this.pacing = true
      this.quietSince = now
      return
    }
    this.credit += acked
    this.releaseCredited()
    if (this.lastLagMs > this.src.maxLagMs / 2) this.quietSince = now
    else if (now - this.quietSince >= PACING_QUIET_MS) this.stop()
  }

  /** Stops slowing and releases everything held, in order. */
  private stop(): void {
    this.slowing = false
    this.pacing = false
    this.releaseAll()
  }

  private releaseAll(): void {
    this.credit = 0
    while (this.head < this.queue.length) {
      const h = this.queue[this.head++]!
      if (!h.done) this.finish(h)
    }
    this.queue.length = 0
    this.head = 0
    this.byClient.clear()
  }

  private releaseCredited(): void {
    while (this.credit >= 1 && this.head < this.queue.length) {
      const h = this.queue[this.head++]!
      if (h.done) continue
      this.credit--
      this.finish(h)
    }
    this.skipEmpty()
    // Forwarding that found nothing to release buys no burst later: at most one release is carried.
    if (this.head === this.queue.length) {
      this.queue.length = 0
      this.head = 0
      if (this.credit > 1) this.credit = 1
    } else if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue.splice(0, this.head)
      this.head = 0
    }
  }

  private skipEmpty(): void {
    while (this.head < this.queue.length && this.queue[this.head]!.done) this.head++
  }

  private finish(h: Held): void {
    h.done = true
    const mine = this.byClient.get(h.client)
    if (mine) {
      // Released oldest first: it is (almost always) the client's first.
      const i = mine.indexOf(h)
      if (i >= 0) mine.splice(i, 1)
      if (mine.length === 0) this.byClient.delete(h.client)
    }
    this.count--
    this.delayed++
    this.src.metrics.ingressPubacksDelayed.inc()
    this.src.metrics.ingressPubackDelay.observe((this.now() - h.at) / 1000)
    h.release()
  }

  private schedule(): void {
    if (this.closed) return
    this.timer = setTimeout(
      () => {
        this.timer = undefined
        this.tick()
        this.schedule()
      },
      this.slowing ? SLOWDOWN_TICK_SLOWING_MS : SLOWDOWN_TICK_MS,
    )
    this.timer.unref()
  }

  /** Stops the timer and releases everything held. Idempotent. */
  close(): void {
    this.closed = true
    if (this.timer) clearTimeout(this.timer)
    this.timer = undefined
    if (this.slowing) {
      this.src.metrics.ingressSlowedSeconds.inc((this.now() - this.slowingSince) / 1000)
      this.stop()
    }
  }
}

/**
 * The forwarding lag, cheap enough to read every tick: the age of the oldest record not yet
 * acknowledged by JetStream, from samples (last assigned seq, time) taken at most every
 * `everyMs` while records are appended. The oldest record's time is interpolated between the two
 * samples around its seq; a record older than the first sample kept (appended before start, or
 * more than `capacity` samples ago) counts from that sample (a lower bound, above any sensible
 * --max-forward-lag). ferry_log_oldest_unforwarded_age_seconds, read from the record once a
 * second, stays the exact figure.
 */
export class LagClock {
  private readonly seqs: Float64Array
  private readonly times: Float64Array
  private first = 0
  private count = 0

  constructor(
    /** The last seq assigned in the log. */
    private readonly lastSeq: () => number,
    /** Every seq <= this one is acknowledged upstream. */
    private readonly ackedSeq: () => number,
    private readonly now: () => number = () => performance.now(),
    private readonly capacity = 16_384,
    private readonly everyMs = 90,
  ) {
    this.seqs = new Float64Array(capacity)
    this.times = new Float64Array(capacity)
    this.sample()
  }

  /**
   * Notes the last assigned seq now. A seq seen again only moves the time it was last seen (kept
   * as a second sample of that seq), so that records appended after a quiet spell are dated from
   * its end, not from its start. A new seq is sampled at most every `everyMs`.
   */
  sample(): void {
    const seq = this.lastSeq()
    const t = this.now()
    if (this.count > 0) {
      const last = (this.first + this.count - 1) % this.capacity
      if (this.seqs[last] === seq) {
        const prev = (this.first + this.count - 2 + this.capacity) % this.capacity
        if (this.count > 1 && this.seqs[prev] === seq) {
          this.times[last] = t
          return
        }
      } else if (t - this.times[last]! < this.everyMs) return
    }
    if (this.count === this.capacity) {
      this.first = (this.first + 1) % this.capacity
      this.count--
    }
    const at = (this.first + this.count) % this.capacity
    this.seqs[at] = seq
    this.times[at] = t
    this.count++
  }

  /** Samples, then returns the lag in ms. */
  lagMs(): number {
    this.sample()
    const oldest = this.ackedSeq() + 1
    if (oldest > this.lastSeq()) return 0
    const now = this.now()
    // First sample with seq >= oldest (binary search: sampled seqs only grow).
    let lo = 0
    let hi = this.count
    while (lo < hi) {
      const mid = (lo + hi) >>> 1
      if (this.seqs[(this.first + mid) % this.capacity]! >= oldest) hi = mid
      else lo = mid + 1
    }
    if (lo === this.count) {
      // Appended after the last sample (less than everyMs ago).
      return Math.max(0, now - this.times[(this.first + this.count - 1) % this.capacity]!)
    }
    const i = (this.first + lo) % this.capacity
    if (lo === 0) return Math.max(0, now - this.times[i]!)
    const p = (this.first + lo - 1) % this.capacity
    const s0 = this.seqs[p]!
    const t0 = this.times[p]!
    const t = t0 + ((this.times[i]! - t0) * (oldest - s0)) / (this.seqs[i]! - s0)
    return Math.max(0, now - t)
  }
}
