// Benchmark: a fleet — 3 gateways × 1,000 devices into a 3-node JetStream cluster (R3), one node killed mid-run, against the same load through one gateway into one node (R1) and through NATS's MQTT listener on the cluster.
//
// Run: npx tsx bench/fleet.ts [--runs 3] [--devices 1000] [--inflight 1] [--warmup-seconds 2] [--window-seconds 6]
//        [--after-seconds 2] [--kill leader|n1|n2|n3|none] [--max-seconds 240] [--only one-gateway,fleet,nats-mqtt]
//      or, inside `npm run bench`: npm run bench -- --only fleet   (needs nats-server and `npm run build`)
// Load (the same for every target): 3 × `devices` simulated devices (firmware-sim, one MQTT 3.1.1 client each; ids
//   site1-00001 … site3-01000, one group of `devices` per site), QoS 1, ~200-byte telemetry JSON, closed loop with
//   `inflight` unacknowledged messages per device. Clocks start once every device is connected: `warmup-seconds` of
//   load, then the measured window of `window-seconds`; the figures are those of the window.
// Targets, interleaved run by run (fresh servers and gateways for each):
//   one-gateway  one gateway (dist/ferry.cjs, --fsync always) holding all 3 sites → one nats-server, streams R1
//   fleet        3 gateways (one per site; distinct --gateway-id, one --subject-prefix, --stream-replicas 3, each
//                given all three --nats-url values) → a 3-node cluster (test/helpers/cluster.ts), streams R3; after
//                the window, one node gets kill -9 (default the FERRY stream's leader) and the load goes on until
//                the cluster has recovered, then `after-seconds` more
//   nats-mqtt    the devices straight to NATS's MQTT listener on the same kind of cluster (an `mqtt` block per node;
//                site i → node i), a stream DEVICES on devices.> with 3 replicas
// The bench creates the stream before the gateways start, as Ferry would (FERRY on ferry.up.> and ferry.events.>, the
// default 2-minute duplicate window) with the replicas of the target, so the figures do not depend on how a build
// applies --stream-replicas; the gateways find it and leave it as it is. Presence events are written only while
// devices connect and disconnect, outside the measured window; the final count and the audit take ferry.up.> only.
// Figures per target (the window): acknowledged msg/s (PUBACKs to devices), msg/s into JetStream (stream growth),
// CPU per message stored from /proc/<pid>/stat (all gateways; all nats-servers; and the load generator's share of
// a core), device→JetStream latency p50/p99 (payload timestamp to a NATS subscriber on every 50th device), largest
// RSS of any one gateway and of any one nats-server (500 ms samples); after the run, every acknowledged message
// looked up in the stream (lost, duplicates). For the node kill: which node, kill → the stream grows again,
// kill → the gateways' backlog (ferry_log_backlog_records, summed) is back to its level before the kill, the
// largest backlog, and msg/s acknowledged to devices while the stream was stalled.
// Ratios: fleet ÷ one-gateway and fleet ÷ nats-mqtt, in the same invocation. Medians of `--runs` (default 3), fewer
// when the next run would end after `--max-seconds` (default 240, from the average run so far): ~80 s a run here.
// Only processes started here are signalled; everything listens on 127.0.0.1; every wait has a deadline.
import { jetstreamManager } from '@nats-io/jetstream'
import type { JetStreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { decode } from 'cbor-x'
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { startFleet } from '../firmware-sim/index.js'
import type { Fleet } from '../firmware-sim/index.js'
import { startCluster } from '../test/helpers/cluster.js'
import type { NatsCluster } from '../test/helpers/cluster.js'
import { auditStream, commandLine, cpuSeconds, ferryCommand, freePort, median, percentile, printTable, rssMiB, runIfMain, startFerry, startNatsServer, tempDir, writeResult } from './lib.js'
import type { Proc } from './lib.js'

const { values } = parseArgs({
  options: {
    runs: { type: 'string', default: '3' },
    devices: { type: 'string', default: '1000' },
    inflight: { type: 'string', default: '1' },
    'warmup-seconds': { type: 'string', default: '2' },
    'window-seconds': { type: 'string', default: '6' },
    'after-seconds': { type: 'string', default: '2' },
    kill: { type: 'string', default: 'leader' },
    'max-seconds': { type: 'string', default: '240' },
    only: { type: 'string' },
  },
})
const RUNS = Number(values.runs)
/** Devices per site; there are SITES sites. */
const DEVICES = Number(values.devices)
const SITES = 3
const INFLIGHT = Number(values.inflight)
const WARMUP_S = Number(values['warmup-seconds'])
const WINDOW_S = Number(values['window-seconds'])
const AFTER_S = Number(values['after-seconds'])
const KILL = values.kill
/** No further run starts when the runs so far, on average, say it would end after this many seconds. */
const MAX_S = Number(values['max-seconds'])
const ONLY = values.only?.split(',').filter(Boolean)
const PAYLOAD = 200
const PREFIX = 'ferry'
/** Longest wait for the cluster to recover after the kill; the run goes on (recovery reported as not seen). */
const RECOVER_MAX_MS = 60_000
/** Every this many'th device's messages are timed device → NATS (a subscription per device: cheap, still a sample). */
const LATENCY_EVERY = 50

type Target = 'one-gateway' | 'fleet' | 'nats-mqtt'
const TARGETS: readonly Target[] = ['one-gateway', 'fleet', 'nats-mqtt']
const LABELS: Record<Target, string> = {
  'one-gateway': '1 gateway → 1 nats-server (R1)',
  fleet: '3 gateways → 3-node cluster (R3)',
  'nats-mqtt': "NATS's MQTT listener, 3-node cluster (R3)",
}

if (!Number.isInteger(DEVICES) || DEVICES < 1 || !(RUNS >= 1) || !(INFLIGHT >= 1) || !(WINDOW_S > 0) || !(WARMUP_S >= 0) || !(AFTER_S >= 0)) throw new Error('bench/fleet.ts: --devices, --runs, --inflight, --window-seconds must be positive numbers')
if (!['leader', 'none', 'n1', 'n2', 'n3'].includes(KILL)) throw new Error(`bench/fleet.ts: --kill must be leader, none, n1, n2 or n3, got "${KILL}"`)

/** What one run of one target measured. */
interface Sample {
  /** Messages acknowledged to devices per second in the window. */
  ackedPerS: number
  /** Messages the stream grew by per second in the window. */
  storedPerS: number
  /** CPU µs per message stored in the window: all gateways (0 for nats-mqtt), all nats-servers, both. */
  gatewaysCpuUsPerMsg: number
  natsCpuUsPerMsg: number
  cpuUsPerMsg: number
  /** The benchmark process (load generator, 3,000 MQTT clients) in % of one core over the window. */
  loadGenCpuPct: number
  e2eP50: number
  e2eP99: number
  /** Largest RSS of any one gateway / any one nats-server in the window, MiB. */
  gatewayRssMaxMiB: number
  natsRssMaxMiB: number
  /** Window length, s. */
  seconds: number
  /** Acknowledged (device, seq) over the whole run, per device on average, and what the audit found. */
  acked: number
  ackedPerDevice: number
  lost: number
  duplicates: number
  /** Device reconnects over the run (a connection the server closed; mqtt.js then resends what was unacknowledged). */
  reconnects: number
  /** Node kill (fleet only; NaN otherwise). */
  killToGrowthMs: number
  killToBacklogRecoveredMs: number
  backlogBeforeKill: number
  backlogPeak: number
  ackedPerSWhileStalled: number
}

interface RunOutcome {
  sample: Sample
  /** Facts that are not medians: which node was killed, stream replicas, gateway exits. */
  notes: Record<string, unknown>
}

/** The upstream of a run: one nats-server, or the 3-node cluster. */
interface Upstream {
  readonly urls: string[]
  /** MQTT listener ports (nats-mqtt only). */
  readonly mqttPorts: number[]
  /** PIDs of the running nats-servers by name. */
  pids(): Map<string, number>
  /** URL of a node that is running. */
  liveUrl(): string
  cluster?: NatsCluster
  close(): Promise<void>
}

async function startUpstream(target: Target): Promise<Upstream> {
  if (target === 'one-gateway') {
    const n = await startNatsServer()
    return {
      urls: [n.url],
      mqttPorts: [],
      pids: () => new Map([['bench', n.proc.pid]]),
      liveUrl: () => n.url,
      async close() {
        await n.proc.stop()
        fs.rmSync(n.dir, { recursive: true, force: true })
      },
    }
  }
  // NATS's MQTT listener sizes its own session streams ($MQTT_sess, $MQTT_msgs, $MQTT_rmsgs) from the cluster it
  // sees when the first client connects (2.9.10 made them R2 here): stream_replicas makes them R3 like the rest.
  // The cluster helper picks its own free ports, which can collide with ours for MQTT: a few tries.
  let mqttPorts: number[] = []
  let cluster: NatsCluster | undefined
  for (let attempt = 1; !cluster; attempt++) {
    mqttPorts = target === 'nats-mqtt' ? await Promise.all(Array.from({ length: SITES }, () => freePort())) : []
    const ports = mqttPorts
    try {
      cluster = await startCluster({ size: SITES, ...(ports.length ? { extraConfig: (i: number) => `mqtt { listen: 127.0.0.1:${ports[i]}, stream_replicas: ${SITES} }` } : {}) })
    } catch (err) {
      if (attempt >= 3 || !/address already in use/.test(String(err))) throw err
    }
  }
  return {
    urls: [...cluster.urls],
    mqttPorts,
    cluster,
    pids: () => new Map(cluster.nodes.flatMap((n) => (n.pid ? [[n.name, n.pid] as [string, number]] : []))),
    liveUrl: () => (cluster.nodes.find((n) => n.running) ?? cluster.nodes[0]!).url,
    close: () => cluster[Symbol.asyncDispose](),
  }
}

/** Messages on `<prefix>.up.>` in Ferry's stream (without the presence events); undefined when JetStream does not answer. */
async function upCount(jsm: JetStreamManager): Promise<number | undefined> {
  try {
    const subjects = (await jsm.streams.info('FERRY', { subjects_filter: `${PREFIX}.up.>` })).state.subjects ?? {}
    let n = 0
    for (const k in subjects) n += subjects[k]!
    return n
  } catch {
    return undefined
  }
}

/** Messages in a stream, asked through `jsm`; undefined when JetStream does not answer (e.g. during an election). */
async function streamCount(jsm: JetStreamManager, stream: string): Promise<number | undefined> {
  try {
    return (await jsm.streams.info(stream)).state.messages
  } catch {
    return undefined
  }
}

/** The gateway's HTTP port from its JSON log line about the metrics listener (`--http-listen 127.0.0.1:0`). */
async function httpPortOf(proc: Proc): Promise<number | undefined> {
  for (let i = 0; i < 200; i++) {
    const m = /"msg":"HTTP listening","address":"[^"]*:(\d+)"/.exec(proc.output())
    if (m) return Number(m[1])
    await new Promise((r) => setTimeout(r, 50))
  }
  return undefined
}

/** ferry_log_backlog_records of one gateway (NaN when the scrape fails). */
async function backlogOf(port: number | undefined): Promise<number> {
  if (!port) return NaN
  try {
    const t = await (await fetch(`http://127.0.0.1:${port}/metrics`, { signal: AbortSignal.timeout(1000) })).text()
    const m = /^ferry_log_backlog_records (\S+)$/m.exec(t)
    return m ? Number(m[1]) : NaN
  } catch {
    return NaN
  }
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

function sumCpu(pids: Iterable<number>): number {
  let s = 0
  for (const pid of pids) {
    try {
      s += cpuSeconds(pid)
    } catch {}
  }
  return s
}

async function runTarget(target: Target): Promise<RunOutcome> {
  const isFerry = target !== 'nats-mqtt'
  const replicas = target === 'one-gateway' ? 1 : 3
  const stream = isFerry ? 'FERRY' : 'DEVICES'
  const up = await startUpstream(target)
  const gateways: { proc: Proc; mqttPort: number; httpPort?: number; dataDir: string }[] = []
  const fleets: Fleet[] = []
  let nc: NatsConnection | undefined
  const notes: Record<string, unknown> = {}
  try {
    nc = await connect({ servers: up.urls, maxReconnectAttempts: -1, reconnectTimeWait: 250 })
    const jsm = await jetstreamManager(nc, { timeout: 3000 })
    if (isFerry) {
      await jsm.streams.add({ name: 'FERRY', subjects: [`${PREFIX}.up.>`, `${PREFIX}.events.>`], num_replicas: replicas })
    } else {
      await jsm.streams.add({ name: 'DEVICES', subjects: ['devices.>'], num_replicas: replicas })
    }
    if (up.cluster) for (const s of [stream]) await up.cluster.waitStreamHealthy(s, 60_000)

    // Gateways: one for all sites (one-gateway), one per site (fleet), none (nats-mqtt).
    const common = ['--nats-url', up.urls.join(','), '--subject-prefix', PREFIX, '--stream-replicas', String(replicas), '--fsync', 'always', '--max-connections', '20000', '--max-connection-rate', '100000', '--max-connection-rate-per-address', '100000']
    const nGateways = target === 'fleet' ? SITES : target === 'one-gateway' ? 1 : 0
    await Promise.all(
      Array.from({ length: nGateways }, async (_, i) => {
        const dataDir = tempDir('ferry-bench-fleet-')
        const g = await startFerry([...common, '--data-dir', dataDir, '--gateway-id', `site${i + 1}`])
        gateways[i] = { proc: g.proc, mqttPort: g.mqttPort, httpPort: await httpPortOf(g.proc), dataDir }
      }),
    )
    const gatewayPids = gateways.map((g) => g.proc.pid)

    // Latency: a subscription per sampled device.
    const lat: number[] = []
    let timing = false
    for (let s = 1; s <= SITES; s++)
      for (let d = 1; d <= DEVICES; d += LATENCY_EVERY) {
        const id = `site${s}-${String(d).padStart(5, '0')}`
        nc.subscribe(isFerry ? `${PREFIX}.up.devices.${id}.>` : `devices.${id}.>`, {
          callback: (_e, m) => {
            if (!timing) return
            try {
              const ct = m.headers?.get('Content-Type')
              const v = (isFerry && (ct === undefined || ct === '' || ct === 'application/cbor') ? decode(m.data) : JSON.parse(m.string())) as { ts?: unknown }
              if (typeof v.ts === 'number') lat.push(Date.now() - v.ts)
            } catch {}
          },
        })
      }
    await nc.flush()

    // The devices: site i → gateway i (fleet), the one gateway, or node i's MQTT listener.
    for (let s = 0; s < SITES; s++) {
      const port = target === 'fleet' ? gateways[s]!.mqttPort : target === 'one-gateway' ? gateways[0]!.mqttPort : up.mqttPorts[s]!
      fleets.push(startFleet({ url: `mqtt://127.0.0.1:${port}`, devices: DEVICES, idPrefix: `site${s + 1}`, ratePerDevice: 0, inflight: INFLIGHT, qos: 1, payloadBytes: PAYLOAD, rampMs: Math.min(DEVICES * 2, 3000), connectTimeoutMs: 30_000 }))
    }
    const acked = (): number => fleets.reduce((a, f) => a + f.stats().acked, 0)
    const tConnect = performance.now()
    while (fleets.reduce((a, f) => a + f.stats().connected, 0) < SITES * DEVICES) {
      if (performance.now() - tConnect > 120_000) throw new Error(`${target}: only ${fleets.reduce((a, f) => a + f.stats().connected, 0)} of ${SITES * DEVICES} devices connected within 120 s`)
      await sleep(50)
    }
    notes.connectSeconds = (performance.now() - tConnect) / 1000
    await sleep(WARMUP_S * 1000)

    // The measured window.
    const rssMax = new Map<number, number>()
    const sampleRss = (): void => {
      for (const pid of [...gatewayPids, ...up.pids().values()]) {
        const v = rssMiB(pid)
        if (Number.isFinite(v)) rssMax.set(pid, Math.max(rssMax.get(pid) ?? 0, v))
      }
    }
    const backlogs: number[] = []
    const scrapeBacklog = async (): Promise<number> => (await Promise.all(gateways.map((g) => backlogOf(g.httpPort)))).reduce((a, b) => a + b, 0)
    let sampling = true
    const sampler = (async () => {
      while (sampling) {
        sampleRss()
        if (gateways.length) {
          const b = await scrapeBacklog()
          if (Number.isFinite(b)) backlogs.push(b)
        }
        await sleep(500)
      }
    })()
    const natsPids = [...up.pids().values()]
    const cpu0 = { g: sumCpu(gatewayPids), n: sumCpu(natsPids), load: process.cpuUsage() }
    const stored0 = (await streamCount(jsm, stream)) ?? NaN
    const acked0 = acked()
    const t0 = performance.now()
    lat.length = 0
    timing = true
    await sleep(WINDOW_S * 1000)
    timing = false
    const cpu1 = { g: sumCpu(gatewayPids), n: sumCpu(natsPids), load: process.cpuUsage(cpu0.load) }
    const acked1 = acked()
    const stored1 = (await streamCount(jsm, stream)) ?? NaN
    const t1 = performance.now()
    sampling = false
    await sampler
    sampleRss()
    const seconds = (t1 - t0) / 1000
    const storedInWindow = stored1 - stored0
    if (!(storedInWindow > 0)) throw new Error(`${target}: nothing arrived in JetStream in ${seconds.toFixed(1)} s (${acked1 - acked0} acknowledged to devices)\n${gateways.map((g) => g.proc.output().slice(-2000)).join('\n')}`)
    const sample: Sample = {
      ackedPerS: (acked1 - acked0) / seconds,
      storedPerS: storedInWindow / seconds,
      gatewaysCpuUsPerMsg: ((cpu1.g - cpu0.g) * 1e6) / storedInWindow,
      natsCpuUsPerMsg: ((cpu1.n - cpu0.n) * 1e6) / storedInWindow,
      cpuUsPerMsg: ((cpu1.g - cpu0.g + cpu1.n - cpu0.n) * 1e6) / storedInWindow,
      loadGenCpuPct: ((cpu1.load.user + cpu1.load.system) / 1e6 / seconds) * 100,
      e2eP50: percentile(lat, 50),
      e2eP99: percentile(lat, 99),
      gatewayRssMaxMiB: gatewayPids.length ? Math.max(...gatewayPids.map((p) => rssMax.get(p) ?? NaN)) : NaN,
      natsRssMaxMiB: Math.max(...natsPids.map((p) => rssMax.get(p) ?? NaN)),
      seconds,
      acked: 0,
      ackedPerDevice: 0,
      lost: 0,
      duplicates: 0,
      reconnects: 0,
      killToGrowthMs: NaN,
      killToBacklogRecoveredMs: NaN,
      backlogBeforeKill: NaN,
      backlogPeak: NaN,
      ackedPerSWhileStalled: NaN,
    }
    notes.latencySamples = lat.length

    // The node kill (fleet): kill -9, then poll the stream and the gateways' backlog every 100 ms.
    if (target === 'fleet' && KILL !== 'none' && up.cluster) {
      const leader = await up.cluster.streamLeader('FERRY')
      const victim = KILL === 'leader' ? leader : KILL
      if (!victim) throw new Error('fleet: the FERRY stream has no leader to kill')
      // Short request timeouts while the stream has no leader, so the poll keeps its 100 ms grain.
      const jsmPoll = await jetstreamManager(nc, { timeout: 500, checkAPI: false })
      const before = backlogs.length ? Math.max(...backlogs) : 0
      const storedAtKill = (await streamCount(jsm, stream)) ?? stored1
      const ackedAtKill = acked()
      const tKill = performance.now()
      await up.cluster.node(victim).kill('SIGKILL')
      let growthAt: number | undefined
      let ackedAtGrowth = NaN
      let recoveredAt: number | undefined
      let peak = before
      while (performance.now() - tKill < RECOVER_MAX_MS) {
        const [n, b] = await Promise.all([streamCount(jsmPoll, stream), scrapeBacklog()])
        const now = performance.now()
        if (Number.isFinite(b)) peak = Math.max(peak, b)
        if (growthAt === undefined && n !== undefined && n > storedAtKill) {
          growthAt = now
          ackedAtGrowth = acked()
        }
        if (growthAt !== undefined && Number.isFinite(b) && b <= before) {
          recoveredAt = now
          break
        }
        await sleep(100)
      }
      Object.assign(sample, {
        killToGrowthMs: growthAt === undefined ? NaN : growthAt - tKill,
        killToBacklogRecoveredMs: recoveredAt === undefined ? NaN : recoveredAt - tKill,
        backlogBeforeKill: before,
        backlogPeak: peak,
        ackedPerSWhileStalled: growthAt === undefined ? NaN : (ackedAtGrowth - ackedAtKill) / ((growthAt - tKill) / 1000),
      })
      notes.killed = { node: victim, wasStreamLeader: victim === leader, newLeader: await up.cluster.streamLeader('FERRY') }
      process.stderr.write(`fleet: killed ${victim}${victim === leader ? ' (FERRY leader)' : ''}; stream growing again after ${sample.killToGrowthMs.toFixed(0)} ms, backlog back to ${before} after ${sample.killToBacklogRecoveredMs.toFixed(0)} ms (peak ${peak})\n`)
      await sleep(AFTER_S * 1000)
    }

    // Stop producing, wait until every publish is acknowledged and in the stream, then audit.
    const drained = (await Promise.all(fleets.map((f) => f.drain(60_000)))).every(Boolean)
    const ackedTotal = fleets.reduce((a, f) => a + f.ledger.size, 0)
    let last = -1
    let lastChange = performance.now()
    const tArrive = performance.now()
    for (;;) {
      const n = (await (isFerry ? upCount(jsm) : streamCount(jsm, stream))) ?? last
      if (n !== last) {
        last = n
        lastChange = performance.now()
      }
      if (n >= ackedTotal) break
      // NATS's listener acknowledges before storing: what it has not stored after 5 s of no growth is lost.
      if (!isFerry && performance.now() - lastChange > 5000) break
      if (performance.now() - tArrive > 120_000) break
      await sleep(isFerry ? 500 : 100)
    }
    notes.arrivalWaitSeconds = (performance.now() - tArrive) / 1000
    // The killed node comes back before the audit (reading the stream back on a cluster missing a node is slow
    // to set up on a loaded machine); the time until its replica is current again is recorded.
    const down = up.cluster?.nodes.find((n) => !n.running)
    if (down && up.cluster) {
      const tBack = performance.now()
      await down.start()
      await up.cluster.waitStreamHealthy(stream, 120_000).catch(() => {})
      notes.restartedNodeCurrentSeconds = (performance.now() - tBack) / 1000
    }
    const decodePayload = (d: Uint8Array, ct: string | undefined): unknown => (isFerry && (ct === undefined || ct === '' || ct === 'application/cbor') ? decode(d) : JSON.parse(new TextDecoder().decode(d)))
    let audit: Awaited<ReturnType<typeof auditStream>> | undefined
    for (let attempt = 1; !audit; attempt++) {
      try {
        audit = await auditStream(up.liveUrl(), stream, fleets.map((f) => f.ledger), decodePayload)
      } catch (err) {
        if (attempt >= 3) throw err
        process.stderr.write(`${target}: reading the stream back failed (${String(err)}); again\n`)
        await sleep(2000)
      }
    }
    Object.assign(sample, { acked: audit.acked, ackedPerDevice: audit.acked / (SITES * DEVICES), lost: audit.lost, duplicates: audit.duplicates })
    notes.fleetDrained = drained
    sample.reconnects = fleets.reduce((a, f) => a + f.stats().reconnects, 0)
    notes.publishErrors = fleets.reduce((a, f) => a + f.stats().publishErrors, 0)
    // Replicas as JetStream reports them (for NATS's listener also its own $MQTT_* streams).
    const streams: Record<string, number> = {}
    for await (const si of jsm.streams.list()) streams[si.config.name] = si.config.num_replicas
    notes.streamReplicas = streams
    return { sample, notes }
  } finally {
    await Promise.all(fleets.map((f) => f.close()))
    await nc?.close().catch(() => {})
    await Promise.all(gateways.map((g) => g?.proc.stop()))
    notes.gatewayExitCodes = gateways.map((g) => g?.proc.child.exitCode ?? g?.proc.child.signalCode)
    for (const g of gateways) if (g) fs.rmSync(g.dataDir, { recursive: true, force: true })
    await up.close()
  }
}

function medianSample(xs: Sample[]): Sample {
  const keys = Object.keys(xs[0]!) as (keyof Sample)[]
  return Object.fromEntries(keys.map((k) => [k, median(xs.map((x) => x[k]))])) as unknown as Sample
}

/** Figures compared between targets, with whether higher is better. */
const COMPARED: [keyof Sample, string][] = [
  ['ackedPerS', 'acked msg/s'],
  ['storedPerS', 'into JetStream msg/s'],
  ['gatewaysCpuUsPerMsg', 'gateways CPU/msg'],
  ['natsCpuUsPerMsg', 'nats-servers CPU/msg'],
  ['cpuUsPerMsg', 'total CPU/msg'],
  ['e2eP50', 'device→JS p50'],
  ['e2eP99', 'device→JS p99'],
]

export async function main(): Promise<Record<string, unknown>> {
  const t0 = performance.now()
  const [node, ...rest] = ferryCommand()
  const targets = TARGETS.filter((t) => !ONLY || ONLY.some((o) => t.includes(o)))
  const runs: Partial<Record<Target, RunOutcome[]>> = {}
  let completed = 0
  for (let r = 0; r < RUNS; r++) {
    const elapsed = (performance.now() - t0) / 1000
    if (r > 0 && elapsed + elapsed / r > MAX_S) {
      process.stderr.write(`fleet: stopping after ${r} run(s): another would end after --max-seconds ${MAX_S} (${elapsed.toFixed(0)} s so far)\n`)
      break
    }
    for (const t of targets) {
      const tt = performance.now()
      const out = await runTarget(t)
      ;(runs[t] ??= []).push(out)
      const s = out.sample
      process.stderr.write(
        `run ${r + 1}/${RUNS} ${t}: ${Math.round(s.ackedPerS)} msg/s acked, ${Math.round(s.storedPerS)} into JetStream, CPU µs/msg gateways ${s.gatewaysCpuUsPerMsg.toFixed(1)} nats ${s.natsCpuUsPerMsg.toFixed(1)}, load generator ${s.loadGenCpuPct.toFixed(0)} %, e2e p99 ${s.e2eP99} ms, ${s.acked} acked, ${s.lost} lost, ${s.duplicates} duplicates (${((performance.now() - tt) / 1000).toFixed(0)} s)\n`,
      )
    }
    completed++
  }
  const medians: Partial<Record<Target, Sample>> = {}
  for (const t of targets) if (runs[t]) medians[t] = medianSample(runs[t].map((x) => x.sample))
  const ratios: Record<string, Record<string, number>> = {}
  const f = medians.fleet
  for (const base of ['one-gateway', 'nats-mqtt'] as const) {
    const b = medians[base]
    if (f && b) ratios[`fleet/${base}`] = Object.fromEntries(COMPARED.map(([k]) => [k, f[k] / b[k]]))
  }
  process.stdout.write(
    `\nFleet: ${SITES} sites × ${DEVICES.toLocaleString('en-US')} devices, QoS 1, ~${PAYLOAD}-byte JSON, closed loop with ${INFLIGHT} in flight per device; ${WARMUP_S} s warm-up after all connected, then ${WINDOW_S} s measured; medians of ${completed} run(s)\n\n`,
  )
  printTable([
    ['target', 'acked msg/s', 'into JetStream msg/s', 'gateways CPU µs/msg', 'nats-servers CPU µs/msg', 'load gen % core', 'device→JS p50 ms', 'p99 ms', 'gateway RSS max MiB', 'nats-server RSS max MiB', 'acked per device', 'reconnects', 'lost', 'dup'],
    ...targets.flatMap((t) => {
      const s = medians[t]
      return s ? [[LABELS[t], s.ackedPerS, s.storedPerS, s.gatewaysCpuUsPerMsg, s.natsCpuUsPerMsg, s.loadGenCpuPct, s.e2eP50, s.e2eP99, s.gatewayRssMaxMiB, s.natsRssMaxMiB, s.ackedPerDevice, String(s.reconnects), String(s.lost), String(s.duplicates)]] : []
    }),
  ])
  if (Object.keys(ratios).length) {
    process.stdout.write('\n')
    printTable([['ratio', ...COMPARED.map(([, l]) => l)], ...Object.entries(ratios).map(([k, r]) => [k, ...COMPARED.map(([key]) => (Number.isFinite(r[key]) ? `${r[key]!.toFixed(2)}×` : '-'))])])
  }
  if (f && KILL !== 'none') {
    process.stdout.write('\n')
    printTable([
      ['node kill (fleet)', 'kill → stream grows ms', 'kill → backlog back ms', 'backlog before', 'backlog peak', 'acked msg/s while stalled', 'lost', 'dup'],
      [String(KILL), f.killToGrowthMs, f.killToBacklogRecoveredMs, f.backlogBeforeKill, f.backlogPeak, f.ackedPerSWhileStalled, String(f.lost), String(f.duplicates)],
    ])
  }
  const seconds = (performance.now() - t0) / 1000
  process.stdout.write(`\nfleet bench took ${seconds.toFixed(0)} s\n`)
  const file = writeResult('fleet', {
    command: commandLine(),
    gateway: { node: node!, nodeArgs: rest.slice(0, -1), bundle: rest[rest.length - 1] },
    load: { sites: SITES, devicesPerSite: DEVICES, devices: SITES * DEVICES, inflightPerDevice: INFLIGHT, qos: 1, payloadBytes: PAYLOAD, warmupSeconds: WARMUP_S, windowSeconds: WINDOW_S, afterKillSeconds: AFTER_S },
    kill: KILL,
    runs: completed,
    runsRequested: RUNS,
    maxSeconds: MAX_S,
    targets: Object.fromEntries(targets.map((t) => [t, LABELS[t]])),
    medians,
    ratios,
    all: Object.fromEntries(Object.entries(runs).map(([k, xs]) => [k, xs.map((x) => ({ ...x.sample, notes: x.notes }))])),
    seconds,
  })
  process.stdout.write(`wrote ${file}\n`)
  return { medians, ratios }
}

runIfMain(import.meta.url, main)
