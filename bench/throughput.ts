// Benchmark: end-to-end QoS 1 throughput and latency, Ferry vs NATS's native MQTT listener vs Mosquitto bridged to it vs raw nats.js JetStream publishing.
//
// Run: npx tsx bench/throughput.ts [--runs 3] [--devices 50] [--count 2000] [--fixedSeconds 10] [--only ferry,mosquitto]
//   (needs nats-server, mosquitto and `npm run build`)
// Load: N devices (firmware-sim, one MQTT client each), ~200-byte JSON telemetry, QoS 1.
//   max:   closed loop, 10 in flight per device, `count` messages per device.
//   fixed: 5,000 msg/s in total (100 msg/s per device) for `fixedSeconds`.
// Targets, interleaved run by run:
//   ferry               the bundled gateway, --fsync always, forwarding to nats-server
//   ferry-v5            the same, the devices speaking MQTT 5 (issue 13: v5 costs at most 10 % of throughput)
//   nats-mqtt           nats-server's MQTT listener; a stream on devices.> stores what devices publish
//   mosquitto-defaults  Mosquitto (persistence on) bridging devices/# at QoS 1 to nats-server's MQTT
//                       listener, Mosquitto's default queue limits (max_queued_messages 1000)
//   mosquitto-tuned     the same with max_queued_messages 0 (unlimited), max_inflight_messages 1000
//   raw-jetstream       nats.js publishing straight to a stream (the upstream ceiling; max only)
// Reports, per target, medians over the runs: acknowledged msg/s, msg/s arriving in JetStream,
// PUBACK p50/p99, device-to-JetStream p50/p99 (payload timestamp to a NATS subscriber seeing it),
// server CPU per 1,000 messages (edge broker + nats-server, from /proc), and, from reading the
// stream back, acknowledged messages that never reached JetStream (lost) and duplicates.
// The JSON also holds merged PUBACK and device→JetStream latency histograms per target.
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { decode } from 'cbor-x'
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { startFleet } from '../firmware-sim/index.js'
import {
  auditStream,
  commandLine,
  cpuSeconds,
  latencyHistogram,
  median,
  mergeHistograms,
  percentile,
  printTable,
  recordPubackLatency,
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
  options: { runs: { type: 'string', default: '3' }, devices: { type: 'string', default: '50' }, count: { type: 'string', default: '2000' }, fixedSeconds: { type: 'string', default: '10' }, only: { type: 'string' } },
})
const RUNS = Number(values.runs)
const DEVICES = Number(values.devices)
const COUNT = Number(values.count)
const FIXED_S = Number(values.fixedSeconds)
const FIXED_RATE = 5000
const PAYLOAD = 200
/** Comma-separated substrings; only plan entries containing one of them run (e.g. `--only ferry,mosquitto-tuned`). */
const ONLY = values.only?.split(',').filter(Boolean)

type Target = 'ferry' | 'ferry-v5' | 'nats-mqtt' | 'mosquitto-defaults' | 'mosquitto-tuned'

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
  /** Messages acknowledged to devices. */
  acked: number
  /** Acknowledged messages not in the stream after the run. */
  lost: number
  /** Messages stored more than once. */
  duplicates: number
}

interface Run {
  sample: Sample
  puback?: Histogram
  e2e?: Histogram
}

/** Watches subjects and records device→NATS latency from the payload's `ts` (every 5th message). */
function watchLatency(nc: NatsConnection, subject: string, cbor: boolean): { lat: number[] } {
  const lat: number[] = []
  let n = 0
  nc.subscribe(subject, {
    callback: (_e, m) => {
      if (++n % 5 !== 0) return
      try {
        const v = (cbor && (m.headers?.get('Content-Type') || 'application/cbor') === 'application/cbor' ? decode(m.data) : JSON.parse(m.string())) as { ts?: unknown }
        if (typeof v.ts === 'number') lat.push(Date.now() - v.ts)
      } catch {}
    },
  })
  return { lat }
}

async function streamMessages(nc: NatsConnection, stream: string): Promise<number> {
  try {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.messages
  } catch {
    return 0
  }
}

function decodePayload(data: Uint8Array, contentType: string | undefined): unknown {
  return contentType === 'application/cbor' ? decode(data) : JSON.parse(new TextDecoder().decode(data))
}

async function runTarget(target: Target, mode: 'max' | 'fixed'): Promise<Run> {
  const isFerry = target === 'ferry' || target === 'ferry-v5'
  const perDevice = mode === 'max' ? COUNT : Math.round((FIXED_RATE / DEVICES) * FIXED_S)
  const total = DEVICES * perDevice
  const nats = await startNatsServer({ mqtt: !isFerry })
  let ferry: Awaited<ReturnType<typeof startFerry>> | undefined
  let mosquitto: MosquittoBridge | undefined
  let nc: NatsConnection | undefined
  let fleet: ReturnType<typeof startFleet> | undefined
  let dataDir: string | undefined
  const timing = await recordPubackLatency()
  try {
    let mqttPort = nats.mqttPort ?? 0
    if (isFerry) {
      ferry = await startFerry(['--nats-url', nats.url, '--data-dir', (dataDir = tempDir('ferry-bench-data-')), '--fsync', 'always'])
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
    nc = await connect({ servers: nats.url })
    const stream = isFerry ? 'FERRY' : DEVICES_STREAM
    const watch = watchLatency(nc, isFerry ? 'ferry.up.>' : 'devices.>', isFerry)
    await nc.flush()
    fleet = startFleet({
      url: `mqtt://127.0.0.1:${mqttPort}`,
      devices: DEVICES,
      ratePerDevice: mode === 'max' ? 0 : FIXED_RATE / DEVICES,
      inflight: 10,
      qos: 1,
      count: perDevice,
      payloadBytes: PAYLOAD,
      rampMs: 500,
      protocolVersion: target === 'ferry-v5' ? 5 : 4,
    })
    // Wait for all devices to connect before the clock starts (connect cost is not throughput).
    while (fleet.stats().connected < DEVICES) await new Promise((r) => setTimeout(r, 20))
    // Devices publish as soon as they connect: measure from here, over what is acknowledged after it.
    const cpu0 = { g: edgePid ? cpuSeconds(edgePid) : 0, n: cpuSeconds(nats.proc.pid) }
    const t0 = performance.now()
    const ackedAt0 = fleet.stats().acked
    const storedAt0 = await streamMessages(nc, stream)
    fleet.ackLatencyWindow()
    timing.recorder.reset()
    await fleet.done()
    const tAcked = performance.now()
    const pub = fleet.ackLatencyWindow()
    // Wait until everything acknowledged is in the stream. A Mosquitto bridge may have dropped
    // messages, so for Mosquitto stop once the count has not moved for 5 s (and count the loss).
    const mustComplete = isFerry || target === 'nats-mqtt'
    let arrived = storedAt0
    let tArrived = performance.now()
    while (arrived < total && performance.now() - tAcked < 60_000) {
      const now = await streamMessages(nc, stream)
      if (now !== arrived) {
        arrived = now
        tArrived = performance.now()
      } else if (!mustComplete && performance.now() - tArrived > 5000) break
      if (arrived < total) await new Promise((r) => setTimeout(r, 10))
    }
    if (arrived >= total) tArrived = performance.now()
    const cpu1 = { g: edgePid ? cpuSeconds(edgePid) : 0, n: cpuSeconds(nats.proc.pid) }
    if (mustComplete && arrived < total) throw new Error(`${target}: only ${arrived} of ${total} messages arrived in JetStream\n${ferry?.proc.output().slice(-3000) ?? ''}`)
    // Ferry under --uplink-headers compact leaves out Content-Type: application/cbor (uplinkContentType).
    const audit = await auditStream(nats.url, stream, [fleet.ledger], isFerry ? (d, ct) => decodePayload(d, ct || 'application/cbor') : decodePayload)
    const measured = arrived - storedAt0
    const g = ((cpu1.g - cpu0.g) * 1e6) / measured
    const n = ((cpu1.n - cpu0.n) * 1e6) / measured
    return {
      sample: {
        ackedPerS: (total - ackedAt0) / ((tAcked - t0) / 1000),
        arrivedPerS: measured / ((tArrived - t0) / 1000),
        pubackP50: pub.p50,
        pubackP99: pub.p99,
        e2eP50: percentile(watch.lat, 50),
        e2eP99: percentile(watch.lat, 99),
        gatewayCpuMsPer1k: g,
        natsCpuMsPer1k: n,
        cpuMsPer1k: g + n,
        acked: audit.acked,
        lost: audit.lost,
        duplicates: audit.duplicates,
      },
      puback: timing.recorder.snapshot(),
      e2e: latencyHistogram(watch.lat),
    }
  } finally {
    timing.stop()
    await fleet?.close()
    await nc?.close()
    await ferry?.proc.stop()
    await mosquitto?.close()
    await nats.proc.stop()
    if (dataDir) fs.rmSync(dataDir, { recursive: true, force: true })
    fs.rmSync(nats.dir, { recursive: true, force: true })
  }
}

/** The upstream ceiling: nats.js publishing the same payloads to a stream, 2,000 in flight, PubAcks on one inbox. */
async function runRawJetStream(): Promise<Run> {
  const nats = await startNatsServer()
  try {
    const nc = await connect({ servers: nats.url })
    const jsm = await jetstreamManager(nc)
    await jsm.streams.add({ name: 'RAW', subjects: ['raw.>'] })
    const total = DEVICES * COUNT
    const payload = new TextEncoder().encode(JSON.stringify({ device: 'sim-00001', seq: 1, ts: Date.now(), temp: 21.5, hum: 40.1, bat: 3.7, rssi: -60, status: 'ok', pad: 'x'.repeat(70) }))
    const inbox = `_RAW.${Date.now()}`
    let acked = 0
    let sent = 0
    const cpu0 = cpuSeconds(nats.proc.pid)
    const t0 = performance.now()
    await new Promise<void>((resolve) => {
      const pump = (): void => {
        while (sent - acked < 2000 && sent < total) nc.publish(`raw.dev.${sent % DEVICES}`, payload, { reply: `${inbox}.${sent++}` })
      }
      nc.subscribe(`${inbox}.*`, {
        callback: () => {
          acked++
          if (acked === total) resolve()
          else if (sent - acked < 1000) pump()
        },
      })
      pump()
    })
    const t1 = performance.now()
    const n = ((cpuSeconds(nats.proc.pid) - cpu0) * 1e6) / total
    await nc.close()
    const rate = total / ((t1 - t0) / 1000)
    return {
      sample: { ackedPerS: rate, arrivedPerS: rate, pubackP50: NaN, pubackP99: NaN, e2eP50: NaN, e2eP99: NaN, gatewayCpuMsPer1k: 0, natsCpuMsPer1k: n, cpuMsPer1k: n, acked: total, lost: 0, duplicates: 0 },
    }
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

export async function main(): Promise<Record<string, unknown>> {
  const runs: Record<string, Run[]> = {}
  const plan: [string, () => Promise<Run>][] = [
    ['ferry max', () => runTarget('ferry', 'max')],
    ['ferry-v5 max', () => runTarget('ferry-v5', 'max')],
    ['nats-mqtt max', () => runTarget('nats-mqtt', 'max')],
    ['mosquitto-defaults max', () => runTarget('mosquitto-defaults', 'max')],
    ['mosquitto-tuned max', () => runTarget('mosquitto-tuned', 'max')],
    ['raw-jetstream max', () => runRawJetStream()],
    ['ferry 5k/s', () => runTarget('ferry', 'fixed')],
    ['ferry-v5 5k/s', () => runTarget('ferry-v5', 'fixed')],
    ['nats-mqtt 5k/s', () => runTarget('nats-mqtt', 'fixed')],
    ['mosquitto-defaults 5k/s', () => runTarget('mosquitto-defaults', 'fixed')],
    ['mosquitto-tuned 5k/s', () => runTarget('mosquitto-tuned', 'fixed')],
  ]
  // Interleave targets run by run, so drift in machine load hits all of them alike.
  for (let r = 0; r < RUNS; r++) {
    for (const [name, fn] of plan) {
      if (ONLY && !ONLY.some((o) => name.includes(o))) continue
      const run = await fn()
      ;(runs[name] ??= []).push(run)
      const s = run.sample
      process.stderr.write(`run ${r + 1}/${RUNS} ${name}: ${Math.round(s.ackedPerS)} msg/s acked, ${Math.round(s.arrivedPerS)} arrived, ${s.lost} lost, ${s.duplicates} duplicates\n`)
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
  process.stdout.write(`\nThroughput and latency: ${DEVICES} devices, QoS 1, ~${PAYLOAD}-byte JSON, Ferry --fsync always; medians of ${RUNS} runs\n\n`)
  printTable([
    ['target', 'acked msg/s', 'in JetStream msg/s', 'PUBACK p50 ms', 'PUBACK p99 ms', 'device→JS p50 ms', 'device→JS p99 ms', 'CPU ms/1k msgs (edge+nats)', 'lost', 'dup'],
    ...Object.entries(results).map(([k, s]) => [
      k,
      s.ackedPerS,
      s.arrivedPerS,
      s.pubackP50,
      s.pubackP99,
      s.e2eP50,
      s.e2eP99,
      `${s.cpuMsPer1k.toFixed(1)} (${s.gatewayCpuMsPer1k.toFixed(1)}+${s.natsCpuMsPer1k.toFixed(1)})`,
      s.lost.toLocaleString('en-US'),
      s.duplicates.toLocaleString('en-US'),
    ]),
  ])
  // Ferry ÷ peer for every figure, in the same mode (max or 5k/s).
  const ratios: Record<string, Record<string, number>> = {}
  for (const mode of ['max', '5k/s']) {
    const f = results[`ferry ${mode}`]
    if (!f) continue
    for (const peer of ['nats-mqtt', 'mosquitto-defaults', 'mosquitto-tuned', 'raw-jetstream']) {
      const p = results[`${peer} ${mode}`]
      if (!p) continue
      ratios[`ferry/${peer} ${mode}`] = Object.fromEntries(COMPARED.map(([k]) => [k, f[k] / p[k]]))
    }
    // MQTT 5 devices against 3.1.1 devices on the same gateway (issue 13: v5 costs at most 10 %).
    const v5 = results[`ferry-v5 ${mode}`]
    if (v5) ratios[`ferry-v5/ferry ${mode}`] = Object.fromEntries(COMPARED.map(([k]) => [k, v5[k] / f[k]]))
  }
  process.stdout.write(`\nFerry ÷ peer (throughput: higher is better for Ferry; latency and CPU: lower is better)\n\n`)
  printTable([['Ferry ÷', ...COMPARED.map(([, label]) => label)], ...Object.entries(ratios).map(([k, r]) => [k.startsWith('ferry/') ? k.replace('ferry/', '') : k, ...COMPARED.map(([key]) => (Number.isFinite(r[key]) ? `${r[key]!.toFixed(2)}×` : '-'))])])
  const lossy = Object.entries(results).filter(([, s]) => s.lost > 0)
  for (const [k, s] of lossy) process.stdout.write(`${k}: ${s.lost} of ${s.acked} acknowledged messages (median of runs) never reached JetStream\n`)
  const file = writeResult('throughput', {
    command: commandLine(),
    peers: { mosquitto: mosquittoVersion(), mosquittoVariants: MOSQUITTO_VARIANT_CONFIG },
    devices: DEVICES,
    countPerDevice: COUNT,
    fixedRatePerS: FIXED_RATE,
    fixedSeconds: FIXED_S,
    payloadBytes: PAYLOAD,
    runs: RUNS,
    medians: results,
    ratios,
    histograms,
    all: Object.fromEntries(Object.entries(runs).map(([k, xs]) => [k, xs.map((x) => x.sample)])),
  })
  process.stdout.write(`wrote ${file}\n`)
  return { results, ratios }
}

runIfMain(import.meta.url, main)
