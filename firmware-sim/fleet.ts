// Device fleet simulator: N simulated firmware MQTT clients publishing drifting JSON telemetry, with an ack ledger.
//
// Behaviour worth knowing (mqtt.js v5.16, which this relies on):
// - Every device is one mqtt.js client. QoS 1/2 messages published while disconnected, or in flight when the link
//   drops, sit in the client's in-memory outgoing store and are re-sent by mqtt.js on the next CONNACK, *also with
//   clean=true*, and with the DUP flag still 0 (mqtt.js never sets it). The simulator never re-sends those itself.
// - mqtt.js replays that store one message at a time (the next goes out only after the previous one is acked) and
//   holds back new publishes until the replay is done; if the link drops during the replay, the held-back publishes
//   fail with "Connection closed". Those (and only errored publishes) are retried by the simulator with the SAME
//   seq and payload, so a seq is never reused for different data and `done()` can still complete.
// - Reconnect backoff: mqtt.js only has a fixed `reconnectPeriod`, so it is rewritten before each wait:
//   500 ms, doubling up to 10 s, ±20 % jitter, reset after a successful CONNACK.
import { performance } from 'node:perf_hooks'
import { connect, type MqttClient, type Packet } from 'mqtt'

/** MQTT quality of service level. */
export type QoS = 0 | 1 | 2

/** Options of {@link startFleet}. */
export interface FleetOptions {
  /** Broker URL. Default `mqtt://127.0.0.1:1883`. */
  url?: string
  /** Number of simulated devices, each one MQTT client. Integer ≥ 1. */
  devices: number
  /**
   * Messages per second per device. `0` = closed loop: as fast as acknowledged, with at most `inflight`
   * unacknowledged messages per device.
   */
  ratePerDevice: number
  /** Max unacknowledged messages per device when `ratePerDevice` is 0 (ignored otherwise). Default 10. */
  inflight?: number
  /** QoS of every publish. Default 1. */
  qos?: QoS
  /** Messages per device; a device stops producing after this many. Default: unlimited (until `close()`). */
  count?: number
  /** Topic prefix; messages go to `<topicPrefix>/<deviceId>/telemetry`. Default `"devices"`. */
  topicPrefix?: string
  /** Device id / MQTT client id prefix; ids are `<idPrefix>-00001`, `<idPrefix>-00002`, ... Default `"sim"`. */
  idPrefix?: string
  /** Relative jitter of the publish interval, 0..1 (0.2 = each interval is 80..120 % of 1/rate). Default 0.2. */
  jitter?: number
  /** MQTT clean session flag. Default `true`. */
  clean?: boolean
  /** Pad each JSON payload with a `"pad"` string field to this many bytes. Default: no padding (~130 bytes). */
  payloadBytes?: number
  /** Device connects are spread evenly over this many milliseconds. Default `min(devices * 2, 5000)` ms. */
  rampMs?: number
  /** MQTT keepalive in seconds. Default 30. */
  keepaliveSec?: number
  /** Milliseconds to wait for a CONNACK before the attempt counts as failed. Default 10000 ms. */
  connectTimeoutMs?: number
  /** Period of the shared scheduling loop in milliseconds. Default 10 ms. */
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
  /** Distinct messages handed to mqtt.js (each seq counted once, retries not counted). */
  sent: number
  /** Messages acknowledged: PUBACK (QoS 1) / PUBCOMP (QoS 2), or written to the socket for QoS 0. */
  acked: number
  /** Messages handed to mqtt.js and not yet acknowledged, plus errored ones waiting to be retried. */
  pending: number
  /** Errors: failed publish callbacks plus client 'error' events (e.g. ECONNREFUSED on every reconnect try). */
  errors: number
  /** The part of `errors` that were failed publish callbacks (each one is retried with the same seq). */
  publishErrors: number
  /** Successful reconnects (CONNACKs after a device's first one). */
  reconnects: number
  /** Latency from `publish()` to its ack callback, QoS ≥ 1 only, over the most recent `latencySamples`. */
  ackLatencyMs: LatencySummary
}

/** Read-only view of which (device, seq) pairs were acknowledged. */
export interface AckLedger {
  /** Distinct acknowledged (device, seq) pairs. */
  readonly size: number
  /** Acks for a (device, seq) that was already acknowledged. Expected to stay 0. */
  readonly duplicates: number
  /** Whether `seq` of `device` was acknowledged. */
  has(device: string, seq: number): boolean
  /** Number of distinct acknowledged seqs of `device`. */
  countFor(device: string): number
  /** Device ids with at least one acknowledged message. */
  devices(): string[]
  /** Acknowledged seqs of `device`, ascending. */
  seqs(device: string): number[]
  /** Every device's acknowledged seqs, ascending. */
  toMap(): Map<string, number[]>
}

/** A running fleet, returned by {@link startFleet}. */
export interface Fleet extends AsyncDisposable {
  /** Current counters. */
  stats(): FleetStats
  /**
   * Ack latency (QoS ≥ 1) of the samples recorded since the previous call of this method (at most the last
   * `latencySamples`), for per-interval reporting.
   */
  ackLatencyWindow(): LatencySummary & { samples: number }
  /** Every acknowledged (device, seq). */
  readonly ledger: AckLedger
  /** Acknowledged seqs per device id, ascending (a copy). */
  acked(): Map<string, number[]>
  /** Device ids in order (`<idPrefix>-00001`, ...). */
  readonly deviceIds: readonly string[]
  /**
   * Resolves when every device has had all `count` messages acknowledged. Rejects if `count` was not given or if
   * the fleet is closed first.
   */
  done(): Promise<void>
  /**
   * Stops producing new messages and waits until everything handed to mqtt.js is acknowledged, or `timeoutMs`
   * (default 5000 ms) passes. Resolves `true` when nothing is pending. Connections stay open.
   */
  drain(timeoutMs?: number): Promise<boolean>
  /** Stops producing and ends every client (DISCONNECT when possible). Idempotent. */
  close(): Promise<void>
}

interface PendingRetry {
  seq: number
  payload: string
}

interface Sensors {
  temp: number
  tempBase: number
  hum: number
  humBase: number
  bat: number
  rssiBase: number
}

interface Device {
  readonly index: number
  readonly id: string
  readonly topic: string
  readonly bootAt: number
  client: MqttClient | undefined
  /** Next seq to assign (starts at 1). */
  nextSeq: number
  /** Handed to mqtt.js, no callback yet. */
  inflight: number
  retries: PendingRetry[]
  /** Distinct acked seqs. */
  ackedCount: number
  complete: boolean
  /** performance.now() when the next message is due (rate > 0). */
  nextDueAt: number
  everConnected: boolean
  /** Consecutive connection closes without a successful CONNACK in between. */
  closesInARow: number
  sensors: Sensors
}

const DEFAULT_URL = 'mqtt://127.0.0.1:1883'
const BACKOFF_START_MS = 500
const BACKOFF_MAX_MS = 10_000
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

/** Growable bitset of positive integers. */
class SeqSet {
  private words = new Uint32Array(4)
  size = 0

  /** Adds `seq`; false if it was already present. */
  add(seq: number): boolean {
    const w = seq >>> 5
    if (w >= this.words.length) {
      let len = this.words.length
      while (len <= w) len *= 2
      const grown = new Uint32Array(len)
      grown.set(this.words)
      this.words = grown
    }
    const bit = 1 << (seq & 31)
    const cur = this.words[w] ?? 0
    if ((cur & bit) !== 0) return false
    this.words[w] = cur | bit
    this.size++
    return true
  }

  has(seq: number): boolean {
    if (!Number.isInteger(seq) || seq < 0) return false
    const w = seq >>> 5
    return w < this.words.length && ((this.words[w] ?? 0) & (1 << (seq & 31))) !== 0
  }

  toArray(): number[] {
    const out: number[] = []
    for (let w = 0; w < this.words.length; w++) {
      let word = this.words[w] ?? 0
      while (word !== 0) {
        const low = word & -word
        out.push(w * 32 + (31 - Math.clz32(low)))
        word ^= low
      }
    }
    return out
  }
}

class Ledger implements AckLedger {
  private readonly perDevice = new Map<string, SeqSet>()
  size = 0
  duplicates = 0

  /** Records an ack; false if (device, seq) was already recorded. */
  record(device: string, seq: number): boolean {
    let set = this.perDevice.get(device)
    if (set === undefined) {
      set = new SeqSet()
      this.perDevice.set(device, set)
    }
    if (!set.add(seq)) {
      this.duplicates++
      return false
    }
    this.size++
    return true
  }

  has(device: string, seq: number): boolean {
    return this.perDevice.get(device)?.has(seq) ?? false
  }

  countFor(device: string): number {
    return this.perDevice.get(device)?.size ?? 0
  }

  devices(): string[] {
    return [...this.perDevice.keys()]
  }

  seqs(device: string): number[] {
    return this.perDevice.get(device)?.toArray() ?? []
  }

  toMap(): Map<string, number[]> {
    const out = new Map<string, number[]>()
    for (const [device, set] of this.perDevice) out.set(device, set.toArray())
    return out
  }
}

/** Binary min-heap of devices keyed by `nextDueAt`. */
class DueHeap {
  private readonly items: Device[] = []

  get size(): number {
    return this.items.length
  }

  peek(): Device | undefined {
    return this.items[0]
  }

  push(d: Device): void {
    const a = this.items
    a.push(d)
    let i = a.length - 1
    while (i > 0) {
      const p = (i - 1) >> 1
      const parent = a[p]
      if (parent === undefined || parent.nextDueAt <= d.nextDueAt) break
      a[i] = parent
      i = p
    }
    a[i] = d
  }

  pop(): Device | undefined {
    const a = this.items
    const top = a[0]
    const last = a.pop()
    if (top === undefined || last === undefined || a.length === 0) return top
    let i = 0
    for (;;) {
      const l = 2 * i + 1
      if (l >= a.length) break
      const r = l + 1
      const left = a[l]
      const right = a[r]
      let c = l
      let child = left
      if (right !== undefined && left !== undefined && right.nextDueAt < left.nextDueAt) {
        c = r
        child = right
      }
      if (child === undefined || child.nextDueAt >= last.nextDueAt) break
      a[i] = child
      i = c
    }
    a[i] = last
    return top
  }
}

function int(name: string, v: number, min: number): number {
  if (!Number.isInteger(v) || v < min) throw new RangeError(`${name} must be an integer >= ${min}, got ${v}`)
  return v
}

function round(v: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(v * f) / f
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v
}

function initialSensors(): Sensors {
  const tempBase = 18 + Math.random() * 8
  const humBase = 35 + Math.random() * 25
  return {
    temp: tempBase + (Math.random() - 0.5),
    tempBase,
    hum: humBase + (Math.random() - 0.5) * 4,
    humBase,
    bat: 3.75 + Math.random() * 0.4,
    rssiBase: -55 - Math.random() * 30,
  }
}

/** Advances the sensor random walk one step and renders the telemetry JSON. */
function telemetry(d: Device, seq: number, payloadBytes: number | undefined): string {
  const s = d.sensors
  s.temp += (s.tempBase - s.temp) * 0.02 + (Math.random() - 0.5) * 0.2
  s.hum = clamp(s.hum + (s.humBase - s.hum) * 0.02 + (Math.random() - 0.5) * 0.6, 0, 100)
  s.bat -= 0.00002 + Math.random() * 0.00003
  if (s.bat < 3.3) s.bat = 4.15 // "recharged"
  const bat = s.bat + (Math.random() - 0.5) * 0.01
  const rssi = Math.round(s.rssiBase + (Math.random() - 0.5) * 8)
  const status = bat < 3.45 ? 'low_battery' : s.temp > 40 ? 'overheat' : 'ok'
  const json = JSON.stringify({
    device: d.id,
    seq,
    ts: Date.now(),
    temp: round(s.temp, 2),
    hum: round(s.hum, 1),
    bat: round(bat, 2),
    rssi,
    status,
  })
  if (payloadBytes === undefined) return json
  const padLen = payloadBytes - json.length - ',"pad":""'.length
  if (padLen < 0) return json
  return `${json.slice(0, -1)},"pad":"${'x'.repeat(padLen)}"}`
}

/** Starts a fleet of simulated devices; they connect (staggered over `rampMs`) and publish immediately. */
export function startFleet(opts: FleetOptions): Fleet {
  const url = opts.url ?? DEFAULT_URL
  const deviceCount = int('devices', opts.devices, 1)
  const rate = opts.ratePerDevice
  if (!Number.isFinite(rate) || rate < 0) throw new RangeError(`ratePerDevice must be >= 0, got ${rate}`)
  const maxInflight = int('inflight', opts.inflight ?? 10, 1)
  const qos: QoS = opts.qos ?? 1
  if (qos !== 0 && qos !== 1 && qos !== 2) throw new RangeError(`qos must be 0, 1 or 2, got ${String(qos)}`)
  const count = opts.count === undefined ? undefined : int('count', opts.count, 1)
  const topicPrefix = opts.topicPrefix ?? 'devices'
  const idPrefix = opts.idPrefix ?? 'sim'
  const jitter = opts.jitter ?? 0.2
  if (!(jitter >= 0 && jitter <= 1)) throw new RangeError(`jitter must be in 0..1, got ${jitter}`)
  const clean = opts.clean ?? true
  const payloadBytes = opts.payloadBytes === undefined ? undefined : int('payloadBytes', opts.payloadBytes, 0)
  const rampMs = opts.rampMs ?? Math.min(deviceCount * 2, 5000)
  if (!(rampMs >= 0)) throw new RangeError(`rampMs must be >= 0, got ${rampMs}`)
  const keepalive = int('keepaliveSec', opts.keepaliveSec ?? 30, 0)
  const connectTimeout = int('connectTimeoutMs', opts.connectTimeoutMs ?? 10_000, 1)
  const tickMs = int('tickMs', opts.tickMs ?? 10, 1)
  const latency = new LatencyReservoir(int('latencySamples', opts.latencySamples ?? 100_000, 1))

  const ledger = new Ledger()
  const heap = new DueHeap()
  const retryQueue = new Set<Device>()
  const pumpQueue = new Set<Device>()
  let pumpScheduled = false
  let sent = 0
  let acked = 0
  let errors = 0
  let publishErrors = 0
  let reconnects = 0
  let pending = 0
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

  const start = performance.now()
  const devices: Device[] = []
  const width = Math.max(5, String(deviceCount).length)
  for (let i = 0; i < deviceCount; i++) {
    const id = `${idPrefix}-${String(i + 1).padStart(width, '0')}`
    devices.push({
      index: i,
      id,
      topic: `${topicPrefix}/${id}/telemetry`,
      bootAt: start + (deviceCount > 1 ? (rampMs * i) / deviceCount : 0),
      client: undefined,
      nextSeq: 1,
      inflight: 0,
      retries: [],
      ackedCount: 0,
      complete: false,
      nextDueAt: 0,
      everConnected: false,
      closesInARow: 0,
      sensors: initialSensors(),
    })
  }

  const interval = (): number => (1000 / rate) * (1 + jitter * (2 * Math.random() - 1))
  const backoff = (attempt: number): number => {
    const base = Math.min(BACKOFF_START_MS * 2 ** Math.max(0, attempt - 1), BACKOFF_MAX_MS)
    return Math.max(1, Math.round(base * (1 + BACKOFF_JITTER * (2 * Math.random() - 1))))
  }
  const wantsMore = (d: Device): boolean => producing && (count === undefined || d.nextSeq <= count)

  function publish(d: Device, seq: number, payload: string, first: boolean): void {
    const client = d.client
    if (client === undefined) return
    if (first) sent++
    d.inflight++
    pending++
    const t0 = performance.now()
    client.publish(d.topic, payload, { qos }, (err) => {
      d.inflight--
      pending--
      if (closed) return
      if (err) {
        errors++
        publishErrors++
        // Retry later with the same seq/payload. Never re-publish synchronously here: mqtt.js may be iterating
        // its held-back publish queue while it calls us.
        d.retries.push({ seq, payload })
        pending++
        retryQueue.add(d)
        return
      }
      acked++
      if (qos > 0) latency.add(performance.now() - t0)
      if (ledger.record(d.id, seq)) {
        d.ackedCount++
        if (count !== undefined && !d.complete && d.ackedCount >= count) {
          d.complete = true
          if (++completeDevices === deviceCount) resolveDone()
        }
      }
      if (rate === 0) schedulePump(d)
    })
  }

  function produce(d: Device): void {
    const seq = d.nextSeq++
    publish(d, seq, telemetry(d, seq, payloadBytes), true)
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
    while (d.client !== undefined && wantsMore(d) && d.inflight + d.retries.length < maxInflight) produce(d)
  }

  function flushRetries(d: Device): void {
    const batch = d.retries
    d.retries = []
    pending -= batch.length
    for (const r of batch) publish(d, r.seq, r.payload, false)
  }

  function boot(d: Device): void {
    const client = connect(url, {
      clientId: d.id,
      clean,
      keepalive,
      connectTimeout,
      protocolVersion: 4,
      reconnectPeriod: backoff(1),
    })
    d.client = client
    // Runs before mqtt.js' own 'close' handler, which arms the reconnect timer with options.reconnectPeriod.
    client.prependListener('close', () => {
      d.closesInARow++
      client.options.reconnectPeriod = backoff(d.closesInARow)
    })
    client.on('packetreceive', (packet: Packet) => {
      if (packet.cmd !== 'connack' || (packet.returnCode ?? packet.reasonCode ?? 0) !== 0) return
      if (d.everConnected) reconnects++
      d.everConnected = true
      d.closesInARow = 0
      client.options.reconnectPeriod = backoff(1)
    })
    client.on('error', () => {
      if (!closed) errors++
    })
    if (rate > 0) {
      d.nextDueAt = performance.now() + Math.random() * (1000 / rate)
      heap.push(d)
    } else {
      schedulePump(d)
    }
  }

  function tick(): void {
    const now = performance.now()
    while (bootCursor < devices.length) {
      const d = devices[bootCursor]
      if (d === undefined || d.bootAt > now) break
      bootCursor++
      boot(d)
    }
    if (retryQueue.size > 0) {
      const batch = [...retryQueue]
      retryQueue.clear()
      for (const d of batch) flushRetries(d)
    }
    if (rate > 0 && producing) {
      for (let d = heap.peek(); d !== undefined && d.nextDueAt <= now; d = heap.peek()) {
        heap.pop()
        if (now - d.nextDueAt > MAX_CATCH_UP_MS) d.nextDueAt = now
        while (d.nextDueAt <= now && wantsMore(d)) {
          produce(d)
          d.nextDueAt += interval()
        }
        if (wantsMore(d)) heap.push(d)
      }
    }
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
      let connected = 0
      for (const d of devices) if (d.client?.connected === true) connected++
      return {
        devices: deviceCount,
        connected,
        sent,
        acked,
        pending,
        errors,
        publishErrors,
        reconnects,
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
    done() {
      return donePromise
    },
    async drain(timeoutMs = 5000) {
      producing = false
      const until = performance.now() + timeoutMs
      while (pending > 0 && !closed && performance.now() < until) {
        await new Promise((r) => setTimeout(r, 20))
      }
      return pending === 0
    },
    close() {
      if (closePromise !== undefined) return closePromise
      producing = false
      closed = true
      clearInterval(timer)
      rejectDone(new Error('fleet closed before every device had all messages acknowledged'))
      closePromise = Promise.all(
        devices.flatMap((d) => (d.client === undefined ? [] : [endClient(d.client)])),
      ).then(() => undefined)
      return closePromise
    },
    [Symbol.asyncDispose]() {
      return fleet.close()
    },
  }
  return fleet
}
