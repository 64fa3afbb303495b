// Benchmark: end-to-end QoS 1 throughput and latency, Ferry vs NATS's native MQTT listener vs raw nats.js JetStream publishing.
//
// Run: npx tsx bench/throughput.ts [--runs 3] [--devices 50] [--count 2000]   (needs nats-server and `npm run build`)
// Load: N devices (firmware-sim, one MQTT client each), ~200-byte JSON telemetry, QoS 1.
//   max:   closed loop, 10 in flight per device, `count` messages per device.
//   fixed: 5,000 msg/s in total (100 msg/s per device) for 10 s.
// Reports, per target, medians over the runs: acknowledged msg/s, msg/s arriving in JetStream,
// PUBACK p50/p99, device-to-JetStream p50/p99 (payload timestamp to a NATS subscriber seeing it),
// and server CPU seconds per 1,000 messages (gateway and nats-server, from /proc).
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { decode } from 'cbor-x'
import { parseArgs } from 'node:util'
import { startFleet } from '../firmware-sim/index.js'
import { cpuSeconds, median, percentile, printTable, startFerry, startNatsServer, tempDir, writeResult, runIfMain } from './lib.js'

const { values } = parseArgs({
  options: { runs: { type: 'string', default: '3' }, devices: { type: 'string', default: '50' }, count: { type: 'string', default: '2000' }, fixedSeconds: { type: 'string', default: '10' } },
})
const RUNS = Number(values.runs)
const DEVICES = Number(values.devices)
const COUNT = Number(values.count)
const FIXED_S = Number(values.fixedSeconds)
const PAYLOAD = 200

interface Sample {
  ackedPerS: number
  arrivedPerS: number
  pubackP50: number
  pubackP99: number
  e2eP50: number
  e2eP99: number
  cpuMsPer1k: number
  gatewayCpuMsPer1k: number
  natsCpuMsPer1k: number
}

/** Watches subjects and records device→NATS latency from the payload's `ts`. */
function watchLatency(nc: NatsConnection, subject: string, cbor: boolean): { lat: number[]; count: () => number } {
  const lat: number[] = []
  let n = 0
  nc.subscribe(subject, {
    callback: (_e, m) => {
      n++
      if (n % 5 !== 0) return
      try {
        const v = (cbor && m.headers?.get('Content-Type') === 'application/cbor' ? decode(m.data) : JSON.parse(m.string())) as { ts: number }
        lat.push(Date.now() - v.ts)
      } catch {}
    },
  })
  return { lat, count: () => n }
}

async function streamMessages(nc: NatsConnection, stream: string): Promise<number> {
  try {
    return (await (await jetstreamManager(nc)).streams.info(stream)).state.messages
  } catch {
    return 0
  }
}

async function runTarget(target: 'ferry' | 'nats-mqtt', mode: 'max' | 'fixed'): Promise<Sample> {
  const nats = await startNatsServer({ mqtt: target === 'nats-mqtt' })
  let ferry: Awaited<ReturnType<typeof startFerry>> | undefined
  let mqttPort = nats.mqttPort ?? 0
  if (target === 'ferry') {
    ferry = await startFerry(['--nats-url', nats.url, '--data-dir', tempDir('ferry-bench-data-'), '--fsync', 'always'])
    mqttPort = ferry.mqttPort
  }
  const nc = await connect({ servers: nats.url })
  const watch = watchLatency(nc, target === 'ferry' ? 'ferry.up.>' : 'devices.>', target === 'ferry')
  // NATS's MQTT listener maps devices/x/telemetry to subject devices.x.telemetry; a stream on
  // devices.> stores what devices publish (its own $MQTT_ streams only hold session state).
  const stream = target === 'ferry' ? 'FERRY' : 'DEVICES'
  if (target === 'nats-mqtt') await (await jetstreamManager(nc)).streams.add({ name: 'DEVICES', subjects: ['devices.>'] })
  const fleet = startFleet({
    url: `mqtt://127.0.0.1:${mqttPort}`,
    devices: DEVICES,
    ratePerDevice: mode === 'max' ? 0 : 5000 / DEVICES,
    inflight: 10,
    qos: 1,
    count: mode === 'max' ? COUNT : Math.round((5000 / DEVICES) * FIXED_S),
    payloadBytes: PAYLOAD,
    rampMs: 500,
  })
  // Wait for all devices to connect before the clock starts (connect cost is not throughput).
  while (fleet.stats().connected < DEVICES) await new Promise((r) => setTimeout(r, 20))
  const total = DEVICES * (mode === 'max' ? COUNT : Math.round((5000 / DEVICES) * FIXED_S))
  // Devices publish as soon as they connect: measure from here, over what is acknowledged after it.
  const cpu0 = { g: ferry ? cpuSeconds(ferry.proc.pid) : 0, n: cpuSeconds(nats.proc.pid) }
  const t0 = performance.now()
  const ackedAt0 = fleet.stats().acked
  const storedAt0 = await streamMessages(nc, stream)
  fleet.ackLatencyWindow()
  await fleet.done()
  const tAcked = performance.now()
  const pub = fleet.ackLatencyWindow()
  let arrived = 0
  while (arrived < total && performance.now() - tAcked < 60_000) {
    arrived = await streamMessages(nc, stream)
    if (arrived < total) await new Promise((r) => setTimeout(r, 10))
  }
  const tArrived = performance.now()
  const cpu1 = { g: ferry ? cpuSeconds(ferry.proc.pid) : 0, n: cpuSeconds(nats.proc.pid) }
  await fleet.close()
  await nc.close()
  await ferry?.proc.stop()
  await nats.proc.stop()
  if (arrived < total) throw new Error(`${target}: only ${arrived} of ${total} messages arrived in JetStream\n${ferry?.proc.output().slice(-3000) ?? ""}`)
  const measured = total - storedAt0
  const g = ((cpu1.g - cpu0.g) * 1e6) / measured
  const n = ((cpu1.n - cpu0.n) * 1e6) / measured
  return {
    ackedPerS: (total - ackedAt0) / ((tAcked - t0) / 1000),
    arrivedPerS: measured / ((tArrived - t0) / 1000),
    pubackP50: pub.p50,
    pubackP99: pub.p99,
    e2eP50: percentile(watch.lat, 50),
    e2eP99: percentile(watch.lat, 99),
    gatewayCpuMsPer1k: g,
    natsCpuMsPer1k: n,
    cpuMsPer1k: g + n,
  }
}

/** The upstream ceiling: nats.js publishing the same payloads to a stream, 2,000 in flight, PubAcks on one inbox. */
async function runRawJetStream(): Promise<Sample> {
  const nats = await startNatsServer()
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
  await nats.proc.stop()
  const rate = total / ((t1 - t0) / 1000)
  return { ackedPerS: rate, arrivedPerS: rate, pubackP50: NaN, pubackP99: NaN, e2eP50: NaN, e2eP99: NaN, gatewayCpuMsPer1k: 0, natsCpuMsPer1k: n, cpuMsPer1k: n }
}

function medianSample(xs: Sample[]): Sample {
  const keys = Object.keys(xs[0]!) as (keyof Sample)[]
  return Object.fromEntries(keys.map((k) => [k, median(xs.map((x) => x[k]))])) as unknown as Sample
}

export async function main(): Promise<Record<string, unknown>> {
  const results: Record<string, Sample> = {}
  const runs: Record<string, Sample[]> = {}
  const plan: [string, () => Promise<Sample>][] = [
    ['ferry max', () => runTarget('ferry', 'max')],
    ['nats-mqtt max', () => runTarget('nats-mqtt', 'max')],
    ['raw-jetstream max', () => runRawJetStream()],
    ['ferry 5k/s', () => runTarget('ferry', 'fixed')],
    ['nats-mqtt 5k/s', () => runTarget('nats-mqtt', 'fixed')],
  ]
  // Interleave targets run by run, so drift in machine load hits all of them alike.
  for (let r = 0; r < RUNS; r++) {
    for (const [name, fn] of plan) {
      const s = await fn()
      ;(runs[name] ??= []).push(s)
      process.stderr.write(`run ${r + 1}/${RUNS} ${name}: ${Math.round(s.ackedPerS)} msg/s acked, ${Math.round(s.arrivedPerS)} arrived\n`)
    }
  }
  for (const [name, xs] of Object.entries(runs)) results[name] = medianSample(xs)
  const fm = results['ferry max']!
  const nm = results['nats-mqtt max']!
  process.stdout.write(`\nThroughput and latency: ${DEVICES} devices, QoS 1, ~${PAYLOAD}-byte JSON, Ferry --fsync always; medians of ${RUNS} runs\n\n`)
  printTable([
    ['target', 'acked msg/s', 'in JetStream msg/s', 'PUBACK p50 ms', 'PUBACK p99 ms', 'device→JS p50 ms', 'device→JS p99 ms', 'CPU ms/1k msgs (gw+nats)'],
    ...Object.entries(results).map(([k, s]) => [k, s.ackedPerS, s.arrivedPerS, s.pubackP50, s.pubackP99, s.e2eP50, s.e2eP99, `${s.cpuMsPer1k.toFixed(0)} (${s.gatewayCpuMsPer1k.toFixed(0)}+${s.natsCpuMsPer1k.toFixed(0)})`]),
  ])
  const ratios = {
    throughputVsNatsMqtt: fm.arrivedPerS / nm.arrivedPerS,
    cpuPerMsgVsNatsMqtt: fm.cpuMsPer1k / nm.cpuMsPer1k,
    throughputVsRawJetStream: fm.arrivedPerS / results['raw-jetstream max']!.arrivedPerS,
  }
  process.stdout.write(`\nFerry / NATS MQTT: throughput ${ratios.throughputVsNatsMqtt.toFixed(2)}x, CPU per message ${ratios.cpuPerMsgVsNatsMqtt.toFixed(2)}x; Ferry / raw JetStream publish: ${ratios.throughputVsRawJetStream.toFixed(2)}x\n`)
  const file = writeResult('throughput', { devices: DEVICES, countPerDevice: COUNT, payloadBytes: PAYLOAD, runs: RUNS, medians: results, ratios, all: runs })
  process.stdout.write(`wrote ${file}\n`)
  return { results, ratios }
}

runIfMain(import.meta.url, main)
