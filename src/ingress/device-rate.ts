// Per-device publish rates (--device-max-rate, --device-hard-rate): a token bucket per device
// (burst = rate), kept as a GCRA "theoretical arrival time", one number per bucket.
//
// - --device-max-rate: each new publish of a device takes the next slot of its bucket; its
//   PUBACK/PUBREC (QoS 0: the reading of its socket) is released at that slot's time. The message
//   is stored meanwhile; nothing is dropped. A device that waits for its acknowledgements (every
//   QoS 1/2 client has a bounded in-flight window) is so brought down to the rate.
// - --device-hard-rate: a publish past the hard bucket is refused when `strict` (MQTT 5 QoS 1/2:
//   DISCONNECT 0x96, QoS 0: dropped; the caller decides) without taking a slot; otherwise (MQTT 3.1.1 QoS 1/2,
//   which have no negative acknowledgement) it takes the hard bucket's next slot and is held until then.
// - Bound on what is held: the core reads a connection's next packets only once every publish of
//   its last read was answered (aedes-seam.ts), so a device holds at most one read's worth of
//   publishes; MQTT 5 Receive Maximum (--max-inflight-in) bounds QoS 2 ones as before.
// - A bucket whose arrival time is in the past is full, the same as no bucket: devices idle that
//   long (or gone) are forgotten by a sweep, which loses nothing (a reconnect does not refill a bucket
//   that is not full).
// - A client that disconnects has its held acknowledgements handed back at once (the core writes
//   nothing on a closed connection; the device's resend is recognised as a retransmission).
import type { MqttClientRef } from './aedes-seam.js'

/** How often buckets of idle devices are forgotten (ms). */
export const RATE_SWEEP_MS = 10_000

/** Per device: the theoretical arrival times of its two buckets (ms, on the monotonic clock). */
interface DeviceBuckets {
  maxTat: number
  hardTat: number
}

interface Held {
  readonly at: number
  readonly release: () => void
}

/** One connection's held acknowledgements, in slot order (slots of one device only grow). */
interface HeldQueue {
  readonly items: Held[]
  head: number
  timer: NodeJS.Timeout | undefined
}

/** What the rate limiter records (optional: the gateway's catalogue may not have them). */
export interface DeviceRateMetrics {
  /** ferry_ingress_device_rate_held_total. */
  readonly deviceRateHeld?: { inc(n?: number): void }
  /** ferry_ingress_device_rate_holding. */
  readonly deviceRateHolding?: { collect(read: () => number): void }
}

export interface DeviceRateOptions {
  /** --device-max-rate, publishes/s per device (0 = off). */
  readonly maxRate: number
  /** --device-hard-rate, publishes/s per device (0 = off). */
  readonly hardRate: number
  readonly metrics?: DeviceRateMetrics
  /** Monotonic clock in ms; a seam for unit tests. */
  readonly now?: () => number
  /** Unit tests sweep and release themselves (no timers). */
  readonly manual?: boolean
}

/** The outcome of a publish's arrival: refused (over the hard rate, strict), or the time its acknowledgement may go. */
export type RateDecision = { readonly refused: true } | { readonly refused: false; readonly releaseAt: number }

const NOW: RateDecision = { refused: false, releaseAt: 0 }
const REFUSED: RateDecision = { refused: true }

/**
 * Takes one slot of a GCRA bucket of `rate`/s, burst `rate`, whose theoretical arrival time is
 * `tat`: returns the new tat and when the slot is (>= now), or undefined when it is not within the
 * burst and `strict`.
 */
function slot(tat: number, now: number, rate: number, strict: boolean): { tat: number; at: number } | undefined {
  const interval = 1000 / rate
  const tolerance = 1000 - interval // burst - 1 intervals
  const t = Math.max(tat, now)
  const at = t - tolerance
  if (at > now && strict) return undefined
  return { tat: t + interval, at: Math.max(now, at) }
}

/** Per-device rate limits. */
export class DeviceRates {
  private readonly buckets = new Map<string, DeviceBuckets>()
  private readonly held = new Map<MqttClientRef, HeldQueue>()
  private holding = 0
  private sweeper: NodeJS.Timeout | undefined
  private closed = false
  private readonly now: () => number

  constructor(private readonly opts: DeviceRateOptions) {
    this.now = opts.now ?? (() => performance.now())
    opts.metrics?.deviceRateHolding?.collect(() => this.holding)
    if (this.enabled && !opts.manual) {
      this.sweeper = setInterval(() => this.sweep(), RATE_SWEEP_MS)
      this.sweeper.unref()
    }
  }

  /** Whether either rate is set. */
  get enabled(): boolean {
    return this.opts.maxRate > 0 || this.opts.hardRate > 0
  }

  /** Acknowledgements (and QoS 0 reads) held now. */
  get heldNow(): number {
    return this.holding
  }

  /** Whether `client` has acknowledgements (or QoS 0 reads) held now: its socket is not read meanwhile. */
  holds(client: MqttClientRef): boolean {
    return this.held.has(client)
  }

  /** Devices with a bucket (not full). */
  get tracked(): number {
    return this.buckets.size
  }

  /**
   * A new publish of `clientId` arrives: refused when over --device-hard-rate and `strict`, else
   * the time its acknowledgement may go (the later of its two buckets' slots; <= now: at once).
   */
  arrive(clientId: string, strict: boolean): RateDecision {
    const { maxRate, hardRate } = this.opts
    if (maxRate <= 0 && hardRate <= 0) return NOW
    const now = this.now()
    let b = this.buckets.get(clientId)
    if (!b) {
      b = { maxTat: now, hardTat: now }
      this.buckets.set(clientId, b)
    }
    let releaseAt = now
    if (hardRate > 0) {
      const s = slot(b.hardTat, now, hardRate, strict)
      if (!s) return REFUSED
      b.hardTat = s.tat
      releaseAt = s.at
    }
    if (maxRate > 0) {
      const s = slot(b.maxTat, now, maxRate, false)!
      b.maxTat = s.tat
      if (s.at > releaseAt) releaseAt = s.at
    }
    return releaseAt > now ? { refused: false, releaseAt } : NOW
  }

  /**
   * Runs `release` at `releaseAt` (monotonic ms; at once when that has passed, the client is gone
   * or the limiter closed). A connection's releases run in the order they were held.
   */
  hold(client: MqttClientRef, releaseAt: number, release: () => void): void {
    const q = this.held.get(client)
    if (this.closed || client.closed || (releaseAt <= this.now() && !q)) return release()
    this.opts.metrics?.deviceRateHeld?.inc()
    this.holding++
    if (q) {
      q.items.push({ at: releaseAt, release })
      return
    }
    const fresh: HeldQueue = { items: [{ at: releaseAt, release }], head: 0, timer: undefined }
    this.held.set(client, fresh)
    this.schedule(client, fresh)
  }

  /** Releases what is due on `client`'s queue and waits for the next one. */
  private schedule(client: MqttClientRef, q: HeldQueue): void {
    q.timer = undefined
    const now = this.now()
    while (q.head < q.items.length && q.items[q.head]!.at <= now) this.finish(q.items[q.head++]!)
    if (q.head === q.items.length) {
      this.held.delete(client)
      return
    }
    if (q.head > 256 && q.head * 2 > q.items.length) {
      q.items.splice(0, q.head)
      q.head = 0
    }
    if (this.opts.manual) return
    q.timer = setTimeout(() => this.schedule(client, q), Math.max(1, q.items[q.head]!.at - now))
  }

  /** Unit tests: releases what is due now on every connection. */
  tick(): void {
    for (const [client, q] of [...this.held]) this.schedule(client, q)
  }

  private finish(h: Held): void {
    this.holding--
    h.release()
  }

  /** `client` went away: its held acknowledgements are handed back at once (nothing is written on a closed connection). */
  clientGone(client: MqttClientRef): void {
    const q = this.held.get(client)
    if (!q) return
    this.held.delete(client)
    if (q.timer) clearTimeout(q.timer)
    while (q.head < q.items.length) this.finish(q.items[q.head++]!)
  }

  /** Forgets the buckets that are full again (nothing of them is left to remember). */
  sweep(): void {
    const now = this.now()
    for (const [id, b] of this.buckets) if (b.maxTat <= now && b.hardTat <= now) this.buckets.delete(id)
  }

  /** Releases everything held and stops the sweep. Idempotent. */
  close(): void {
    this.closed = true
    if (this.sweeper) clearInterval(this.sweeper)
    this.sweeper = undefined
    for (const client of [...this.held.keys()]) this.clientGone(client)
  }
}
