// Benchmark: cloud → device through the gateway. Durable command delivery throughput (devices
// online while commands arrive, and a backlog queued while they were offline), and RPC round-trip
// latency.
//
// Run: npx tsx bench/downlink.ts [--devices 100] [--commands 10000] [--requests 1000] [--runs 3]
//   (needs nats-server and `npm run build`)
// Scenarios, each on a fresh nats-server and gateway:
//   online   `devices` MQTT devices (mqtt.js, QoS 1 subscription to commands/<id>/#) are connected;
//            `commands` commands, round robin over the devices, are published to JetStream (pipelined,
//            500 unacknowledged at most); measured: first publish → last command received, commands/s.
//   backlog  the same commands are published while the devices are offline (their consumers exist);
//            then they connect: connect → last command received, commands/s.
//   rpc      one device answers getConfig (JSON); `requests` sequential NATS requests: round-trip
//            p50/p99/max; then 10 concurrent callers: requests/s.
// Every command must arrive exactly once per device in order (checked), or the run fails.
import { connect } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import { parseArgs } from 'node:util'
import fs from 'node:fs'
import { median, percentile, printTable, runIfMain, startFerry, startNatsServer, tempDir, until, writeResult, commandLine } from './lib.js'

const { values } = parseArgs({ options: { devices: { type: 'string', default: '100' }, commands: { type: 'string', default: '10000' }, requests: { type: 'string', default: '1000' }, runs: { type: 'string', default: '3' } } })
const DEVICES = Number(values.devices)
const COMMANDS = Number(values.commands)
const REQUESTS = Number(values.requests)
const RUNS = Number(values.runs)

interface Fleet {
  received: number
  ordered: boolean
  clients: MqttClient[]
}

async function connectFleet(port: number): Promise<Fleet> {
  const fleet: Fleet = { received: 0, ordered: true, clients: [] }
  const last = new Map<string, number>()
  await Promise.all(
    Array.from({ length: DEVICES }, async (_, i) => {
      const id = `dl-${String(i).padStart(4, '0')}`
      const c = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: id, reconnectPeriod: 0, clean: true })
      c.on('message', (_t, payload) => {
        const n = (JSON.parse(payload.toString()) as { n: number }).n
        if ((last.get(id) ?? -1) >= n) fleet.ordered = false
        last.set(id, n)
        fleet.received++
      })
      await c.subscribeAsync(`commands/${id}/#`, { qos: 1 })
      fleet.clients.push(c)
    }),
  )
  return fleet
}

async function publishCommands(url: string): Promise<void> {
  const nc = await connect({ servers: url })
  const js = jetstream(nc)
  const pending: Promise<unknown>[] = []
  for (let n = 0; n < COMMANDS; n++) {
    pending.push(js.publish(`ferry.cmd.dl-${String(n % DEVICES).padStart(4, '0')}.set`, JSON.stringify({ n, rate: 5 })))
    if (pending.length >= 500) await Promise.all(pending.splice(0))
  }
  await Promise.all(pending)
  await nc.close()
}

async function withGateway<T>(fn: (port: number, natsUrl: string) => Promise<T>): Promise<T> {
  const nats = await startNatsServer()
  const dir = tempDir('ferry-bench-downlink-')
  const ferry = await startFerry(['--nats-url', nats.url, '--data-dir', dir, '--presence', 'off'])
  try {
    const nc = await connect({ servers: nats.url })
    await until(async () => (await jetstreamManager(nc)).streams.info('FERRY_CMD').then(() => true, () => false), 10_000)
    await nc.close()
    return await fn(ferry.mqttPort, nats.url)
  } finally {
    await ferry.proc.stop()
    await nats.proc.stop()
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

async function online(): Promise<number> {
  return withGateway(async (port, url) => {
    const fleet = await connectFleet(port)
    const t0 = performance.now()
    await publishCommands(url)
    if (!(await until(() => fleet.received >= COMMANDS, 120_000))) throw new Error(`online: ${fleet.received} of ${COMMANDS} commands arrived`)
    const s = (performance.now() - t0) / 1000
    if (!fleet.ordered || fleet.received !== COMMANDS) throw new Error('online: commands out of order or duplicated')
    await Promise.all(fleet.clients.map((c) => c.endAsync()))
    return COMMANDS / s
  })
}

async function backlog(): Promise<number> {
  return withGateway(async (port, url) => {
    // Devices subscribe once (their consumers are created), then go offline.
    const first = await connectFleet(port)
    await Promise.all(first.clients.map((c) => c.endAsync()))
    await publishCommands(url)
    const t0 = performance.now()
    const fleet = await connectFleet(port)
    if (!(await until(() => fleet.received >= COMMANDS, 120_000))) throw new Error(`backlog: ${fleet.received} of ${COMMANDS} commands arrived`)
    const s = (performance.now() - t0) / 1000
    if (!fleet.ordered || fleet.received !== COMMANDS) throw new Error('backlog: commands out of order or duplicated')
    await Promise.all(fleet.clients.map((c) => c.endAsync()))
    return COMMANDS / s
  })
}

async function rpc(): Promise<{ p50: number; p99: number; max: number; perS: number }> {
  return withGateway(async (port, url) => {
    const d = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: 'rpc-dev', reconnectPeriod: 0 })
    await d.subscribeAsync('devices/rpc-dev/rpc/request/+/json', { qos: 1 })
    d.on('message', (topic) => d.publish(`devices/rpc-dev/rpc/response/${topic.split('/')[4]}`, '{"rate":5,"fw":"1.2.3"}', { qos: 1 }))
    const nc = await connect({ servers: url })
    const lat: number[] = []
    for (let i = 0; i < REQUESTS; i++) {
      const t0 = performance.now()
      const r = await nc.request('ferry.rpc.rpc-dev.getConfig', '{}', { timeout: 5000 })
      if (r.headers?.get('Ferry-Status') !== '200 OK') throw new Error(`rpc: ${r.headers?.get('Ferry-Status')}`)
      lat.push(performance.now() - t0)
    }
    const t0 = performance.now()
    let done = 0
    await Promise.all(Array.from({ length: 10 }, async () => {
      while (done < REQUESTS) {
        done++
        await nc.request('ferry.rpc.rpc-dev.getConfig', '{}', { timeout: 5000 })
      }
    }))
    const perS = REQUESTS / ((performance.now() - t0) / 1000)
    await nc.close()
    await d.endAsync()
    return { p50: percentile(lat, 50), p99: percentile(lat, 99), max: Math.max(...lat), perS }
  })
}

export async function main(): Promise<Record<string, unknown>> {
  const runs: { online: number; backlog: number; rpc: Awaited<ReturnType<typeof rpc>> }[] = []
  for (let r = 1; r <= RUNS; r++) {
    const o = await online()
    const b = await backlog()
    const p = await rpc()
    process.stderr.write(`run ${r}/${RUNS}: online ${o.toFixed(0)} commands/s, backlog ${b.toFixed(0)} commands/s, rpc p50 ${p.p50.toFixed(2)} ms p99 ${p.p99.toFixed(2)} ms, ${p.perS.toFixed(0)} req/s\n`)
    runs.push({ online: o, backlog: b, rpc: p })
  }
  const summary = {
    'commands/s, devices online': median(runs.map((r) => r.online)),
    'commands/s, backlog queued while offline': median(runs.map((r) => r.backlog)),
    'RPC round trip p50 ms': median(runs.map((r) => r.rpc.p50)),
    'RPC round trip p99 ms': median(runs.map((r) => r.rpc.p99)),
    'RPC requests/s, 10 concurrent callers': median(runs.map((r) => r.rpc.perS)),
  }
  process.stdout.write(`\nCloud → device: ${DEVICES} devices, ${COMMANDS} commands, ${REQUESTS} RPC requests; medians of ${RUNS} runs\n\n`)
  printTable([['figure', 'Ferry'], ...Object.entries(summary).map(([k, v]) => [k, v.toFixed(k.includes('ms') ? 2 : 0)])])
  const result = { command: commandLine(), devices: DEVICES, commands: COMMANDS, requests: REQUESTS, runs: RUNS, perRun: runs, summary }
  process.stdout.write(`wrote ${writeResult('downlink', result)}\n`)
  return result
}

runIfMain(import.meta.url, main)
