// Benchmark: end-to-end QoS 1 throughput and latency, Ferry vs NATS's native MQTT listener vs Mosquitto bridged to it vs raw nats.js JetStream publishing.
//
// Run: npx tsx bench/throughput.ts [--runs 3] [--peer-runs 1] [--devices 50] [--count 2000] [--sustain-seconds 20]
//        [--fixedSeconds 10] [--warmup 30000] [--only ferry,mosquitto]
//   (needs nats-server, mosquitto and `npm run build`)
// Load: N devices (firmware-sim, one MQTT client each), ~200-byte JSON telemetry, QoS 1.
//   max:   closed loop, 10 in flight per device.
//   fixed: 5,000 msg/s in total (100 msg/s per device).
// Every run of a target is ONE fresh server process measured twice:
//   cold    the fresh process, no warm-up: max = `count` messages per device; fixed = `fixedSeconds` at 5,000 msg/s.
//   steady  the same process right after the cold phase, which is its warm-up (topped up at max load to `--warmup`
//           messages when the cold phase was smaller): max = `sustain-seconds` of sustained max load (long enough
//           for a forwarding backlog to show), fixed = another `fixedSeconds` at 5,000 msg/s.
// Targets, interleaved run by run:
//   ferry               the bundled gateway, --fsync always (every PUBACK after an fdatasync), forwarding to nats-server
//   ferry-batch         the same with --fsync batch (the log is synced every 100 ms or 16 MiB, before the PUBACK)
//   ferry-v5            --fsync always, the devices speaking MQTT 5 (issue 13: v5 costs at most 10 % of throughput)
//   nats-mqtt           nats-server's MQTT listener; a stream on devices.> stores what devices publish (its
//                       default: the stream file store syncs every 2 minutes)
//   mosquitto-defaults  Mosquitto (persistence on) bridging devices/# at QoS 1 to nats-server's MQTT
//                       listener, Mosquitto's default queue limits (max_queued_messages 1000)
//   mosquitto-tuned     the same with max_queued_messages 0 (unlimited), max_inflight_messages 1000
//   raw-jetstream       nats.js publishing straight to a stream (the upstream ceiling; max only)
// ferry, ferry-batch and nats-mqtt (the issue's targets) run `--runs` times; the other peers `--peer-runs` times.
// Reports, per target and phase, medians over the runs: acknowledged msg/s, msg/s arriving in JetStream,
// PUBACK p50/p99, device-to-JetStream p50/p99 (payload timestamp to a NATS subscriber seeing it),
// server CPU per 1,000 messages (edge broker + nats-server, from /proc), the edge process's RSS, for Ferry
// the largest forwarding lag (ferry_log_oldest_unforwarded_age_seconds, scraped every 250 ms), and, from reading
// the stream back, acknowledged messages that never reached JetStream (lost) and duplicates.
// The JSON also holds merged PUBACK and device→JetStream latency histograms per target and phase, and the
// gateway's runtime (Node version and V8 flags).
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { decode } from 'cbor-x'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { startFleet } from '../firmware-sim/index.js'
import type { Fleet } from '../firmware-sim/index.js'
import {
  auditStream,
  commandLine,
  cpuSeconds,
  ferryCommand,
  latencyHistogram,
  median,
  mergeHistograms,
  percentile,
  printTable,
  recordPubackLatency,
  rssMiB,
  runIfMain,
  startFerry,
  startNatsServer,
  tempDir,
  writeResult,
} from './lib.js'
import type { Histogram } from './lib.js'
import { DEVICES_STREAM, MOSQUITTO_VARIANT_CONFIG, addDevicesStream, mosquittoVersion, startMosquittoBridge, waitBridgeConnected } from './peers.js'
import type { MosquittoBridge } from './peers.js'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    'peer-runs': { type: 'string', default: '1' },
    devices: { type: 'string', default: '50' },
    count: { type: 'string', default: '2000' },
    'sustain-seconds': { type: 'string', default: '20' },
    fixedSeconds: { type: 'string', default: '10' },
    warmup: { type: 'string', default: '30000' },
    only: { type: 'string' },
  },
})
const RUNS = Number(values.runs)
const PEER_RUNS = Math.min(RUNS, Number(values['peer-runs']))
const DEVICES = Number(values.devices)
const COUNT = Number(values.count)
const SUSTAIN_S = Number(values['sustain-seconds'])
const FIXED_S = Number(values.fixedSeconds)
const WARMUP = Number(values.warmup)
const FIXED_RATE = 5000
const PAYLOAD = 200
/** Comma-separated substrings; only plan entries containing one of them run (e.g. `--only ferry,mosquitto-tuned`). */
const ONLY = values.only?.split(',').filter(Boolean)

type Target = 'ferry' | 'ferry-batch' | 'ferry-v5' | 'nats-mqtt' | 'mosquitto-defaults' | 'mosquitto-tuned'
type Phase = 'cold' | 'steady'

interface Sample {
  ackedPerS: number
  arrivedPerS: number
  pubackP50: number
  pubackP99: number
  e2eP50: number
  e2eP99: number
  /** Edge broker (Ferry or Mosquitto) + nats-server CPU ms per 1,000 messages arriving in JetStream. */
  cpuMsPer1k: number
  /** The edge broker's part (Ferry or Mosquitto; 0 when devices talk to nats-server directly). */
  gatewayCpuMsPer1k: number
  natsCpuMsPer1k: number
  /** Messages acknowledged to devices (in this phase). */
  acked: number
  /** Acknowledged messages (all phases of the process) not in the stream after the run. */
  lost: number
  /** Messages stored more than once (all phases of the process). */
  duplicates: number
  /** Seconds the phase measured. */
  seconds: number
  /** RSS of the edge process (Ferry or Mosquitto; nats-server for nats-mqtt), MiB, median and max of 250 ms samples. */
  rssMedianMiB: number
  rssMaxMiB: number
  /** Ferry: largest ferry_log_oldest_unforwarded_age_seconds seen in the phase (NaN for peers). */
  lagMaxS: number
}

interface Run {
  sample: Sample
  puback?: Histogram
  e2e?: Histogram
}

/** Watches subjects and records device→NATS latency from the payload's `ts` (every 5th message). */
function watchLatency(nc: NatsConnection, subject: string, cbor: boolean): { lat: number[] } {
  const w = { lat: [] as number[] }
  let n = 0
  nc.subscribe(subject, {
    callback: (_e, m) => {
      if (++n % 5 !== 0) return
      try {
        const v = (cbor && (m.headers?.has('Content-Type') !== true || m.headers.get('Content-Type') === 'application/cbor') ? decode(m.data) : JSON.parse(m.string())) as { ts?: unknown }
        if (typeof v.ts === 'number') w.lat.push(Date.now() - v.ts)
      } catch {}
    },
  })
  return w
}

/** Messages in a stream; for Ferry's stream only the devices' messages (ferry.up.>), not its presence events. */
async function streamMessages(nc: NatsConnection, stream: string): Promise<number> {
  try {
    const jsm = await jetstreamManager(nc)
    if (stream !== 'FERRY') return (await jsm.streams.info(stream)).state.messages
    const subjects = (await jsm.streams.info(stream, { subjects_filter: 'ferry.up.>' })).state.subjects ?? {}
    let n = 0
    for (const k in subjects) n += subjects[k]!
    return n
  } catch {
    return 0
  }
}

function decodePayload(data: Uint8Array, contentType: string | undefined): unknown {
  return contentType === 'application/cbor' ? decode(data) : JSON.parse(new TextDecoder().decode(data))
}

/** Samples a process's RSS and (for Ferry) its forwarding lag every 250 ms until stop(). */
function watchProcess(pid: number | undefined, metricsUrl: string | undefined): { stop(): Promise<{ rss: number[]; lagMax: number }> } {
  const rss: number[] = []
  let lagMax = metricsUrl ? 0 : NaN
  let busy: Promise<void> = Promise.resolve()
  const tick = (): void => {
    if (pid) {
      const v = rssMiB(pid)
      if (Number.isFinite(v)) rss.push(v)
    }
    if (metricsUrl)
      busy = fetch(metricsUrl)
        .then((r) => r.text())
        .then((t) => {
          const m = /^ferry_log_oldest_unforwarded_age_seconds (\S+)$/m.exec(t)
          if (m) lagMax = Math.max(lagMax, Number(m[1]))
        })
        .catch(() => {})
  }
  tick()
  const timer = setInterval(tick, 250)
  return {
    async stop() {
      clearInterval(timer)
      tick()
      await busy
      return { rss, lagMax }
    },
  }
}

/** The gateway's HTTP port from its JSON log line about the metrics listener (`--http-listen 127.0.0.1:0`). */
async function ferryHttpPort(output: () => string): Promise<number | undefined> {
  for (let i = 0; i < 100; i++) {
    const m = /"msg":"HTTP listening","address":"[^"]*:(\d+)"/.exec(output())
    if (m) return Number(m[1])
    await new Promise((r) => setTimeout(r, 50))
  }
  return undefined
}

interface PhaseTimer {
  cpu0: { g: number; n: number }
  t0: number
  acked0: number
  stored0: number
}

async function runTarget(target: Target, mode: 'max' | 'fixed'): Promise<Record<Phase, Run>> {
  const isFerry = target.startsWith('ferry')
  const nats = await startNatsServer({ mqtt: !isFerry })
  let ferry: Awaited<ReturnType<typeof startFerry>> | undefined
  let mosquitto: MosquittoBridge | undefined
  let nc: NatsConnection | undefined
  const fleets: Fleet[] = []
  let dataDir: string | undefined
  const timing = await recordPubackLatency()
  try {
    let mqttPort = nats.mqttPort ?? 0
    if (isFerry) {
      const fsync = target === 'ferry-batch' ? 'batch' : 'always'
      ferry = await startFerry(['--nats-url', nats.url, '--data-dir', (dataDir = tempDir('ferry-bench-data-')), '--fsync', fsync])
      mqttPort = ferry.mqttPort
    } else {
      await addDevicesStream(nats.url)
    }
    if (target === 'mosquitto-defaults' || target === 'mosquitto-tuned') {
      mosquitto = await startMosquittoBridge({ variant: target === 'mosquitto-tuned' ? 'tuned' : 'defaults', natsMqttPort: nats.mqttPort! })
      await waitBridgeConnected(mosquitto, nats.url)
      mqttPort = mosquitto.mqttPort
    }
    const edgePid = ferry?.proc.pid ?? mosquitto?.proc.pid
    const rssPid = edgePid ?? nats.proc.pid
    const httpPort = ferry ? await ferryHttpPort(() => ferry!.proc.output()) : undefined
    const metricsUrl = httpPort ? `http://127.0.0.1:${httpPort}/metrics` : undefined
    if (ferry && !metricsUrl) process.stderr.write(`${target}: the gateway's HTTP port was not found in its log; no forwarding lag\n`)
    nc = await connect({ servers: nats.url })
    const stream = isFerry ? 'FERRY' : DEVICES_STREAM
    const watch = watchLatency(nc, isFerry ? 'ferry.up.>' : 'devices.>', isFerry)
    await nc.flush()
    const natsConn = nc
    const startPhaseFleet = async (idPrefix: string, opts: { rate: number; count?: number }): Promise<{ fleet: Fleet; base: number }> => {
      const base = await streamMessages(natsConn, stream)
      const fleet = startFleet({
        url: `mqtt://127.0.0.1:${mqttPort}`,
        devices: DEVICES,
        idPrefix,
        ratePerDevice: opts.rate,
        inflight: 10,
        qos: 1,
        ...(opts.count !== undefined ? { count: opts.count } : {}),
        payloadBytes: PAYLOAD,
        rampMs: 500,
        protocolVersion: target === 'ferry-v5' ? 5 : 4,
      })
      fleets.push(fleet)
      // Wait for all devices to connect before the clock starts (connect cost is not throughput).
      while (fleet.stats().connected < DEVICES) await new Promise((r) => setTimeout(r, 20))
      return { fleet, base }
    }
    const begin = async (fleet: Fleet): Promise<PhaseTimer> => {
      const t = { cpu0: { g: edgePid ? cpuSeconds(edgePid) : 0, n: cpuSeconds(nats.proc.pid) }, t0: performance.now(), acked0: fleet.stats().acked, stored0: await streamMessages(natsConn, stream) }
      fleet.ackLatencyWindow()
      timing.recorder.reset()
      watch.lat.length = 0
      return t
    }
    /** Waits until `total` messages are in the stream (for Mosquitto: until the count stops moving for 5 s); returns the count and when it got there. */
    const awaitArrival = async (total: number, since: number): Promise<{ arrived: number; t: number }> => {
      const mustComplete = isFerry || target === 'nats-mqtt'
      let arrived = await streamMessages(natsConn, stream)
      let t = performance.now()
      while (arrived < total && performance.now() - since < 60_000) {
        const now = await streamMessages(natsConn, stream)
        if (now !== arrived) {
          arrived = now
          t = performance.now()
        } else if (!mustComplete && performance.now() - t > 5000) break
        if (arrived < total) await new Promise((r) => setTimeout(r, 10))
      }
      if (arrived >= total) t = performance.now()
      if (mustComplete && arrived < total) throw new Error(`${target}: only ${arrived} of ${total} messages arrived in JetStream\n${ferry?.proc.output().slice(-3000) ?? ''}`)
      return { arrived, t }
    }
    const sample = (p: PhaseTimer, end: { acked: number; tAcked: number; arrived: number; tArrived: number }, pub: { p50: number; p99: number }, proc: { rss: number[]; lagMax: number }): Sample => {
      const cpu1 = { g: edgePid ? cpuSeconds(edgePid) : 0, n: cpuSeconds(nats.proc.pid) }
      const measured = end.arrived - p.stored0
      const g = ((cpu1.g - p.cpu0.g) * 1e6) / measured
      const n = ((cpu1.n - p.cpu0.n) * 1e6) / measured
      return {
        ackedPerS: (end.acked - p.acked0) / ((end.tAcked - p.t0) / 1000),
        arrivedPerS: measured / ((end.tArrived - p.t0) / 1000),
        pubackP50: pub.p50,
        pubackP99: pub.p99,
        e2eP50: percentile(watch.lat, 50),
        e2eP99: percentile(watch.lat, 99),
        gatewayCpuMsPer1k: g,
        natsCpuMsPer1k: n,
        cpuMsPer1k: g + n,
        acked: end.acked - p.acked0,
        lost: 0,
        duplicates: 0,
        seconds: (end.tAcked - p.t0) / 1000,
        rssMedianMiB: median(proc.rss),
        rssMaxMiB: proc.rss.length ? Math.max(...proc.rss) : NaN,
        lagMaxS: proc.lagMax,
      }
    }
    const histos = (): { puback: Histogram; e2e: Histogram } => ({ puback: timing.recorder.snapshot(), e2e: latencyHistogram(watch.lat) })

    // Cold: the fresh process, a fixed number of messages (max) or seconds (5k/s), everything awaited into JetStream.
    const perDevice = mode === 'max' ? COUNT : Math.round((FIXED_RATE / DEVICES) * FIXED_S)
    const { fleet: coldFleet, base: coldBase } = await startPhaseFleet('cold', { rate: mode === 'max' ? 0 : FIXED_RATE / DEVICES, count: perDevice })
    const pc = await begin(coldFleet)
    let proc = watchProcess(rssPid, metricsUrl)
    await coldFleet.done()
    const tAckedCold = performance.now()
    const pubCold = coldFleet.ackLatencyWindow()
    const arrCold = await awaitArrival(coldBase + DEVICES * perDevice, tAckedCold)
    const cold: Run = { sample: sample(pc, { acked: coldFleet.stats().acked, tAcked: tAckedCold, arrived: arrCold.arrived, tArrived: arrCold.t }, pubCold, await proc.stop()), ...histos() }
    await coldFleet.close()
    // Warm-up top-up, when the cold phase was smaller than --warmup messages.
    const topUp = Math.ceil((WARMUP - DEVICES * perDevice) / DEVICES)
    if (topUp > 0) {
      const { fleet: warm, base: warmBase } = await startPhaseFleet('warm', { rate: 0, count: topUp })
      await warm.done()
      await awaitArrival(warmBase + DEVICES * topUp, performance.now())
      await warm.close()
    }

    // Steady: the same process, warmed up; max = sustained max load for SUSTAIN_S, fixed = FIXED_S at 5,000 msg/s.
    const { fleet: steadyFleet, base: steadyBase } = await startPhaseFleet('sim', mode === 'max' ? { rate: 0 } : { rate: FIXED_RATE / DEVICES, count: perDevice })
    const ps = await begin(steadyFleet)
    proc = watchProcess(rssPid, metricsUrl)
    let steady: Run
    if (mode === 'max') {
      await new Promise((r) => setTimeout(r, SUSTAIN_S * 1000))
      // The window closes now: acknowledged and arrived counts, CPU and lag as they stand (a backlog stays a backlog).
      const tEnd = performance.now()
      const acked = steadyFleet.stats().acked
      const pub = steadyFleet.ackLatencyWindow()
      const arrived = await streamMessages(natsConn, stream)
      steady = { sample: sample(ps, { acked, tAcked: tEnd, arrived, tArrived: tEnd }, pub, await proc.stop()), ...histos() }
      await steadyFleet.drain(10_000)
    } else {
      await steadyFleet.done()
      const tAcked = performance.now()
      const pub = steadyFleet.ackLatencyWindow()
      const arr = await awaitArrival(steadyBase + DEVICES * perDevice, tAcked)
      steady = { sample: sample(ps, { acked: steadyFleet.stats().acked, tAcked, arrived: arr.arrived, tArrived: arr.t }, pub, await proc.stop()), ...histos() }
    }
    await steadyFleet.close()
    // Everything acknowledged in the process's life must be in the stream, once.
    const ackedTotal = fleets.reduce((a, f) => a + f.stats().acked, 0)
    await awaitArrival(ackedTotal, performance.now())
    const audit = await auditStream(
      nats.url,
      stream,
      fleets.map((f) => f.ledger),
      // Ferry under --uplink-headers compact leaves out Content-Type: application/cbor (uplinkContentType).
      isFerry ? (d, ct) => decodePayload(d, ct || 'application/cbor') : decodePayload,
    )
    for (const r of [cold, steady]) Object.assign(r.sample, { lost: audit.lost, duplicates: audit.duplicates })
    return { cold, steady }
  } finally {
    timing.stop()
    for (const f of fleets) await f.close()
    await nc?.close()
    await ferry?.proc.stop()
    await mosquitto?.close()
    await nats.proc.stop()
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true })
    fs.rmSync(nats.dir, { recursive: true, force: true })
  }
}

/** The upstream ceiling: nats.js publishing the same payloads to a stream, 2,000 in flight, PubAcks on one inbox; cold, then again on the same server. */
async function runRawJetStream(): Promise<Record<Phase, Run>> {
  const nats = await startNatsServer()
  try {
    const nc = await connect({ servers: nats.url })
    const jsm = await jetstreamManager(nc)
    await jsm.streams.add({ name: 'RAW', subjects: ['raw.>'] })
    const total = DEVICES * COUNT
    const payload = new TextEncoder().encode(JSON.stringify({ device: 'sim-00001', seq: 1, ts: Date.now(), temp: 21.5, hum: 40.1, bat: 3.7, rssi: -60, status: 'ok', pad: 'x'.repeat(70) }))
    const once = async (tag: string): Promise<Run> => {
      const inbox = `_RAW.${tag}.${Date.now()}`
      let acked = 0
      let sent = 0
      const cpu0 = cpuSeconds(nats.proc.pid)
      const t0 = performance.now()
      let sub: ReturnType<NatsConnection['subscribe']> | undefined
      await new Promise<void>((resolve) => {
        const pump = (): void => {
          while (sent - acked < 2000 && sent < total) nc.publish(`raw.dev.${sent % DEVICES}`, payload, { reply: `${inbox}.${sent++}` })
        }
        sub = nc.subscribe(`${inbox}.*`, {
          callback: () => {
            acked++
            if (acked === total) resolve()
            else if (sent - acked < 1000) pump()
          },
        })
        pump()
      })
      sub?.unsubscribe()
      const t1 = performance.now()
      const n = ((cpuSeconds(nats.proc.pid) - cpu0) * 1e6) / total
      const rate = total / ((t1 - t0) / 1000)
      return {
        sample: {
          ackedPerS: rate,
          arrivedPerS: rate,
          pubackP50: NaN,
          pubackP99: NaN,
          e2eP50: NaN,
          e2eP99: NaN,
          gatewayCpuMsPer1k: 0,
          natsCpuMsPer1k: n,
          cpuMsPer1k: n,
          acked: total,
          lost: 0,
          duplicates: 0,
          seconds: (t1 - t0) / 1000,
          rssMedianMiB: NaN,
          rssMaxMiB: NaN,
          lagMaxS: NaN,
        },
      }
    }
    const cold = await once('cold')
    const steady = await once('steady')
    await nc.close()
    return { cold, steady }
  } finally {
    await nats.proc.stop()
    fs.rmSync(nats.dir, { recursive: true, force: true })
  }
}

function medianSample(xs: Sample[]): Sample {
  const keys = Object.keys(xs[0]!) as (keyof Sample)[]
  return Object.fromEntries(keys.map((k) => [k, median(xs.map((x) => x[k]))])) as unknown as Sample
}

/** Figures compared between Ferry and a peer, with whether higher is better. */
const COMPARED: [keyof Sample, string, boolean][] = [
  ['ackedPerS', 'acked msg/s', true],
  ['arrivedPerS', 'in JetStream msg/s', true],
  ['pubackP50', 'PUBACK p50', false],
  ['pubackP99', 'PUBACK p99', false],
  ['e2eP50', 'device→JS p50', false],
  ['e2eP99', 'device→JS p99', false],
  ['cpuMsPer1k', 'CPU per msg', false],
]

/** The gateway's runtime: `node --version` of the binary that runs it, and the V8 flags it gets. */
function gatewayRuntime(): { node: string; nodeArgs: string[]; bundle: string } {
  const [cmd, ...rest] = ferryCommand()
  let node = 'unknown'
  try {
    node = execFileSync(cmd!, ['--version'], { encoding: 'utf8' }).trim()
  } catch {}
  return { node, nodeArgs: rest.slice(0, -1), bundle: rest[rest.length - 1]! }
}

export async function main(): Promise<Record<string, unknown>> {
  const runtime = gatewayRuntime()
  process.stderr.write(`gateway: ${runtime.node} ${runtime.nodeArgs.join(' ')} ${runtime.bundle}\n`)
  const runs: Record<string, Run[]> = {}
  // [name, how many runs, what]: the issue's targets (ferry, ferry-batch, nats-mqtt) every run, the other peers --peer-runs.
  const plan: [string, number, () => Promise<Record<Phase, Run>>][] = [
    ['ferry max', RUNS, () => runTarget('ferry', 'max')],
    ['ferry-batch max', RUNS, () => runTarget('ferry-batch', 'max')],
    ['nats-mqtt max', RUNS, () => runTarget('nats-mqtt', 'max')],
    ['ferry-v5 max', PEER_RUNS, () => runTarget('ferry-v5', 'max')],
    ['mosquitto-defaults max', PEER_RUNS, () => runTarget('mosquitto-defaults', 'max')],
    ['mosquitto-tuned max', PEER_RUNS, () => runTarget('mosquitto-tuned', 'max')],
    ['raw-jetstream max', PEER_RUNS, () => runRawJetStream()],
    ['ferry 5k/s', RUNS, () => runTarget('ferry', 'fixed')],
    ['nats-mqtt 5k/s', RUNS, () => runTarget('nats-mqtt', 'fixed')],
    ['ferry-batch 5k/s', PEER_RUNS, () => runTarget('ferry-batch', 'fixed')],
    ['ferry-v5 5k/s', PEER_RUNS, () => runTarget('ferry-v5', 'fixed')],
    ['mosquitto-tuned 5k/s', PEER_RUNS, () => runTarget('mosquitto-tuned', 'fixed')],
  ]
  // Interleave targets run by run, so drift in machine load hits all of them alike.
  for (let r = 0; r < RUNS; r++) {
    for (const [name, times, fn] of plan) {
      if (r >= times) continue
      if (ONLY && !ONLY.some((o) => name.includes(o))) continue
      const t0 = performance.now()
      const run = await fn()
      for (const phase of ['cold', 'steady'] as const) {
        ;(runs[`${name} ${phase}`] ??= []).push(run[phase])
        const s = run[phase].sample
        process.stderr.write(
          `run ${r + 1}/${times} ${name} ${phase}: ${Math.round(s.ackedPerS)} msg/s acked, ${Math.round(s.arrivedPerS)} arrived, gateway ${s.gatewayCpuMsPer1k.toFixed(1)} ms/1k, e2e p99 ${s.e2eP99} ms, lag max ${s.lagMaxS} s, RSS max ${s.rssMaxMiB.toFixed(0)} MiB, ${s.lost} lost, ${s.duplicates} duplicates\n`,
        )
      }
      process.stderr.write(`  (${((performance.now() - t0) / 1000).toFixed(1)} s)\n`)
    }
  }
  const results: Record<string, Sample> = {}
  const histograms: Record<string, { puback?: Histogram; e2e?: Histogram }> = {}
  for (const [name, xs] of Object.entries(runs)) {
    results[name] = medianSample(xs.map((x) => x.sample))
    const puback = mergeHistograms(xs.flatMap((x) => (x.puback ? [x.puback] : [])))
    const e2e = mergeHistograms(xs.flatMap((x) => (x.e2e ? [x.e2e] : [])))
    if (puback || e2e) histograms[name] = { ...(puback ? { puback } : {}), ...(e2e ? { e2e } : {}) }
  }
  process.stdout.write(
    `\nThroughput and latency: ${DEVICES} devices, QoS 1, ~${PAYLOAD}-byte JSON; gateway on Node ${runtime.node}${runtime.nodeArgs.length ? ` ${runtime.nodeArgs.join(' ')}` : ''}; medians of ${RUNS} runs (peers ${PEER_RUNS})\n` +
      `cold: fresh process; steady: the same process after the cold phase (warm-up ≥ ${WARMUP.toLocaleString('en-US')} messages); max steady = ${SUSTAIN_S} s of sustained max load\n\n`,
  )
  printTable([
    ['target', 'acked msg/s', 'in JetStream msg/s', 'PUBACK p50 ms', 'PUBACK p99 ms', 'device→JS p50 ms', 'device→JS p99 ms', 'CPU ms/1k msgs (edge+nats)', 'RSS max MiB', 'lag max s', 'lost', 'dup'],
    ...Object.entries(results).map(([k, s]) => [
      k,
      s.ackedPerS,
      s.arrivedPerS,
      s.pubackP50,
      s.pubackP99,
      s.e2eP50,
      s.e2eP99,
      `${s.cpuMsPer1k.toFixed(1)} (${s.gatewayCpuMsPer1k.toFixed(1)}+${s.natsCpuMsPer1k.toFixed(1)})`,
      s.rssMaxMiB,
      s.lagMaxS,
      s.lost.toLocaleString('en-US'),
      s.duplicates.toLocaleString('en-US'),
    ]),
  ])
  // Ferry ÷ peer for every figure, in the same mode (max or 5k/s) and phase.
  const ratios: Record<string, Record<string, number>> = {}
  for (const mode of ['max', '5k/s'])
    for (const phase of ['cold', 'steady']) {
      const f = results[`ferry ${mode} ${phase}`]
      if (!f) continue
      for (const peer of ['nats-mqtt', 'mosquitto-defaults', 'mosquitto-tuned', 'raw-jetstream']) {
        const p = results[`${peer} ${mode} ${phase}`]
        if (!p) continue
        ratios[`ferry/${peer} ${mode} ${phase}`] = Object.fromEntries(COMPARED.map(([k]) => [k, f[k] / p[k]]))
      }
      const b = results[`ferry-batch ${mode} ${phase}`]
      const n = results[`nats-mqtt ${mode} ${phase}`]
      if (b && n) ratios[`ferry-batch/nats-mqtt ${mode} ${phase}`] = Object.fromEntries(COMPARED.map(([k]) => [k, b[k] / n[k]]))
      // MQTT 5 devices against 3.1.1 devices on the same gateway (issue 13: v5 costs at most 10 %).
      const v5 = results[`ferry-v5 ${mode} ${phase}`]
      if (v5) ratios[`ferry-v5/ferry ${mode} ${phase}`] = Object.fromEntries(COMPARED.map(([k]) => [k, v5[k] / f[k]]))
    }
  process.stdout.write(`\nFerry ÷ peer (throughput: higher is better for Ferry; latency and CPU: lower is better)\n\n`)
  printTable([['Ferry ÷', ...COMPARED.map(([, label]) => label)], ...Object.entries(ratios).map(([k, r]) => [k.startsWith('ferry/') ? k.replace('ferry/', '') : k, ...COMPARED.map(([key]) => (Number.isFinite(r[key]) ? `${r[key]!.toFixed(2)}×` : '-'))])])
  const lossy = Object.entries(results).filter(([, s]) => s.lost > 0)
  for (const [k, s] of lossy) process.stdout.write(`${k}: ${s.lost} acknowledged messages (median of runs) never reached JetStream\n`)
  const file = writeResult('throughput', {
    command: commandLine(),
    gateway: runtime,
    peers: { mosquitto: mosquittoVersion(), mosquittoVariants: MOSQUITTO_VARIANT_CONFIG },
    devices: DEVICES,
    countPerDevice: COUNT,
    sustainSeconds: SUSTAIN_S,
    warmupMessages: WARMUP,
    fixedRatePerS: FIXED_RATE,
    fixedSeconds: FIXED_S,
    payloadBytes: PAYLOAD,
    runs: RUNS,
    peerRuns: PEER_RUNS,
    medians: results,
    ratios,
    histograms,
    all: Object.fromEntries(Object.entries(runs).map(([k, xs]) => [k, xs.map((x) => x.sample)])),
  })
  process.stdout.write(`wrote ${file}\n`)
  return { results, ratios }
}

runIfMain(import.meta.url, main)
