// Benchmark: backlog drain. Upstream is down while devices fill the log, then it comes back.
//
// Run: npx tsx bench/drain.ts [--messages 1000000] [--devices 50]   (needs nats-server and `npm run build`)
// Phase 1: nats-server is stopped; N devices publish `messages` QoS 1 messages (~200-byte JSON) to
//   the bundled gateway; RSS of the gateway is sampled while the backlog grows.
// Phase 2: nats-server starts again (same store); one live device keeps publishing 100 msg/s.
// Reports: fill rate, drain rate (messages/s into JetStream), time to empty, gateway RSS during
// the backlog (min/max), and the live device's device→JetStream latency during the drain compared
// with its latency once the backlog is gone.
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { decode } from 'cbor-x'
import { parseArgs } from 'node:util'
import { startFleet } from '../firmware-sim/index.js'
import { freePort, natsBin, percentile, printTable, rssMiB, startFerry, startProc, tempDir, waitPort, writeResult, runIfMain } from './lib.js'

const { values } = parseArgs({ options: { messages: { type: 'string', default: '1000000' }, devices: { type: 'string', default: '50' } } })
const MESSAGES = Number(values.messages)
const DEVICES = Number(values.devices)

export async function main(): Promise<void> {
  const natsPort = await freePort()
  const store = tempDir('ferry-bench-drain-js-')
  const natsArgs = ['-a', '127.0.0.1', '-p', String(natsPort), '-js', '-sd', store]
  const url = `nats://127.0.0.1:${natsPort}`
  // Start NATS once so the gateway creates the stream, then take it down.
  let nats = startProc(natsBin(), natsArgs)
  await waitPort(natsPort)
  const ferry = await startFerry(['--nats-url', url, '--data-dir', tempDir('ferry-bench-drain-'), '--log-max-bytes', '4GiB'])
  for (let i = 0; i < 100 && !ferry.proc.output().includes('created JetStream stream'); i++) await new Promise((r) => setTimeout(r, 50))
  await nats.stop()

  const rss: number[] = []
  const sampler = setInterval(() => rss.push(rssMiB(ferry.proc.pid)), 250)
  const t0 = performance.now()
  const fill = startFleet({ url: `mqtt://127.0.0.1:${ferry.mqttPort}`, devices: DEVICES, ratePerDevice: 0, inflight: 10, qos: 1, count: Math.ceil(MESSAGES / DEVICES), payloadBytes: 200, rampMs: 500 })
  await fill.done()
  const fillS = (performance.now() - t0) / 1000
  const total = fill.stats().acked
  await fill.close()
  const rssBacklog = [...rss]

  // Phase 2: upstream returns; a live device publishes 100 msg/s throughout.
  nats = startProc(natsBin(), natsArgs)
  await waitPort(natsPort)
  const nc = await connect({ servers: url })
  const drainLat: number[] = []
  const afterLat: number[] = []
  let drained = false
  nc.subscribe('ferry.up.devices.live-00001.>', {
    callback: (_e, m) => {
      const v = decode(m.data) as { ts: number }
      ;(drained ? afterLat : drainLat).push(Date.now() - v.ts)
    },
  })
  const live = startFleet({ url: `mqtt://127.0.0.1:${ferry.mqttPort}`, devices: 1, idPrefix: 'live', ratePerDevice: 100, qos: 1, payloadBytes: 200 })
  const jsm = await jetstreamManager(nc)
  const t1 = performance.now()
  let stored = 0
  while (stored < total && performance.now() - t1 < 600_000) {
    stored = (await jsm.streams.info('FERRY')).state.messages - live.stats().acked
    await new Promise((r) => setTimeout(r, 50))
  }
  const drainS = (performance.now() - t1) / 1000
  drained = true
  await new Promise((r) => setTimeout(r, 3000))
  clearInterval(sampler)
  await live.close()
  await nc.close()
  await ferry.proc.stop()
  await nats.stop()

  const result = {
    messages: total,
    fillPerS: total / fillS,
    drainPerS: total / drainS,
    drainS,
    rssBacklogMiB: { min: Math.min(...rssBacklog), max: Math.max(...rssBacklog) },
    rssDuringDrainMaxMiB: Math.max(...rss.slice(rssBacklog.length)),
    liveDuringDrain: { p50: percentile(drainLat, 50), p99: percentile(drainLat, 99), n: drainLat.length },
    liveAfterDrain: { p50: percentile(afterLat, 50), p99: percentile(afterLat, 99), n: afterLat.length },
  }
  process.stdout.write(`\nBacklog drain: ${total.toLocaleString('en-US')} messages buffered with NATS down, then NATS up\n\n`)
  printTable([
    ['fill msg/s', 'drain msg/s', 'time to empty s', 'RSS while buffering MiB', 'RSS max during drain MiB', 'live p50/p99 during drain ms', 'live p50/p99 after ms'],
    [result.fillPerS, result.drainPerS, result.drainS, `${result.rssBacklogMiB.min.toFixed(0)}–${result.rssBacklogMiB.max.toFixed(0)}`, result.rssDuringDrainMaxMiB, `${result.liveDuringDrain.p50}/${result.liveDuringDrain.p99}`, `${result.liveAfterDrain.p50}/${result.liveAfterDrain.p99}`],
  ])
  process.stdout.write(`wrote ${writeResult('drain', result)}\n`)
}

runIfMain(import.meta.url, main)
