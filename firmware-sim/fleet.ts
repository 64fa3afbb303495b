// Device fleet simulator: thousands of simulated firmware MQTT clients on one shared scheduler, with the profiles,
// failures and QoS mix of a real fleet, and a ledger of every acknowledged (device, seq).
//
// Behaviour worth knowing (mqtt.js v5.16, which this relies on):
// - Every device is one mqtt.js client. QoS 1/2 messages published while disconnected, or in flight when the link
//   drops, sit in the client's in-memory outgoing store and are re-sent by mqtt.js on the next CONNACK, *also with
//   clean=true*, and with the DUP flag still 0 (mqtt.js never sets it). The simulator never re-sends those itself.
// - mqtt.js replays that store one message at a time (the next goes out only after the previous one is acked) and
//   holds back new publishes until the replay is done; if the link drops during the replay, the held-back publishes
//   fail with "Connection closed". Those (and only errored publishes) are retried by the simulator with the SAME
//   seq, QoS and payload, so a seq is never reused for different data and `done()` can still complete.
// - No per-device Node timers: mqtt.js would arm a setInterval per disconnected client for reconnecting and one
//   per connected client for keepalive. Its keepalive timer goes through the `timerVariant` hook onto the shared
//   wheel (`reschedulePings: false`: a PINGREQ every keepalive period, traffic or not), and its own reconnect timer
//   is switched off by setting the client's private `reconnectSuppressed` flag after every connect(); the fleet
//   reconnects with `reconnect()`, passing the client's own stores so that the outgoing store (the unacknowledged
//   messages) survives. `reconnectPeriod` stays > 0: with 0, mqtt.js fails the callbacks of in-flight messages on
//   a keepalive or CONNACK timeout while keeping them in the store, and the store replay plus the simulator's retry
//   would then publish them twice.
// - QoS 0 is published only while the link is up; produced while it is down, it waits in the device (like firmware
//   buffering readings) and goes out after the reconnect (`queueQoSZero: false`). mqtt.js calls a QoS 0 callback
//   when the write is done, or on 'drain' when the socket buffer was full (payloads over 16 KiB): if the socket
//   dies first the callback never comes, so QoS 0 messages still open when a connection drops are written off
//   (counted in `qos0Dropped`; they were at most once anyway).
// - Reconnect backoff: 500 ms, doubling up to 10 s, ±20 % jitter, reset after a successful CONNACK.
import { performance } from 'node:perf_hooks'
import { connect, type IClientOptions, type MqttClient, type Packet } from 'mqtt'
import { Ledger, writeLedgerFile, type AckLedger } from './ledger.js'
import {
  ALARM_BURST_GAP_MS,
  DEFAULT_LARGE_BYTES,
  MAX_LARGE_BYTES,
  PROFILE_NAMES,
  alarmBurstSize,
  alarmPayload,
  alarmQuietMs,
  assignProfiles,
  binaryPayload,
  initialSensors,
  largePayload,
  telemetryPayload,
  type BurstState,
  type ProfileName,
  type ProfileWeights,
  type Sensors,
} from './payloads.js'
import { createRng, pickWeighted, randomExp, spreadAround, type Rng } from './random.js'
import { Scheduler, Task } from './scheduler.js'

/** MQTT quality of service level. */
export type QoS = 0 | 1 | 2

/** Relative weights of QoS levels, e.g. `{0: 10, 1: 80, 2: 10}`. */
export type QosWeights = Partial<Record<QoS, number>>

/** Options of {@link startFleet}. */
export interface FleetOptions {
  /** Broker URL. Default `mqtt://127.0.0.1:1883`. */
  url?: string
  /** Number of simulated devices, each one MQTT client. Integer ≥ 1. */
  devices: number
  /**
   * Messages per second per device (the long-run average; alarm devices send it in bursts). `0` = closed loop: as
   * fast as acknowledged, with at most `inflight` unacknowledged messages per device.
   */
  ratePerDevice: number
  /** Max unacknowledged messages per device when `ratePerDevice` is 0 (ignored otherwise). Default 10. */
  inflight?: number
  /** MQTT version the devices speak: 4 (3.1.1) or 5. Default 4. */
  protocolVersion?: 4 | 5
  /** QoS of every publish. Default 1. Ignored when `qosMix` is given. */
  qos?: QoS
  /** Each message draws its QoS with these weights, e.g. `{0: 10, 1: 80, 2: 10}`. Default: always `qos`. */
  qosMix?: QosWeights
  /** Messages per device; a device stops producing after this many. Default: unlimited (until `close()`). */
  count?: number
  /** Topic prefix; messages go to `<topicPrefix>/<deviceId>/<profile>`. Default `"devices"`. */
  topicPrefix?: string
  /** Device id / MQTT client id prefix; ids are `<idPrefix>-00001`, `<idPrefix>-00002`, ... Default `"sim"`. */
  idPrefix?: string
  /**
   * Profile mix by weight; devices are assigned profiles in proportion, evenly interleaved. Topics end in the
   * profile name. Default: every device sends the original compact telemetry JSON (device, seq, ts, temp, hum, bat,
   * rssi, status; ~130 bytes) to `…/<id>/telemetry`, as before profiles existed; the `telemetry` profile sends a
   * richer record (~250 bytes: also booleans, a nested object, small arrays).
   */
  profiles?: ProfileWeights
  /** Relative jitter of the publish interval, 0..1 (0.2 = each interval is 80..120 % of 1/rate). Default 0.2. */
  jitter?: number
  /** Per-device rate spread, 0..1: each device's rate is `ratePerDevice` × a fixed factor in [1-s, 1+s]. Default 0. */
  rateSpread?: number
  /** MQTT clean session flag of every device, unless `persistentShare` is given. Default `true`. */
  clean?: boolean
  /**
   * Share of devices (0..1, evenly spread) with persistent sessions (clean=false); they also subscribe to
   * `<topicPrefix>/<id>/cmd` at QoS 1, as firmware waiting for commands does. Default: 1 if `clean` is false, else 0.
   */
  persistentShare?: number
  /**
   * Devices act on Ferry's downlink: they subscribe to `commands/<id>/#` and `devices/<id>/rpc/request/+/json`
   * (QoS 1) and handle `config/set` `{"rate": n}` (new messages per second), `offline` `{"ms": n}` (drop the link and
   * stay away that long), and the RPCs `getConfig` (answers rate, profile, firmware, uptime) and `reboot` (answers,
   * then reconnects after a second). Default false.
   */
  commands?: boolean
  /**
   * Devices fetch their configuration from the cloud at start, through Ferry's requests from devices: on their first
   * CONNACK they publish `requests/<id>/config/get/<n>` (QoS 1, MQTT 3.1.1 with a correlation id level) and take
   * `{"rate": n}` (messages per second) from a `200` answer on `devices/<id>/requests/reply/<n>/200`. Any other answer
   * (`503 no responders`, ...) leaves the configured rate; a device without its configuration asks again at its next
   * CONNACK. Default false.
   */
  fetchConfig?: boolean
  /** Pad each telemetry JSON payload with a `"pad"` string field to this many bytes. Default: no padding. */
  payloadBytes?: number
  /** Size range of `large` payloads in bytes, `[min, max]`. Default `[8192, 65536]`; max ≤ 1 MiB. */
  largeBytes?: readonly [number, number]
  /** Device connects are spread evenly over this many milliseconds. Default `min(devices * 2, 5000)` ms. */
  rampMs?: number
  /** MQTT keepalive in seconds (0 = none). Default 30. */
  keepaliveSec?: number
  /** Milliseconds to wait for a CONNACK before the attempt counts as failed. Default 10000 ms. */
  connectTimeoutMs?: number
  /** First reconnect delay, ms; doubles per failed attempt, ±20 % jitter. Default 500 ms. */
  backoffStartMs?: number
  /** Longest reconnect delay, ms (before jitter). Default 10000 ms. */
  backoffMaxMs?: number
  /**
   * Offline episodes: each device drops its connection (no DISCONNECT, like a lost link) this many times per minute
   * on average (a Poisson process over the fleet), stays away for about `offlineMs` (50..150 %), keeps producing
   * into mqtt.js meanwhile (up to `maxPending`), then reconnects. Default 0 (never).
   */
  offlinePerMin?: number
  /** Mean length of an offline episode, ms. Default 10000 ms. */
  offlineMs?: number
  /** Every this many ms, every connected device drops its connection at once and reconnects (a reconnect storm). */
  stormEveryMs?: number
  /**
   * With `ratePerDevice` > 0: a device that already has this many messages unacknowledged skips producing (a
   * firmware buffer bound; counted in `skipped`). Default 1000.
   */
  maxPending?: number
  /** Seed of the pseudo-random choices (profiles' values, sizes, jitter, QoS draws, failures). Default: random. */
  seed?: number
  /** Resolution of the shared scheduler (publishes, reconnects, keepalive pings): its loop period, ms. Default 10 ms. */
  tickMs?: number
  /** How many recent ack-latency samples to keep for percentiles. Default 100000. */
  latencySamples?: number
}

/** Ack latency summary in milliseconds (0 when there are no samples). */
export interface LatencySummary {
  /** Median, ms. */
  p50: number
  /** 99th percentile, ms. */
  p99: number
  /** Maximum, ms. */
  max: number
}

/** Counters of a running fleet; all cumulative since `startFleet` unless noted. */
export interface FleetStats {
  /** Number of devices. */
  devices: number
  /** Devices whose MQTT connection is currently up (CONNACK received). */
  connected: number
  /** Devices inside a simulated offline episode right now. */
  offline: number
  /** Distinct messages handed to mqtt.js (each seq counted once, retries not counted). */
  sent: number
  /** `sent` by QoS: index 0, 1, 2. */
  sentByQos: readonly [number, number, number]
  /** `sent` by device profile. */
  sentByProfile: Readonly<Record<ProfileName, number>>
  /** Payload bytes of `sent`. */
  bytesSent: number
  /** Messages acknowledged: PUBACK (QoS 1) / PUBCOMP (QoS 2), or written to the socket for QoS 0. */
  acked: number
  /** Messages handed to mqtt.js and not yet acknowledged, plus errored ones waiting to be retried. */
  pending: number
  /** Messages not produced because the device already had `maxPending` unacknowledged. */
  skipped: number
  /** Errors: failed publish callbacks plus client 'error' events (e.g. ECONNREFUSED on every reconnect try). */
  errors: number
  /** The part of `errors` that were failed publish callbacks (each one is retried with the same seq). */
  publishErrors: number
  /** Successful reconnects (CONNACKs after a device's first one). */
  reconnects: number
  /**
   * QoS ≥ 1 messages outstanding when an established connection dropped; mqtt.js resends them from its outgoing
   * store after the reconnect (same packet id, DUP 0).
   */
  unackedAtDrop: number
  /** QoS 0 messages whose write had not completed when their connection dropped (lost, as QoS 0 may be). */
  qos0Dropped: number
  /** Offline episodes started. */
  offlineEpisodes: number
  /** Reconnect storms triggered. */
  storms: number
  /** Commands received (with `commands`). */
  commandsReceived: number
  /** RPC requests answered (with `commands`). */
  rpcAnswered: number
  /** Configurations fetched (`200` answers, with `fetchConfig`). */
  configFetched: number
  /** Configuration requests answered with an error status (with `fetchConfig`), e.g. `503 no responders`. */
  configErrors: number
  /** Latency from `publish()` to its ack callback, QoS ≥ 1 only, over the most recent `latencySamples`. */
  ackLatencyMs: LatencySummary
}

export type { AckLedger } from './ledger.js'

/** A running fleet, returned by {@link startFleet}. */
export interface Fleet extends AsyncDisposable {
  /** Current counters. */
  stats(): FleetStats
  /**
   * Ack latency (QoS ≥ 1) of the samples recorded since the previous call of this method (at most the last
   * `latencySamples`), for per-interval reporting.
   */
  ackLatencyWindow(): LatencySummary & { samples: number }
  /** Every acknowledged (device, seq): PUBACK for QoS 1, PUBCOMP for QoS 2. QoS 0 messages are not recorded. */
  readonly ledger: AckLedger
  /** Acknowledged seqs per device id, ascending (a copy). */
  acked(): Map<string, number[]>
  /** Device ids in order (`<idPrefix>-00001`, ...). */
  readonly deviceIds: readonly string[]
  /** Profile of each device, in `deviceIds` order. */
  readonly profiles: readonly ProfileName[]
  /**
   * Resolves when every device has had all `count` messages acknowledged (QoS 0: written). Rejects if `count` was
   * not given or if the fleet is closed first.
   */
  done(): Promise<void>
  /**
   * Stops producing new messages and injecting failures, brings devices in an offline episode back, and waits until
   * everything handed to mqtt.js is acknowledged, or `timeoutMs` (default 5000 ms) passes. Resolves `true` when
   * nothing is pending. Connections stay open.
   */
  drain(timeoutMs?: number): Promise<boolean>
  /** Triggers a reconnect storm now: every connected device drops its connection. Returns how many dropped. */
  storm(): number
  /** Writes the ledger to `path` (atomically; see ledger.ts for the format). */
  writeLedger(path: string): Promise<void>
  /** Stops producing and ends every client (DISCONNECT when possible). Idempotent. */
  close(): Promise<void>
}

interface PendingRetry {
  seq: number
  qos: QoS
  payload: string | Buffer
}

type LinkState = 'idle' | 'connecting' | 'up' | 'down' | 'offline'

interface Device {
  readonly id: string
  readonly topic: string
  readonly profile: ProfileName
  readonly clean: boolean
  /** Mean publish interval, ms (ratePerDevice > 0). */
  intervalMs: number
  readonly bootAt: number
  client: MqttClient | undefined
  link: LinkState
  /** Next seq to assign (starts at 1). */
  nextSeq: number
  /** Handed to mqtt.js, no callback yet. */
  inflight: number
  /** Messages to publish again (errored) or QoS 0 waiting for the link; flushed once the link is up. */
  retries: PendingRetry[] | undefined
  /** QoS 0 publishes whose callback is still open (their write waits for 'drain'). */
  qos0Open: { settled: boolean }[] | undefined
  /** Distinct acked seqs (QoS 0: written). */
  ackedCount: number
  complete: boolean
  /** performance.now() when the next message is due (ratePerDevice > 0). */
  nextDueAt: number
  everConnected: boolean
  /** Correlation id of the configuration request waiting for its answer (with `fetchConfig`). */
  configAsked?: string
  /** Whether the device has its configuration from the cloud. */
  configured?: boolean
  /** Consecutive connection closes without a successful CONNACK in between. */
  closesInARow: number
  /** End of the current offline episode (performance.now()), 0 when none. */
  offlineUntil: number
  subscribed: boolean
  sensors: Sensors | undefined
  burst: BurstState | undefined
  /** Next publish. */
  readonly publishTask: Task
  /** Next reconnect attempt. */
  readonly linkTask: Task
}

const DEFAULT_URL = 'mqtt://127.0.0.1:1883'
/** What simulated devices answer as their firmware version. */
const FIRMWARE = 'fsim-1.4.2'
const BACKOFF_JITTER = 0.2
/** Owed messages older than this are skipped, so an overloaded event loop does not snowball. */
const MAX_CATCH_UP_MS = 1000

/** Sorted-on-demand ring of the most recent latency samples. */
class LatencyReservoir {
  private readonly buf: Float64Array
  private total = 0
  private maxEver = 0
  private windowMark = 0

  constructor(capacity: number) {
    this.buf = new Float64Array(capacity)
  }

  add(ms: number): void {
    this.buf[this.total % this.buf.length] = ms
    this.total++
    if (ms > this.maxEver) this.maxEver = ms
  }

  summary(): LatencySummary {
    const n = Math.min(this.total, this.buf.length)
    const s = summarize(this.buf.slice(0, n))
    return { p50: s.p50, p99: s.p99, max: this.maxEver }
  }

  window(): LatencySummary & { samples: number } {
    const fresh = this.total - this.windowMark
    this.windowMark = this.total
    const n = Math.min(fresh, this.buf.length)
    const out = new Float64Array(n)
    for (let i = 0; i < n; i++) out[i] = this.buf[(this.total - n + i) % this.buf.length] ?? 0
    return { ...summarize(out), samples: fresh }
  }
}

function summarize(samples: Float64Array): LatencySummary {
  if (samples.length === 0) return { p50: 0, p99: 0, max: 0 }
  samples.sort()
  const at = (q: number): number => samples[Math.min(samples.length - 1, Math.floor(q * samples.length))] ?? 0
  return { p50: at(0.5), p99: at(0.99), max: samples[samples.length - 1] ?? 0 }
}

function int(name: string, v: number, min: number, max = Number.MAX_SAFE_INTEGER): number {
  if (!Number.isInteger(v) || v < min || v > max) throw new RangeError(`${name} must be an integer in [${min}, ${max}], got ${v}`)
  return v
}

function fraction(name: string, v: number): number {
  if (!(v >= 0 && v <= 1)) throw new RangeError(`${name} must be in 0..1, got ${v}`)
  return v
}

function nonNegative(name: string, v: number): number {
  if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`${name} must be a number >= 0, got ${v}`)
  return v
}

function weightsOf<K extends string | number>(name: string, w: Partial<Record<K, number>>, keys: readonly K[]): [K, number][] {
  const out: [K, number][] = []
  for (const k of Object.keys(w)) {
    if (!keys.some((key) => String(key) === k)) throw new RangeError(`${name}: unknown key "${k}", expected one of ${keys.join(', ')}`)
  }
  for (const k of keys) {
    const v = w[k]
    if (v === undefined) continue
    if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`${name}: weight of ${String(k)} must be a number >= 0, got ${v}`)
    if (v > 0) out.push([k, v])
  }
  if (out.length === 0) throw new RangeError(`${name}: at least one weight must be > 0`)
  return out
}

const noLog = (): void => {}

/** mqtt.js arms its own per-client reconnect timer on every close unless this (private) flag is set; see the top. */
function suppressAutoReconnect(client: MqttClient): void {
  ;(client as unknown as { reconnectSuppressed: boolean }).reconnectSuppressed = true
}

/** Starts a fleet of simulated devices; they connect (staggered over `rampMs`) and publish immediately. */
export function startFleet(opts: FleetOptions): Fleet {
  const url = opts.url ?? DEFAULT_URL
  const deviceCount = int('devices', opts.devices, 1)
  const rate = opts.ratePerDevice
  if (!Number.isFinite(rate) || rate < 0) throw new RangeError(`ratePerDevice must be >= 0, got ${rate}`)
  const maxInflight = int('inflight', opts.inflight ?? 10, 1)
  const qos: QoS = opts.qos ?? 1
  const protocolVersion = opts.protocolVersion ?? 4
  if (protocolVersion !== 4 && protocolVersion !== 5) throw new RangeError(`protocolVersion must be 4 or 5, got ${String(protocolVersion)}`)
  if (qos !== 0 && qos !== 1 && qos !== 2) throw new RangeError(`qos must be 0, 1 or 2, got ${String(qos)}`)
  const qosWeights = opts.qosMix === undefined ? undefined : weightsOf<QoS>('qosMix', opts.qosMix, [0, 1, 2])
  const qosTotal = qosWeights?.reduce((s, [, w]) => s + w, 0) ?? 0
  const count = opts.count === undefined ? undefined : int('count', opts.count, 1)
  const topicPrefix = opts.topicPrefix ?? 'devices'
  const idPrefix = opts.idPrefix ?? 'sim'
  const profileWeights = opts.profiles ?? { telemetry: 1 }
  // Without `profiles` the original compact telemetry JSON, so existing callers (benchmarks) see the same payloads.
  const richTelemetry = opts.profiles !== undefined
  weightsOf<ProfileName>('profiles', profileWeights, PROFILE_NAMES)
  const jitter = fraction('jitter', opts.jitter ?? 0.2)
  const rateSpread = fraction('rateSpread', opts.rateSpread ?? 0)
  const clean = opts.clean ?? true
  const persistentShare = fraction('persistentShare', opts.persistentShare ?? (clean ? 0 : 1))
  const payloadBytes = opts.payloadBytes === undefined ? undefined : int('payloadBytes', opts.payloadBytes, 0)
  const [largeMin, largeMax] = opts.largeBytes ?? DEFAULT_LARGE_BYTES
  int('largeBytes[0]', largeMin, 64, MAX_LARGE_BYTES)
  int('largeBytes[1]', largeMax, largeMin, MAX_LARGE_BYTES)
  const rampMs = opts.rampMs ?? Math.min(deviceCount * 2, 5000)
  if (!(rampMs >= 0)) throw new RangeError(`rampMs must be >= 0, got ${rampMs}`)
  const keepalive = int('keepaliveSec', opts.keepaliveSec ?? 30, 0, 65535)
  const connectTimeout = int('connectTimeoutMs', opts.connectTimeoutMs ?? 10_000, 1)
  const backoffStartMs = int('backoffStartMs', opts.backoffStartMs ?? 500, 1)
  const backoffMaxMs = int('backoffMaxMs', opts.backoffMaxMs ?? 10_000, backoffStartMs)
  const offlinePerMin = nonNegative('offlinePerMin', opts.offlinePerMin ?? 0)
  const offlineMs = nonNegative('offlineMs', opts.offlineMs ?? 10_000)
  const stormEveryMs = opts.stormEveryMs === undefined ? undefined : nonNegative('stormEveryMs', opts.stormEveryMs)
  if (stormEveryMs === 0) throw new RangeError('stormEveryMs must be > 0')
  const maxPending = int('maxPending', opts.maxPending ?? 1000, 1)
  const tickMs = int('tickMs', opts.tickMs ?? 10, 1)
  const latency = new LatencyReservoir(int('latencySamples', opts.latencySamples ?? 100_000, 1))
  const seed = opts.seed ?? Math.floor(Math.random() * 2 ** 32)
  const rng: Rng = createRng(seed)

  const ledger = new Ledger()
  const start = performance.now()
  const scheduler = new Scheduler(tickMs, start)
  const keepaliveTimers = scheduler.intervalTimer(() => performance.now())
  const timerVariant: Exclude<NonNullable<IClientOptions['timerVariant']>, string> = {
    set: (fn, delay) => keepaliveTimers.set(() => (fn as () => void)(), delay),
    clear: (id) => keepaliveTimers.clear(id),
  }
  const retryQueue = new Set<Device>()
  const pumpQueue = new Set<Device>()
  let pumpScheduled = false
  let sent = 0
  const sentByQos: [number, number, number] = [0, 0, 0]
  const sentByProfile: Record<ProfileName, number> = { telemetry: 0, alarm: 0, binary: 0, large: 0 }
  let bytesSent = 0
  let acked = 0
  let errors = 0
  let publishErrors = 0
  let reconnects = 0
  let pending = 0
  let skipped = 0
  let unackedAtDrop = 0
  let qos0Dropped = 0
  let offlineEpisodes = 0
  let storms = 0
  let commandsReceived = 0
  let rpcAnswered = 0
  let configFetched = 0
  let configErrors = 0
  let configRequests = 0
  let connected = 0
  let offlineNow = 0
  let completeDevices = 0
  let producing = true
  let closed = false
  let closePromise: Promise<void> | undefined
  let bootCursor = 0

  let resolveDone: () => void = () => {}
  let rejectDone: (e: Error) => void = () => {}
  const donePromise = new Promise<void>((res, rej) => {
    resolveDone = res
    rejectDone = rej
  })
  donePromise.catch(() => {}) // nobody may be listening; close() rejects it
  if (count === undefined) rejectDone(new Error('done() needs the count option'))

  const profiles = assignProfiles(profileWeights, deviceCount)
  const devices: Device[] = []
  const width = Math.max(5, String(deviceCount).length)
  for (let i = 0; i < deviceCount; i++) {
    const id = `${idPrefix}-${String(i + 1).padStart(width, '0')}`
    const profile = profiles[i] ?? 'telemetry'
    const deviceRate = rate > 0 ? spreadAround(rng, rate, rateSpread) : 0
    const d: Device = {
      id,
      topic: `${topicPrefix}/${id}/${profile}`,
      profile,
      // Evenly spread: exactly floor(n * share) persistent devices.
      clean: Math.floor((i + 1) * persistentShare) === Math.floor(i * persistentShare),
      intervalMs: deviceRate > 0 ? 1000 / deviceRate : 0,
      bootAt: start + (deviceCount > 1 ? (rampMs * i) / deviceCount : 0),
      client: undefined,
      link: 'idle',
      nextSeq: 1,
      inflight: 0,
      retries: undefined,
      qos0Open: undefined,
      ackedCount: 0,
      complete: false,
      nextDueAt: 0,
      everConnected: false,
      closesInARow: 0,
      offlineUntil: 0,
      subscribed: false,
      sensors: undefined,
      burst: undefined,
      publishTask: new Task((now) => onPublishDue(d, now)),
      linkTask: new Task(() => reconnect(d)),
    }
    devices.push(d)
  }

  const backoff = (attempt: number): number => {
    const base = Math.min(backoffStartMs * 2 ** Math.max(0, attempt - 1), backoffMaxMs)
    return Math.max(1, Math.round(spreadAround(rng, base, BACKOFF_JITTER)))
  }
  const drawQos = (): QoS => (qosWeights === undefined ? qos : pickWeighted(rng, qosWeights, qosTotal))
  const wantsMore = (d: Device): boolean => producing && (count === undefined || d.nextSeq <= count)
  const backlog = (d: Device): number => d.inflight + (d.retries?.length ?? 0)

  /** Time until the device's next message: jittered period, or for alarms the burst gap / the quiet time. */
  function nextInterval(d: Device): number {
    if (d.profile === 'alarm') {
      const b = d.burst
      if (b !== undefined && b.index < b.size) return spreadAround(rng, ALARM_BURST_GAP_MS, jitter)
      return alarmQuietMs(rng, 1000 / d.intervalMs)
    }
    return spreadAround(rng, d.intervalMs, jitter)
  }

  function countAck(d: Device): void {
    d.ackedCount++
    if (count !== undefined && !d.complete && d.ackedCount >= count) {
      d.complete = true
      if (++completeDevices === deviceCount) resolveDone()
    }
  }

  function publish(d: Device, seq: number, payload: string | Buffer, q: QoS, first: boolean): void {
    const client = d.client
    if (client === undefined) return
    if (first) {
      sent++
      sentByQos[q]++
      sentByProfile[d.profile]++
      bytesSent += typeof payload === 'string' ? Buffer.byteLength(payload) : payload.length
      ledger.noteSent(d.id, seq)
    }
    if (q === 0 && d.link !== 'up') {
      // Held by the device until the link is back (see the top of this file).
      ;(d.retries ??= []).push({ seq, qos: q, payload })
      pending++
      return
    }
    d.inflight++
    pending++
    const t0 = performance.now()
    const token = q === 0 ? { settled: false } : undefined
    client.publish(d.topic, payload, { qos: q }, (err) => {
      if (token !== undefined) {
        if (token.settled) return // written off when its connection dropped
        token.settled = true
      }
      d.inflight--
      pending--
      if (closed) return
      if (err) {
        errors++
        publishErrors++
        // Retry later with the same seq/QoS/payload. Never re-publish synchronously here: mqtt.js may be iterating
        // its held-back publish queue while it calls us.
        ;(d.retries ??= []).push({ seq, qos: q, payload })
        pending++
        if (d.link === 'up') retryQueue.add(d) // else at the next CONNACK
        return
      }
      acked++
      if (q > 0) {
        latency.add(performance.now() - t0)
        if (ledger.record(d.id, seq)) countAck(d)
      } else {
        countAck(d)
      }
      if (rate === 0) schedulePump(d)
    })
    if (token !== undefined && !token.settled) {
      const open = (d.qos0Open ??= [])
      if (open.length >= 64) d.qos0Open = open.filter((t) => !t.settled)
      d.qos0Open.push(token)
    }
  }

  function produce(d: Device): void {
    const seq = d.nextSeq++
    let payload: string | Buffer
    switch (d.profile) {
      case 'telemetry':
        payload = telemetryPayload((d.sensors ??= initialSensors(rng)), d.id, seq, rng, payloadBytes, richTelemetry)
        break
      case 'alarm': {
        let b = d.burst
        if (b === undefined) b = d.burst = { id: 0, index: 0, size: 0 }
        if (b.index >= b.size) {
          b.id++
          b.index = 0
          b.size = alarmBurstSize(rng)
        }
        payload = alarmPayload(d.id, seq, b, rng)
        b.index++
        break
      }
      case 'binary':
        payload = binaryPayload(d.id, seq, rng)
        break
      case 'large':
        payload = largePayload(d.id, seq, rng, largeMin, largeMax)
        break
    }
    publish(d, seq, payload, drawQos(), true)
  }

  function onPublishDue(d: Device, now: number): void {
    if (!wantsMore(d)) return
    if (now - d.nextDueAt > MAX_CATCH_UP_MS) d.nextDueAt = now
    while (d.nextDueAt <= now && wantsMore(d)) {
      if (backlog(d) < maxPending) produce(d)
      else skipped++
      d.nextDueAt += nextInterval(d)
    }
    if (wantsMore(d)) scheduler.schedule(d.publishTask, d.nextDueAt)
  }

  function schedulePump(d: Device): void {
    pumpQueue.add(d)
    if (pumpScheduled) return
    pumpScheduled = true
    // Batched and deferred: QoS 0 callbacks fire synchronously inside publish(), so pumping inline would recurse.
    setImmediate(() => {
      pumpScheduled = false
      const batch = [...pumpQueue]
      pumpQueue.clear()
      for (const dev of batch) pumpClosedLoop(dev)
    })
  }

  function pumpClosedLoop(d: Device): void {
    while (d.client !== undefined && wantsMore(d) && backlog(d) < maxInflight) produce(d)
  }

  function flushRetries(d: Device): void {
    const batch = d.retries
    if (batch === undefined) return
    d.retries = undefined
    pending -= batch.length
    for (const r of batch) publish(d, r.seq, r.payload, r.qos, false)
  }

  function onConnack(d: Device, client: MqttClient, packet: Packet): void {
    if (packet.cmd !== 'connack') return
    if ((packet.returnCode ?? packet.reasonCode ?? 0) !== 0) return // refused: mqtt.js closes the stream
    if (d.link !== 'up') connected++
    d.link = 'up'
    if (d.everConnected) reconnects++
    d.everConnected = true
    d.closesInARow = 0
    if (d.retries !== undefined) retryQueue.add(d)
    if (!d.clean && !d.subscribed) {
      d.subscribed = true
      client.subscribe(`${topicPrefix}/${d.id}/cmd`, { qos: 1 }, (err) => {
        if (err) d.subscribed = false // retried at the next CONNACK
      })
    }
    // At start (and after each CONNACK until it has one), the device asks the cloud for its configuration. The
    // answer comes on devices/<id>/requests/reply/<n>/<status> whether or not the device subscribed there.
    if (opts.fetchConfig && !d.configured) {
      const cid = `cfg${++configRequests}`
      d.configAsked = cid
      client.publish(`requests/${d.id}/config/get/${cid}`, '', { qos: 1 }, () => {})
    }
    // Clean sessions lose their subscriptions with the connection: subscribe at every CONNACK.
    if (opts.commands) client.subscribe({ [`commands/${d.id}/#`]: { qos: 1 }, [`devices/${d.id}/rpc/request/+/json`]: { qos: 1 } })
  }

  /** A command or RPC request from the gateway (see FleetOptions.commands), or the answer to a request. */
  function onDownlink(d: Device, client: MqttClient, topic: string, payload: Buffer): void {
    if (opts.fetchConfig && topic.startsWith(`devices/${d.id}/requests/reply/`)) return onConfigAnswer(d, topic, payload)
    if (!opts.commands) return
    let body: Record<string, unknown> = {}
    try {
      body = JSON.parse(payload.toString('utf8')) as Record<string, unknown>
    } catch {}
    const levels = topic.split('/')
    if (levels[0] === 'commands') {
      commandsReceived++
      const what = levels.slice(2).join('/')
      if (what === 'config/set' && typeof body.rate === 'number' && body.rate > 0 && d.intervalMs > 0) d.intervalMs = 1000 / body.rate
      if (what === 'offline' && typeof body.ms === 'number') {
        offlineEpisodes++
        d.offlineUntil = performance.now() + body.ms
        setImmediate(() => dropLink(d)) // after mqtt.js has sent the PUBACK
      }
      return
    }
    if (levels[2] !== 'rpc' || levels[3] !== 'request') return
    const respond = (v: unknown): void => {
      rpcAnswered++
      client.publish(`devices/${d.id}/rpc/response/${levels[4]}`, JSON.stringify(v), { qos: 1 })
    }
    if (body.method === 'getConfig') respond({ rate: d.intervalMs > 0 ? 1000 / d.intervalMs : 0, profile: d.profile, firmware: FIRMWARE, uptimeS: Math.round((Date.now() - d.bootAt) / 1000) })
    else if (body.method === 'reboot') {
      respond({ rebooting: true })
      d.offlineUntil = performance.now() + 1000
      setTimeout(() => dropLink(d), 50)
    } else respond({ error: `unknown method ${String(body.method)}` })
  }

  /** The answer to the device's configuration request: `devices/<id>/requests/reply/<cid>/<status code>`. */
  function onConfigAnswer(d: Device, topic: string, payload: Buffer): void {
    const levels = topic.slice(`devices/${d.id}/requests/reply/`.length).split('/')
    if (levels[0] !== d.configAsked) return // an answer to an earlier attempt
    d.configAsked = undefined
    if (levels[1] !== '200') {
      configErrors++
      return
    }
    configFetched++
    d.configured = true
    try {
      const body = JSON.parse(payload.toString('utf8')) as Record<string, unknown>
      if (typeof body.rate === 'number' && body.rate > 0 && d.intervalMs > 0) d.intervalMs = 1000 / body.rate
    } catch {}
  }

  function onClose(d: Device, client: MqttClient): void {
    // mqtt.js's own 'close' listener ran first. Should a future mqtt.js ignore `reconnectSuppressed`, never let its
    // reconnect timer run next to the fleet's.
    const internals = client as unknown as { reconnectTimer: unknown; _clearReconnect?: () => void }
    if (internals.reconnectTimer != null) internals._clearReconnect?.()
    if (d.link === 'up') {
      connected--
      for (const k in client.outgoing) if (client.outgoing[Number(k)]?.cmd === 'publish') unackedAtDrop++
    }
    const open = d.qos0Open
    d.qos0Open = undefined
    // After mqtt.js's own 'close' listeners: they fail the publishes it held back (those settle and are retried);
    // what is still open then waits for a 'drain' of a dead socket.
    if (open !== undefined) queueMicrotask(() => writeOffQos0(d, open))
    if (closed) {
      d.link = 'down'
      return
    }
    const now = performance.now()
    if (d.offlineUntil > now) {
      if (d.link !== 'offline') offlineNow++
      d.link = 'offline'
      scheduler.schedule(d.linkTask, d.offlineUntil)
      return
    }
    d.link = 'down'
    d.closesInARow++
    scheduler.schedule(d.linkTask, now + backoff(d.closesInARow))
  }

  function writeOffQos0(d: Device, open: { settled: boolean }[]): void {
    for (const t of open) {
      if (t.settled) continue
      t.settled = true
      d.inflight--
      pending--
      qos0Dropped++
      countAck(d) // handed to the socket: done, for at-most-once
      if (rate === 0 && !closed) schedulePump(d)
    }
  }

  function reconnect(d: Device): void {
    const client = d.client
    if (client === undefined || closed || d.link === 'up' || d.link === 'connecting') return
    if (d.link === 'offline') offlineNow--
    d.offlineUntil = 0
    d.link = 'connecting'
    // The client's own stores: without them reconnect() starts empty ones and the unacknowledged messages are gone.
    client.reconnect({ incomingStore: client.incomingStore, outgoingStore: client.outgoingStore })
    suppressAutoReconnect(client)
  }

  /** Drops the connection like a lost link: no DISCONNECT, the broker sees the socket close. */
  function dropLink(d: Device): void {
    d.client?.stream?.destroy()
  }

  function boot(d: Device, now: number): void {
    const client = connect(url, {
      clientId: d.id,
      clean: d.clean,
      keepalive,
      connectTimeout,
      protocolVersion,
      reconnectPeriod: backoffStartMs, // > 0, never used: see the top of this file
      reschedulePings: false,
      queueQoSZero: false,
      timerVariant,
      log: noLog, // mqtt.js otherwise creates a `debug` logger per client (~1 KB each)
    })
    suppressAutoReconnect(client)
    d.client = client
    d.link = 'connecting'
    client.on('packetreceive', (packet: Packet) => onConnack(d, client, packet))
    if (opts.commands || opts.fetchConfig) client.on('message', (topic, payload) => onDownlink(d, client, topic, payload))
    client.on('close', () => onClose(d, client))
    client.on('error', () => {
      if (!closed) errors++
    })
    if (rate > 0) {
      d.nextDueAt = now + (d.profile === 'alarm' ? alarmQuietMs(rng, 1000 / d.intervalMs) : rng() * d.intervalMs)
      scheduler.schedule(d.publishTask, d.nextDueAt)
    } else {
      schedulePump(d)
    }
  }

  const offlineTask = new Task((now) => {
    if (!producing) return
    // Poisson process over the fleet: memoryless, so one fleet-wide timer is the same as one per device.
    for (let tries = 0; tries < 16; tries++) {
      const d = devices[Math.floor(rng() * devices.length)]
      if (d === undefined || d.link !== 'up') continue
      d.offlineUntil = now + spreadAround(rng, offlineMs, 0.5)
      offlineEpisodes++
      dropLink(d)
      break
    }
    scheduler.schedule(offlineTask, now + randomExp(rng, 60_000 / (offlinePerMin * deviceCount)))
  })
  if (offlinePerMin > 0) scheduler.schedule(offlineTask, start + randomExp(rng, 60_000 / (offlinePerMin * deviceCount)))

  function storm(): number {
    let n = 0
    for (const d of devices) {
      if (d.link !== 'up') continue
      dropLink(d)
      n++
    }
    storms++
    return n
  }
  const stormTask = new Task((now) => {
    if (!producing) return
    storm()
    if (stormEveryMs !== undefined) scheduler.schedule(stormTask, now + stormEveryMs)
  })
  if (stormEveryMs !== undefined) scheduler.schedule(stormTask, start + stormEveryMs)

  function tick(): void {
    const now = performance.now()
    while (bootCursor < devices.length) {
      const d = devices[bootCursor]
      if (d === undefined || d.bootAt > now) break
      bootCursor++
      boot(d, now)
    }
    if (retryQueue.size > 0) {
      const batch = [...retryQueue]
      retryQueue.clear()
      for (const d of batch) if (d.link === 'up') flushRetries(d) // else again at its next CONNACK
    }
    scheduler.advance(now)
  }

  const timer = setInterval(tick, tickMs)
  tick()

  function endClient(client: MqttClient): Promise<void> {
    return new Promise((resolve) => {
      const graceful = client.connected && Object.keys(client.outgoing).length === 0
      const safety = setTimeout(() => {
        client.stream?.destroy()
        resolve()
      }, 2000)
      client.end(!graceful, () => {
        clearTimeout(safety)
        resolve()
      })
    })
  }

  const fleet: Fleet = {
    stats() {
      return {
        devices: deviceCount,
        connected,
        offline: offlineNow,
        sent,
        sentByQos: [sentByQos[0], sentByQos[1], sentByQos[2]],
        sentByProfile: { ...sentByProfile },
        bytesSent,
        acked,
        pending,
        skipped,
        errors,
        publishErrors,
        reconnects,
        unackedAtDrop,
        qos0Dropped,
        offlineEpisodes,
        storms,
        commandsReceived,
        rpcAnswered,
        configFetched,
        configErrors,
        ackLatencyMs: latency.summary(),
      }
    },
    ackLatencyWindow() {
      return latency.window()
    },
    ledger,
    acked() {
      return ledger.toMap()
    },
    deviceIds: devices.map((d) => d.id),
    profiles,
    done() {
      return donePromise
    },
    async drain(timeoutMs = 5000) {
      producing = false
      const now = performance.now()
      for (const d of devices) if (d.link === 'offline') scheduler.schedule(d.linkTask, now)
      const until = now + timeoutMs
      while (pending > 0 && !closed && performance.now() < until) {
        await new Promise((r) => setTimeout(r, 20))
      }
      return pending === 0
    },
    storm,
    writeLedger(path) {
      return writeLedgerFile(path, ledger)
    },
    close() {
      if (closePromise !== undefined) return closePromise
      producing = false
      closed = true
      clearInterval(timer)
      scheduler.clear()
      rejectDone(new Error('fleet closed before every device had all messages acknowledged'))
      closePromise = Promise.all(devices.flatMap((d) => (d.client === undefined ? [] : [endClient(d.client)]))).then(() => undefined)
      return closePromise
    },
    [Symbol.asyncDispose]() {
      return fleet.close()
    },
  }
  return fleet
}
