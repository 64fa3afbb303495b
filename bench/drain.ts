// Benchmark: backlog drain. Upstream is down while devices fill the edge, then it comes back; compared with NATS MQTT's ingest rate and a Mosquitto bridge.
//
// Run: npx tsx bench/drain.ts [--messages 1000000] [--devices 50] [--runs 3] [--peer-runs 1] [--only ferry,nats-mqtt,mosquitto]
//   (Ferry and NATS's listener run --runs times, the Mosquitto bridges --peer-runs times)
//   (needs nats-server, mosquitto and `npm run build`)
// Scenarios (each on fresh servers, in this order, repeated --runs times):
//   ferry               the bundled gateway; nats-server is stopped while N devices publish `messages`
//                       QoS 1 messages (~200-byte JSON, closed loop), then started again (same store)
//                       while one live device publishes 100 msg/s.
//   nats-mqtt           no outage: the same devices publish the same `messages` straight to
//                       nats-server's MQTT listener; its ingest rate into JetStream is the yardstick
//                       of the target "drain at least 2x the rate NATS's native MQTT ingests".
//   mosquitto-tuned     Mosquitto bridged to nats-server's MQTT listener (see bench/peers.ts), the
//   mosquitto-defaults  same outage and live device as for Ferry: nats-server stopped while the
//                       backlog is buffered in Mosquitto, then started again.
// Reports: fill rate, drain rate (backlog messages/s into JetStream, from upstream's return to the
// last backlog message stored), time to empty, time to the first backlog message and the rate from
// then on, backlog messages acknowledged to devices and never stored (lost) or stored twice (read
// back from the stream), RSS of the edge process while buffering and draining, and the live device's device→JetStream
// latency during and after the drain. Ferry's drain rate ÷ NATS MQTT ingest rate and ÷ each
// Mosquitto drain rate. The JSON holds a 250 ms time series per scenario (first run): messages/s
// acknowledged at the devices, messages/s arriving in JetStream, RSS of the edge process.
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { parseArgs } from 'node:util'
import { startFleet } from '../firmware-sim/index.js'
import type { Fleet } from '../firmware-sim/index.js'
import { auditStream, commandLine, decodePayload, medianOf, percentile, printTable, rssMiB, startSeries, writeResult, runIfMain } from './lib.js'
import { DEVICES_STREAM, MOSQUITTO_VARIANT_CONFIG, addDevicesStream, mosquittoVersion, startFerryEdge, startMosquittoEdge, startRestartableNats } from './peers.js'
import type { Edge, MosquittoVariant } from './peers.js'

const { values } = parseArgs({
  options: { messages: { type: 'string', default: '1000000' }, devices: { type: 'string', default: '50' }, runs: { type: 'string', default: '3' }, 'peer-runs': { type: 'string', default: '1' }, only: { type: 'string' } },
})
const MESSAGES = Number(values.messages)
const DEVICES = Number(values.devices)
const RUNS = Number(values.runs)
/** Mosquitto's runs: the target compares Ferry with NATS's listener only, which run --runs times. */
const PEER_RUNS = Math.min(RUNS, Number(values['peer-runs']))
const ONLY = values.only?.split(',').filter(Boolean)
const PAYLOAD = 200
const LIVE_RATE = 100
const SERIES_MS = 250

type Series = Awaited<ReturnType<ReturnType<typeof startSeries>['stop']>>

interface Latency {
  p50: number
  p99: number
  n: number
}

/** One outage-and-drain run of an edge broker (Ferry or Mosquitto). */
interface DrainResult {
  /** Backlog messages acknowledged to devices while upstream was down. */
  acked: number
  fillPerS: number
  /** Distinct backlog messages in JetStream after the drain. */
  delivered: number
  /** Backlog messages acknowledged to devices and never stored in JetStream. */
  lost: number
  /** Backlog messages stored more than once. */
  duplicates: number
  /** `delivered` ÷ `drainS`. */
  drainPerS: number
  /** Upstream back → last backlog message in JetStream, seconds. */
  drainS: number
  /** `delivered` ÷ (`drainS` − `firstArrivalS`): the rate once messages flow, without the reconnect delay. */
  flowingPerS: number
  /** Upstream back → first backlog message in JetStream, seconds (reconnect delay). */
  firstArrivalS: number
  /** RSS of the edge process while the backlog grew: min, max, and once 10 % of it was buffered. */
  rssBacklogMiB: { min: number; max: number; at10pct: number }
  rssDuringDrainMaxMiB: number
  liveDuringDrain: Latency
  liveAfterDrain: Latency
  /** A device that starts publishing once messages arrive again (it has no backlog). */
  freshDuringDrain: Latency
  liveLost: number
}

/** NATS MQTT taking the same messages with no outage. */
interface IngestResult {
  messages: number
  ackedPerS: number
  /** Messages/s arriving in JetStream, once all devices are connected. */
  arrivedPerS: number
  seconds: number
}

const managers = new WeakMap<NatsConnection, ReturnType<typeof jetstreamManager>>()

/** Messages in `stream`, or undefined while the server does not answer (1 s timeout). */
async function streamCount(nc: NatsConnection | undefined, stream: string): Promise<number | undefined> {
  if (!nc) return undefined
  try {
    let jsm = managers.get(nc)
    if (!jsm) managers.set(nc, (jsm = jetstreamManager(nc, { timeout: 1000 })))
    return (await (await jsm).streams.info(stream)).state.messages
  } catch {
    managers.delete(nc)
    return undefined
  }
}

function latency(xs: number[]): Latency {
  return { p50: percentile(xs, 50), p99: percentile(xs, 99), n: xs.length }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Subjects of the live and fresh devices' messages at an edge. */
const liveSubject = (edge: Edge): string => `${edge.subjectPrefix}devices.live-00001.>`

/** Upstream down, `MESSAGES` buffered at the edge, upstream up with a live device; drain measured and audited. */
async function runOutage(edge: Edge): Promise<{ result: DrainResult; series: Series }> {
  let fill: Fleet | undefined
  let live: Fleet | undefined
  let fresh: Fleet | undefined
  let nc: NatsConnection | undefined
  let stored = 0
  let series: ReturnType<typeof startSeries> | undefined
  try {
    await edge.nats.stop()
    series = startSeries(SERIES_MS, async () => ({
      acked: (fill?.stats().acked ?? 0) + (live?.stats().acked ?? 0),
      stored: (await streamCount(nc, edge.stream)) ?? stored,
      rssMiB: rssMiB(edge.proc.pid),
    }))
    series.mark('upstream down')
    const rssFill: { acked: number; rss: number }[] = []
    const t0 = performance.now()
    const f = startFleet({ url: `mqtt://127.0.0.1:${edge.mqttPort}`, devices: DEVICES, ratePerDevice: 0, inflight: 10, qos: 1, count: Math.ceil(MESSAGES / DEVICES), payloadBytes: PAYLOAD, rampMs: 500 })
    fill = f
    const rssTimer = setInterval(() => rssFill.push({ acked: f.stats().acked, rss: rssMiB(edge.proc.pid) }), SERIES_MS)
    await f.done()
    clearInterval(rssTimer)
    rssFill.push({ acked: f.stats().acked, rss: rssMiB(edge.proc.pid) })
    const fillS = (performance.now() - t0) / 1000
    const acked = f.stats().acked
    series.mark('backlog buffered')
    await f.close()

    // Upstream returns; a live device publishes LIVE_RATE msg/s throughout.
    await edge.nats.start()
    const tUp = performance.now()
    series.mark('upstream up')
    nc = await connect({ servers: edge.nats.url })
    const drainLat: number[] = []
    const afterLat: number[] = []
    let drained = false
    nc.subscribe(liveSubject(edge), {
      callback: (_e, m) => {
        try {
          const v = decodePayload(m.data, m.headers?.get('Content-Type')) as { ts?: unknown }
          if (typeof v.ts === 'number') (drained ? afterLat : drainLat).push(Date.now() - v.ts)
        } catch {}
      },
    })
    const freshLat: number[] = []
    nc.subscribe(liveSubject(edge).replace('live-00001', 'fresh-00001'), {
      callback: (_e, m) => {
        try {
          const v = decodePayload(m.data, m.headers?.get('Content-Type')) as { ts?: unknown }
          if (typeof v.ts === 'number' && !drained) freshLat.push(Date.now() - v.ts)
        } catch {}
      },
    })
    const l = startFleet({ url: `mqtt://127.0.0.1:${edge.mqttPort}`, devices: 1, idPrefix: 'live', ratePerDevice: LIVE_RATE, qos: 1, payloadBytes: PAYLOAD })
    live = l
    // Backlog in JetStream ≈ stream count − live messages acknowledged. Done when it reaches what
    // was acknowledged, or when it stops growing for 5 s (an edge that dropped messages).
    let backlog = 0
    let firstAt = NaN
    let lastGrowthAt = tUp
    for (;;) {
      const c = await streamCount(nc, edge.stream)
      const now = performance.now()
      if (c !== undefined) {
        stored = c
        const b = c - l.stats().acked - (fresh?.stats().acked ?? 0)
        if (b > 0 && Number.isNaN(firstAt)) {
          firstAt = now
          // Messages arrive again: a device that starts now has nothing in the backlog.
          fresh = startFleet({ url: `mqtt://127.0.0.1:${edge.mqttPort}`, devices: 1, idPrefix: 'fresh', ratePerDevice: LIVE_RATE, qos: 1, payloadBytes: PAYLOAD })
        }
        if (b > backlog + 10 || (b > backlog && b >= acked)) {
          backlog = b
          lastGrowthAt = now
        }
        if (backlog >= acked) break
      }
      const quietMs = now - (Number.isNaN(firstAt) ? tUp + 25_000 : lastGrowthAt)
      if (quietMs > 5000 || now - tUp > 600_000) break
      await sleep(50)
    }
    const drainS = (lastGrowthAt - tUp) / 1000
    series.mark('backlog in JetStream')
    drained = true
    await sleep(3000)
    const s = await series.stop()
    await l.close()
    await fresh?.close()
    // Let the live device's last messages land before reading the stream back.
    const want = acked + l.stats().acked + (fresh?.stats().acked ?? 0)
    for (let i = 0; i < 100 && ((await streamCount(nc, edge.stream)) ?? 0) < Math.min(want, stored + l.stats().acked + (fresh?.stats().acked ?? 0)); i++) await sleep(50)
    const audit = await auditStream(edge.nats.url, edge.stream, fresh ? [f.ledger, l.ledger, fresh.ledger] : [f.ledger, l.ledger], decodePayload)
    const backlogAudit = audit.perLedger[0]!
    const liveAudit = audit.perLedger[1]!
    const rssAll = rssFill.map((r) => r.rss)
    const drainRows = s.rows.filter((r) => r[0]! * 1000 >= (s.marks.find((m) => m.label === 'upstream up')?.tS ?? 0) * 1000)
    return {
      result: {
        acked,
        fillPerS: acked / fillS,
        delivered: backlogAudit.unique,
        lost: backlogAudit.lost,
        duplicates: backlogAudit.duplicates,
        drainPerS: backlogAudit.unique / drainS,
        drainS,
        flowingPerS: backlogAudit.unique / (drainS - (firstAt - tUp) / 1000),
        firstArrivalS: (firstAt - tUp) / 1000,
        rssBacklogMiB: { min: Math.min(...rssAll), max: Math.max(...rssAll), at10pct: rssFill.find((r) => r.acked >= acked / 10)?.rss ?? NaN },
        rssDuringDrainMaxMiB: Math.max(...drainRows.map((r) => r[3]!)),
        liveDuringDrain: latency(drainLat),
        liveAfterDrain: latency(afterLat),
        freshDuringDrain: latency(freshLat),
        liveLost: liveAudit.lost,
      },
      series: s,
    }
  } finally {
    await series?.stop()
    await fill?.close()
    await live?.close()
    await fresh?.close()
    await nc?.close()
  }
}

async function runFerry(): Promise<{ result: DrainResult; series: Series }> {
  const edge = await startFerryEdge()
  try {
    return await runOutage(edge)
  } finally {
    await edge.close()
  }
}

async function runMosquitto(variant: MosquittoVariant): Promise<{ result: DrainResult; series: Series }> {
  const edge = await startMosquittoEdge(variant)
  try {
    return await runOutage(edge)
  } finally {
    await edge.close()
  }
}

/** The same messages published straight to nats-server's MQTT listener, no outage. */
async function runNatsMqttIngest(): Promise<{ result: IngestResult; series: Series }> {
  const nats = await startRestartableNats({ mqtt: true })
  let fleet: Fleet | undefined
  let nc: NatsConnection | undefined
  let series: ReturnType<typeof startSeries> | undefined
  try {
    await addDevicesStream(nats.url)
    nc = await connect({ servers: nats.url })
    const c = nc
    const natsPid = nats.proc()!.pid
    series = startSeries(SERIES_MS, async () => ({ acked: fleet?.stats().acked ?? 0, stored: (await streamCount(c, DEVICES_STREAM)) ?? 0, rssMiB: rssMiB(natsPid) }))
    series.mark('devices start')
    const perDevice = Math.ceil(MESSAGES / DEVICES)
    const total = perDevice * DEVICES
    const f = startFleet({ url: `mqtt://127.0.0.1:${nats.mqttPort}`, devices: DEVICES, ratePerDevice: 0, inflight: 10, qos: 1, count: perDevice, payloadBytes: PAYLOAD, rampMs: 500 })
    fleet = f
    while (f.stats().connected < DEVICES) await sleep(20)
    const t0 = performance.now()
    const ackedAt0 = f.stats().acked
    const storedAt0 = (await streamCount(c, DEVICES_STREAM)) ?? 0
    await f.done()
    const tAcked = performance.now()
    let arrived = storedAt0
    while (arrived < total && performance.now() - tAcked < 120_000) {
      arrived = (await streamCount(c, DEVICES_STREAM)) ?? arrived
      if (arrived < total) await sleep(10)
    }
    const t1 = performance.now()
    series.mark('all in JetStream')
    await sleep(1000)
    if (arrived < total) throw new Error(`nats-mqtt: only ${arrived} of ${total} messages arrived in JetStream`)
    return {
      result: { messages: total, ackedPerS: (total - ackedAt0) / ((tAcked - t0) / 1000), arrivedPerS: (arrived - storedAt0) / ((t1 - t0) / 1000), seconds: (t1 - t0) / 1000 },
      series: await series.stop(),
    }
  } finally {
    await series?.stop()
    await fleet?.close()
    await nc?.close()
    await nats.close()
  }
}

export async function main(): Promise<Record<string, unknown>> {
  const plan: [string, () => Promise<{ result: DrainResult | IngestResult; series: Series }>][] = [
    ['ferry', runFerry],
    ['nats-mqtt', runNatsMqttIngest],
    ['mosquitto-tuned', () => runMosquitto('tuned')],
    ['mosquitto-defaults', () => runMosquitto('defaults')],
  ]
  const all: Record<string, (DrainResult | IngestResult)[]> = {}
  const series: Record<string, Series> = {}
  for (let r = 0; r < RUNS; r++) {
    for (const [name, fn] of plan) {
      if (ONLY && !ONLY.some((o) => name.includes(o))) continue
      if (name.startsWith('mosquitto') && r >= PEER_RUNS) continue
      const { result, series: s } = await fn()
      ;(all[name] ??= []).push(result)
      series[name] ??= s
      const line = 'drainPerS' in result ? `${Math.round(result.drainPerS)} msg/s drain, ${result.lost} of ${result.acked} acknowledged lost` : `${Math.round(result.arrivedPerS)} msg/s ingest`
      process.stderr.write(`run ${r + 1}/${RUNS} ${name}: ${line}\n`)
    }
  }
  const medians = Object.fromEntries(Object.entries(all).map(([k, xs]) => [k, medianOf(xs)])) as Record<string, DrainResult | IngestResult>
  const ferry = medians.ferry as DrainResult | undefined
  const ingest = medians['nats-mqtt'] as IngestResult | undefined
  const edges = Object.entries(medians).filter((e): e is [string, DrainResult] => 'drainPerS' in e[1])

  process.stdout.write(`\nBacklog drain: ${MESSAGES.toLocaleString('en-US')} messages buffered with the upstream down, then up; ${DEVICES} devices, QoS 1, ~${PAYLOAD}-byte JSON; medians of ${RUNS} run(s)\n\n`)
  printTable([
    ['edge', 'acked', 'fill msg/s', 'drain msg/s', 'time to empty s', 'first arrival s', 'msg/s once flowing', 'lost', 'dup', 'RSS buffering MiB', 'RSS draining max MiB', 'live p50/p99 during ms', 'live p50/p99 after ms', 'new device p50/p99 during ms'],
    ...edges.map(([k, d]) => [
      k,
      d.acked.toLocaleString('en-US'),
      d.fillPerS,
      d.drainPerS,
      d.drainS,
      d.firstArrivalS,
      d.flowingPerS,
      d.lost.toLocaleString('en-US'),
      d.duplicates.toLocaleString('en-US'),
      `${d.rssBacklogMiB.min.toFixed(0)}–${d.rssBacklogMiB.max.toFixed(0)}`,
      d.rssDuringDrainMaxMiB,
      `${d.liveDuringDrain.p50}/${d.liveDuringDrain.p99}`,
      `${d.liveAfterDrain.p50}/${d.liveAfterDrain.p99}`,
      d.freshDuringDrain ? `${d.freshDuringDrain.p50}/${d.freshDuringDrain.p99}` : '-',
    ]),
  ])
  if (ingest) process.stdout.write(`\nNATS MQTT ingest of the same messages (no outage): ${Math.round(ingest.arrivedPerS).toLocaleString('en-US')} msg/s into JetStream (${Math.round(ingest.ackedPerS).toLocaleString('en-US')} msg/s acked)\n`)
  const ratios: Record<string, number> = {}
  if (ferry && ingest) ratios.drainVsNatsMqttIngest = ferry.drainPerS / ingest.arrivedPerS
  for (const [k, d] of edges) if (ferry && k !== 'ferry') ratios[`drainVs_${k}`] = ferry.drainPerS / d.drainPerS
  for (const [k, v] of Object.entries(ratios)) process.stdout.write(`Ferry drain ÷ ${k.replace(/^drainVs_?/, '')}: ${v.toFixed(2)}×\n`)
  for (const [k, d] of edges) if (d.lost > 0) process.stdout.write(`${k}: ${d.lost.toLocaleString('en-US')} of ${d.acked.toLocaleString('en-US')} acknowledged messages never reached JetStream\n`)
  const file = writeResult('drain', {
    command: commandLine(),
    peers: { mosquitto: mosquittoVersion(), mosquittoVariants: MOSQUITTO_VARIANT_CONFIG },
    messagesRequested: MESSAGES,
    devices: DEVICES,
    payloadBytes: PAYLOAD,
    liveRatePerS: LIVE_RATE,
    runs: RUNS,
    peerRuns: PEER_RUNS,
    medians,
    ratios,
    series,
    all,
  })
  process.stdout.write(`wrote ${file}\n`)
  return { medians, ratios }
}

runIfMain(import.meta.url, main)
