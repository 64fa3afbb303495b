// Readiness: named checks with a state each (ok / degraded / failing), the backlog, and the drain
// estimate. Sampled once a second; /readyz and the metrics read the last sample.
//
// - mqtt:     the MQTT listener(s) accept connections.
// - log:      the ring log has not failed (a failed fdatasync stops it).
// - disk:     free space in the data directory: degraded below 2 segments, failing below 1 or
//             while the log refuses appends because the disk is full.
// - upstream: connected to NATS *and acknowledging*: failing while disconnected; degraded as soon
//             as records have waited the forwarder's --ack-timeout-ms without any PubAck (a frozen
//             or overloaded server, a stream refusing writes: "no PubAck for N s"), and failing once
//             they have waited --ready-stall-ms (UPSTREAM_STALL_MS by default). "Waited" counts
//             from the later of the last PubAck and the moment records started waiting.
// - downlink: commands and RPC from the cloud: failing when its NATS connection is up but the RPC
//             subscription has ended (requests would go unanswered); degraded while not connected
//             or while the command stream cannot be used (devices' data is still taken and kept).
//             The detail names the last error while handling a request or command, and when.
// The gateway is ready (HTTP 200) unless a check is failing (HTTP 503); degraded says why in 200.
//
// With several priority classes (one ring log and one forwarder each) the checks cover every class:
// the details name the class concerned (a log that stopped, a forwarder's connection that is down;
// degraded: the most important class with records waiting, when they wait --ack-timeout-ms without a
// PubAck of its forwarder while other classes are acknowledged, not counting the time it was held back
// behind a more important class), the backlog is summed (the oldest
// age is the oldest over the classes), and `classes` gives each class's records, bytes and oldest
// age. The drain estimate divides the backlog by the recent forward rate or by the --drain-max-rate
// cap, whichever is lower.
import fs from 'node:fs'
import { ClosedSignal } from '../lifecycle.js'
import type { Component, Deadline } from '../lifecycle.js'
import type { LogReader, RingLog } from '../log/index.js'

export type CheckState = 'ok' | 'degraded' | 'failing'

export interface Check {
  readonly status: CheckState
  readonly detail: string
}

/** One priority class's backlog, as /readyz and /status.json show it under `classes`. */
export interface ClassBacklog {
  /** Records not yet acknowledged by JetStream. */
  readonly records: number
  /** Their bytes (estimated from segment sizes, framing included). */
  readonly bytes: number
  /** Age of the class's oldest record not yet acknowledged, seconds (0 without backlog). */
  readonly oldestAgeSeconds: number
}

export interface Readiness {
  readonly status: CheckState
  readonly checks: Readonly<Record<'mqtt' | 'log' | 'disk' | 'upstream' | 'downlink', Check>>
  readonly backlog: {
    /** Summed over the classes. */
    readonly records: number
    /** Age of the oldest record not yet acknowledged by JetStream, seconds (0 without backlog); the oldest over the classes. */
    readonly oldestAgeSeconds: number
    /** Messages acknowledged by JetStream per second, recent average. */
    readonly forwardRatePerSecond: number
    /**
     * Expected seconds until the backlog is empty at the recent rate, or at the --drain-max-rate cap when
     * that is lower (0 without backlog). Null while not draining: upstream not ok, or records waiting
     * with no PubAck in the last DRAIN_FRESH_MS.
     */
    readonly drainEstimateSeconds: number | null
    /** --drain-max-rate as messages per second (see HealthSources.drainCap); null without a cap. */
    readonly drainCapPerSecond: number | null
    /** The cap limits the drain: the estimate uses the cap, or the forward rate is within 10 % of it. */
    readonly drainEstimateCapped: boolean
  }
  /** Per priority class, most important first (just `normal` without --priority). */
  readonly classes: Readonly<Record<string, ClassBacklog>>
}

/** One point of the status page's charts. */
export interface SeriesPoint {
  /** ms since the Unix epoch. */
  readonly t: number
  /** Messages per second received from devices, and acknowledged by JetStream. */
  readonly in: number
  readonly out: number
  readonly backlog: number
  readonly oldestAgeSeconds: number
}

/** Messages dropped by a policy within one sample. */
export interface DropEvent {
  readonly t: number
  readonly reason: string
  readonly count: number
  /** The priority class of the dropped records (with --priority, for record drops); absent otherwise. */
  readonly class?: string
}

/** Seconds between series points, and how many are kept (10 minutes). */
const SERIES_EVERY_S = 2
const SERIES_POINTS = 300
const RECENT_DROPS = 50

/** A backlog with no PubAck for this long while connected fails the upstream check. */
export const UPSTREAM_STALL_MS = 30_000
/** A drain estimate needs a PubAck this recent (the rate average would otherwise outlive the acks). */
const DRAIN_FRESH_MS = 2000
/** Weight of the newest one-second sample in the forward-rate average (about a 20 s window). */
const RATE_ALPHA = 0.1

/** What the downlink tells about itself (see the `downlink` check). */
export interface DownlinkHealth {
  readonly connected: boolean
  /** The RPC request subscription is open. */
  readonly subscribed: boolean
  /** Why the command stream cannot be used ('' = it can). */
  readonly commandsProblem: string
  readonly lastError?: { readonly at: number; readonly message: string }
}

/** A gauge whose value is read from a function at scrape time. */
interface Collected {
  collect(fn: () => number): void
}

/** A gauge with one series per label set, each read from a function at scrape time. */
interface CollectedByLabels {
  collect(labels: Record<string, string>, fn: () => number): void
}

/**
 * The metrics health reads (counts, as structured values) and the gauges it exports; the gateway's
 * catalogue implements this structurally.
 */
export interface HealthMetrics {
  /** Messages acknowledged by JetStream so far. */
  readonly forwarded: { get(): number }
  /** Publishes accepted from devices so far, over every label set. */
  readonly mqttReceived: { total(): number }
  /**
   * Messages dropped so far, by the value of the `reason` label; `entries` (when there) gives every label
   * set, so recent drops name their class.
   */
  readonly drops: { byLabel(name: 'reason'): ReadonlyMap<string, number>; entries?(): ReadonlyArray<{ readonly labels: Readonly<Record<string, string>> | undefined; readonly value: number }> }
  /** ferry_log_oldest_unforwarded_age_seconds, ferry_forward_rate_messages_per_second, ferry_forward_drain_estimate_seconds, ferry_health_ready. */
  readonly logOldestAge: Collected
  readonly forwardRate: Collected
  readonly drainEstimate: Collected
  readonly ready: Collected
  /** ferry_log_class_oldest_unforwarded_age_seconds{class}. */
  readonly logClassOldestAge: CollectedByLabels
}

/** The state of a forwarder's link to JetStream, as health judges it. */
export interface UpstreamHealth {
  readonly connected: boolean
  readonly lastAckAtMs: number
  readonly problem: string
  readonly streamProblem?: string
  readonly ackTimeoutMs?: number
}

/** One priority class's log (and forwarder) as health reads it. */
export interface HealthLog {
  /** The class: high, normal or low. */
  readonly name: string
  readonly log: RingLog
  readonly openReader: (fromSeq: number) => LogReader
  /** This class's forwarder; without it the class is judged by the combined `upstream`. */
  readonly upstream?: () => UpstreamHealth
}

interface CommonSources {
  readonly dataDir: string
  readonly segmentBytes: number
  readonly mqttListening: () => boolean
  /**
   * Every forwarder as one (connected when all are, the latest PubAck, the first problem).
   * `streamProblem`: why the stream check through the JetStream API failed ('' = it did not).
   * `ackTimeoutMs`: how long the forwarder waits for a PubAck (--ack-timeout-ms); records waiting
   * longer than that without any PubAck degrade the upstream check at once. Without it, only the
   * stall (`stallMs`) is checked.
   */
  readonly upstream: () => UpstreamHealth
  readonly metrics: HealthMetrics
  readonly stallMs?: number
  /** The downlink's state; without it the check says the downlink is not running. */
  readonly downlink?: () => DownlinkHealth
  /**
   * --drain-max-rate in messages per second (the DrainPacer's capMessagesPerSecond), Infinity without a
   * cap; without it: no cap. `avgRecordBytes`: the backlog's average record size in the log (payload,
   * topic, envelope and framing: more than the payload bytes a byte cap counts, so with a byte cap
   * the estimate errs long; a caller that knows the average payload may use that instead).
   */
  readonly drainCap?: (avgRecordBytes: number) => number
}

/** One log (`log`, `openReader`: the class normal), or one per priority class (`logs`, most important first). */
export type HealthSources = CommonSources &
  (
    | { readonly log: RingLog; readonly openReader: (fromSeq: number) => LogReader; readonly logs?: undefined }
    | { readonly logs: readonly HealthLog[]; readonly log?: undefined; readonly openReader?: undefined }
  )

/** A class's log and what health keeps about it between samples. */
interface ClassState extends HealthLog {
  /** When its records started waiting (0: none waiting). */
  backlogSince: number
  /** Receive time of its oldest unacknowledged record, as last read (0: unknown or none). */
  oldestTs: number
  readingOldest: boolean
  /** Held back at the last evaluation: records waiting while a more important class had records. */
  held: boolean
  /** Time held back since its forwarder's last PubAck (or since its records started waiting). */
  heldMs: number
  /** Its forwarder's lastAckAtMs at the last evaluation (a newer one restarts heldMs). */
  heldAck: number
}

/** Samples readiness once a second from construction until close(). */
export class Health implements Component {
  private rate = 0
  private lastForwarded = 0
  private lastSampleAt = 0
  private backlogSince = 0
  private lastEvalAt = 0
  private readonly classes: ClassState[]
  private readonly timer: NodeJS.Timeout
  private current: Readiness
  private ticks = 0
  private lastReceived = 0
  private lastForwardedForSeries = 0
  private lastSeriesAt = 0
  private readonly points: SeriesPoint[] = []
  private lastDrops: ReadonlyMap<string, number> = new Map()
  private readonly drops: DropEvent[] = []
  private readonly stopped = new ClosedSignal()

  constructor(private readonly src: HealthSources) {
    const logs: readonly HealthLog[] = src.logs ?? [{ name: 'normal', log: src.log, openReader: src.openReader }]
    if (logs.length === 0) throw new Error('health needs at least one log')
    this.classes = logs.map((l) => ({ ...l, backlogSince: 0, oldestTs: 0, readingOldest: false, held: false, heldMs: 0, heldAck: 0 }))
    const m = src.metrics
    m.logOldestAge.collect(() => this.liveOldestAgeSeconds())
    for (const c of this.classes) m.logClassOldestAge.collect({ class: c.name }, () => this.classOldestAgeSeconds(c, Date.now()))
    m.forwardRate.collect(() => this.current.backlog.forwardRatePerSecond)
    m.drainEstimate.collect(() => this.current.backlog.drainEstimateSeconds ?? NaN)
    m.ready.collect(() => (this.current.status === 'failing' ? 0 : 1))
    this.lastForwarded = m.forwarded.get()
    this.lastSampleAt = Date.now()
    this.lastReceived = m.mqttReceived.total()
    this.lastForwardedForSeries = this.lastForwarded
    this.lastSeriesAt = this.lastSampleAt
    this.lastDrops = this.dropCounts()
    this.current = this.evaluate()
    this.timer = setInterval(() => this.sample(), 1000)
    this.timer.unref()
  }

  /** The last evaluation (at most a second old). */
  get readiness(): Readiness {
    // The backlog's age as of now, not as of the last sample (up to a second ago).
    const c = this.current
    if (c.backlog.records === 0) return c
    const now = Date.now()
    const classes: Record<string, ClassBacklog> = {}
    for (const k of this.classes) {
      const b = c.classes[k.name]!
      classes[k.name] = b.records > 0 ? { ...b, oldestAgeSeconds: this.classOldestAgeSeconds(k, now) } : b
    }
    return { ...c, backlog: { ...c.backlog, oldestAgeSeconds: this.liveOldestAgeSeconds() }, classes }
  }

  /** Age of the oldest unacknowledged record now, over every class (0 without backlog). */
  private liveOldestAgeSeconds(): number {
    const now = Date.now()
    return this.classes.reduce((a, c) => Math.max(a, this.classOldestAgeSeconds(c, now)), 0)
  }

  private sample(): void {
    const now = Date.now()
    const forwarded = this.src.metrics.forwarded.get()
    const perS = ((forwarded - this.lastForwarded) * 1000) / Math.max(1, now - this.lastSampleAt)
    this.rate = this.rate === 0 ? perS : this.rate + RATE_ALPHA * (perS - this.rate)
    this.lastForwarded = forwarded
    this.lastSampleAt = now
    for (const c of this.classes) this.refreshOldest(c)
    this.current = this.evaluate()
    this.recordDrops(now)
    if (++this.ticks % SERIES_EVERY_S === 0) this.recordPoint(now)
  }

  private recordPoint(now: number): void {
    const m = this.src.metrics
    const received = m.mqttReceived.total()
    const forwarded = m.forwarded.get()
    const s = Math.max(0.001, (now - this.lastSeriesAt) / 1000)
    this.points.push({
      t: now,
      in: Math.round(((received - this.lastReceived) / s) * 10) / 10,
      out: Math.round(((forwarded - this.lastForwardedForSeries) / s) * 10) / 10,
      backlog: this.current.backlog.records,
      oldestAgeSeconds: Math.round(this.current.backlog.oldestAgeSeconds * 10) / 10,
    })
    if (this.points.length > SERIES_POINTS) this.points.shift()
    this.lastReceived = received
    this.lastForwardedForSeries = forwarded
    this.lastSeriesAt = now
  }

  /** Drops so far by reason, or by reason and class (`reason class`) where the series has a class. */
  private dropCounts(): Map<string, number> {
    const d = this.src.metrics.drops
    if (!d.entries) return new Map(d.byLabel('reason'))
    const out = new Map<string, number>()
    for (const { labels, value } of d.entries()) {
      const reason = labels?.reason
      if (reason === undefined) continue
      const key = labels?.class === undefined ? reason : `${reason} ${labels.class}`
      out.set(key, (out.get(key) ?? 0) + value)
    }
    return out
  }

  private recordDrops(now: number): void {
    const drops = this.dropCounts()
    for (const [key, n] of drops) {
      const d = n - (this.lastDrops.get(key) ?? 0)
      if (d <= 0) continue
      const [reason = key, cls] = key.split(' ')
      this.drops.push(cls === undefined ? { t: now, reason, count: d } : { t: now, reason, count: d, class: cls })
    }
    if (this.drops.length > RECENT_DROPS) this.drops.splice(0, this.drops.length - RECENT_DROPS)
    this.lastDrops = drops
  }

  /** The last 10 minutes, one point every 2 s. */
  get series(): readonly SeriesPoint[] {
    return this.points
  }

  /** The most recent drops, oldest first. */
  get recentDrops(): readonly DropEvent[] {
    return this.drops
  }

  /** Reads the receive time of a class's oldest unacknowledged record (one small read, at most one at a time per class). */
  private refreshOldest(c: ClassState): void {
    const { log } = c
    if (log.durableSeq <= log.acked) {
      c.oldestTs = 0
      return
    }
    if (c.readingOldest) return
    c.readingOldest = true
    const reader = c.openReader(log.acked + 1)
    reader
      .read(1, 64 * 1024)
      .then((recs) => (c.oldestTs = recs[0]?.ts ?? c.oldestTs))
      .catch(() => {})
      .finally(() => {
        c.readingOldest = false
        void reader.close().catch(() => {})
      })
  }

  /**
   * Age of a class's oldest unacknowledged record (0 without backlog): from the log's memory tail when it
   * holds that record (exact, now), else from the last read of it (refreshOldest, up to a second old: at
   * worst high by that second).
   */
  private classOldestAgeSeconds(c: ClassState, now: number): number {
    const { log } = c
    if (log.durableSeq <= log.acked) return 0
    const ts = log.tailBatchFor(log.acked + 1)?.ts ?? c.oldestTs
    return ts > 0 ? Math.max(0, (now - ts) / 1000) : 0
  }

  private evaluate(): Readiness {
    const now = Date.now()
    const several = this.classes.length > 1
    const per = this.classes.map((c) => {
      const records = Math.max(0, c.log.durableSeq - c.log.acked)
      if (records === 0) c.backlogSince = 0
      else if (c.backlogSince === 0) c.backlogSince = now
      return { c, records }
    })
    if (several) this.noteHeld(per, now)
    const records = per.reduce((a, p) => a + p.records, 0)
    if (records === 0) this.backlogSince = 0
    else if (this.backlogSince === 0) this.backlogSince = now
    // "(high 3, low 500)": which classes hold the backlog, with several classes only (one class: as before).
    const split = several && records > 0 ? ` (${per.filter((p) => p.records > 0).map((p) => `${p.c.name} ${p.records}`).join(', ')})` : ''
    const mqtt: Check = this.src.mqttListening() ? { status: 'ok', detail: 'listening' } : { status: 'failing', detail: 'MQTT listener not listening' }
    const failed = this.classes.find((c) => c.log.failure)
    const logCheck: Check = failed ? { status: 'failing', detail: `ring log${several ? ` of class ${failed.name}` : ''} stopped: ${failed.log.failure!.message}` } : { status: 'ok', detail: 'writable' }
    const disk = this.disk()
    const up = this.src.upstream()
    const stallMs = this.src.stallMs ?? UPSTREAM_STALL_MS
    // Bytes of the backlog (estimated), and the cap at its average record size.
    const bytesOf = per.map((p) => p.c.log.backlogBytesEstimate())
    const bytes = bytesOf.reduce((a, b) => a + b, 0)
    const capRaw = this.src.drainCap?.(records > 0 ? bytes / records : 0) ?? Infinity
    const cap = Number.isFinite(capRaw) && capRaw > 0 ? capRaw : Infinity
    // A paced backlog is acknowledged in steps: a step apart (about a second, or one record's worth of the cap) is not a wait.
    const pacedSlackMs = cap < Infinity ? 1000 + 1000 / cap : 0
    const waitingMs = records > 0 ? Math.max(0, now - Math.max(this.backlogSince, up.lastAckAtMs) - pacedSlackMs) : 0
    const inClass = (name: string | undefined): string => (several && name ? ` (class ${name})` : '')
    let upstream: Check
    if (!up.connected) {
      const down = several ? per.filter((p) => p.c.upstream && !p.c.upstream().connected).map((p) => p.c.name) : []
      const which = down.length > 0 && down.length < per.length ? ` (${down.length > 1 ? 'forwarders of classes' : 'forwarder of class'} ${down.join(', ')})` : ''
      upstream = { status: 'failing', detail: `not connected to NATS${which}; buffering ${records} records in the log${split}${up.problem ? ` (${up.problem})` : ''}` }
    } else if (up.streamProblem) {
      const who = several ? per.find((p) => p.c.upstream?.().streamProblem)?.c.name : undefined
      upstream = { status: 'failing', detail: `connected, but the stream is not usable${inClass(who)}; buffering ${records} records in the log${split}: ${up.streamProblem}` }
    } else if (waitingMs > stallMs) upstream = { status: 'failing', detail: `connected but no PubAck for ${Math.round(waitingMs / 1000)} s with ${records} records waiting${split}${up.problem ? `: ${up.problem}` : ''}` }
    else if (up.ackTimeoutMs !== undefined && waitingMs >= up.ackTimeoutMs) {
      upstream = { status: 'degraded', detail: `connected but no PubAck for ${Math.round(waitingMs / 1000)} s with ${records} records waiting${split} (--ack-timeout-ms ${up.ackTimeoutMs}; failing after ${Math.round(stallMs / 1000)} s)${up.problem ? `: ${up.problem}` : ''}` }
    } else upstream = this.stalledClass(per, now, up, cap) ?? { status: 'ok', detail: records > 0 ? `acknowledging; ${records} records to forward${split}` : 'acknowledging' }
    const checks = { mqtt, log: logCheck, disk, upstream, downlink: this.downlink(now) }
    const states = Object.values(checks).map((c) => c.status)
    const status: CheckState = states.includes('failing') ? 'failing' : states.includes('degraded') ? 'degraded' : 'ok'
    const rate = Math.round(this.rate * 10) / 10
    const drainRate = Math.min(rate, cap)
    // Not draining while upstream is down, stalled or silent, whatever the rate average still says.
    const draining = upstream.status === 'ok' && waitingMs < DRAIN_FRESH_MS && rate > Math.min(0.5, cap / 2)
    const classes: Record<string, ClassBacklog> = {}
    per.forEach((p, i) => (classes[p.c.name] = { records: p.records, bytes: bytesOf[i]!, oldestAgeSeconds: this.classOldestAgeSeconds(p.c, now) }))
    return {
      status,
      checks,
      backlog: {
        records,
        oldestAgeSeconds: records > 0 ? this.classes.reduce((a, c) => Math.max(a, this.classOldestAgeSeconds(c, now)), 0) : 0,
        forwardRatePerSecond: rate,
        drainEstimateSeconds: records === 0 ? 0 : draining ? Math.round((records / drainRate) * 10) / 10 : null,
        drainCapPerSecond: cap < Infinity ? Math.round(cap * 10) / 10 : null,
        drainEstimateCapped: cap < Infinity && records > 0 && drainRate >= 0.9 * cap,
      },
      classes,
    }
  }

  /**
   * Keeps, per class, how long the priority gate has held it back (records waiting while a more important
   * class had records) since its forwarder's last PubAck: that time is not a wait of its own. Sampled:
   * the time since the last evaluation counts as held when the class was held at that evaluation.
   */
  private noteHeld(per: readonly { c: ClassState; records: number }[], now: number): void {
    const dt = this.lastEvalAt > 0 ? Math.max(0, now - this.lastEvalAt) : 0
    this.lastEvalAt = now
    let ahead = false
    for (const { c, records } of per) {
      const ack = c.upstream?.().lastAckAtMs ?? 0
      if (records === 0 || ack !== c.heldAck) c.heldMs = 0
      else if (c.held) c.heldMs += dt
      c.heldAck = ack
      c.held = records > 0 && ahead
      if (records > 0) ahead = true
    }
  }

  /**
   * With several classes, while the combined upstream is ok: the most important class with records waiting,
   * when they have waited --ack-timeout-ms without a PubAck of its own forwarder. Degraded, never failing:
   * the gateway forwards (other classes are acknowledged), and a restart would not help a class starved,
   * e.g. of --drain-max-rate by unpaced traffic. Classes behind it are not judged (they legitimately wait
   * for it), and the time it was itself behind one is not counted (see noteHeld). Undefined when none.
   */
  private stalledClass(per: readonly { c: ClassState; records: number }[], now: number, combined: UpstreamHealth, cap: number): Check | undefined {
    if (per.length < 2) return undefined
    const first = per.find((p) => p.records > 0)
    const own = first?.c.upstream?.()
    if (!first || !own) return undefined
    const paced = cap < Infinity && first.c.name !== 'high'
    // The time the gate held it back behind a more important class is not a wait of its own.
    const waitingMs = now - Math.max(first.c.backlogSince, own.lastAckAtMs) - first.c.heldMs - (paced ? 1000 + 1000 / cap : 0)
    const ackTimeoutMs = own.ackTimeoutMs ?? combined.ackTimeoutMs
    if (ackTimeoutMs === undefined || waitingMs < ackTimeoutMs) return undefined
    const why = own.problem ? `: ${own.problem}` : paced ? ' (its drain is capped by --drain-max-rate)' : ''
    return { status: 'degraded', detail: `class ${first.c.name}: no PubAck for ${Math.round(waitingMs / 1000)} s with ${first.records} records waiting while other classes are acknowledged${why}` }
  }

  private downlink(now: number): Check {
    const d = this.src.downlink?.()
    if (!d) return { status: 'ok', detail: 'not running' }
    const last = d.lastError ? `; last error ${Math.round((now - d.lastError.at) / 1000)} s ago: ${d.lastError.message}` : ''
    if (!d.connected) return { status: 'degraded', detail: `not connected to NATS: no commands or RPC${last}` }
    if (!d.subscribed) return { status: 'failing', detail: `connected, but the RPC subscription has ended for a device connected here: its requests go unanswered${last}` }
    if (d.commandsProblem) return { status: 'degraded', detail: `command stream not usable: ${d.commandsProblem}${last}` }
    return { status: 'ok', detail: `serving commands and RPC${last}` }
  }

  private disk(): Check {
    const fullFor = this.classes.reduce((a, c) => Math.max(a, c.log.diskFullForMs), 0)
    if (fullFor > 0) {
      return { status: 'failing', detail: `disk full (ENOSPC) for ${Math.round(fullFor / 1000)} s: publishes are refused until space returns; forwarding goes on` }
    }
    let free: number
    try {
      const s = fs.statfsSync(this.src.dataDir)
      free = s.bavail * s.bsize
    } catch (err) {
      return { status: 'failing', detail: `cannot stat the data directory: ${(err as Error).message}` }
    }
    const seg = this.src.segmentBytes
    const mib = (b: number): string => `${(b / 2 ** 20).toFixed(0)} MiB`
    if (free < seg) return { status: 'failing', detail: `${mib(free)} free in the data directory, less than one segment (${mib(seg)}): appends will fail` }
    if (free < 2 * seg) return { status: 'degraded', detail: `${mib(free)} free in the data directory, less than two segments (${mib(2 * seg)})` }
    return { status: 'ok', detail: `${mib(free)} free` }
  }

  /** Stops sampling (the last readiness stays readable). Idempotent; nothing to wait for. */
  close(_deadline?: Deadline): Promise<void> {
    clearInterval(this.timer)
    this.stopped.resolve()
    return Promise.resolve()
  }

  /** Settles after close(): health has no failure of its own. */
  closed(): Promise<Error | undefined> {
    return this.stopped.promise
  }
}
