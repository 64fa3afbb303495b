// --drain-max-rate (issue 16, test 5), on the bundled gateway: after an outage the backlog drains at
// the cap (within 10 %, the stream's growth over several seconds), while live messages of a device
// without backlog (live lane) and high-priority messages are not held behind it; nothing lost or doubled.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { decodeCbor } from '../../src/codec/index.js'
import { AckLedger, checkRecords, clean, formatReport, readRecords } from '../helpers/ack-ledger.js'
import { startGateway as startInProcess, spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { publishTracked, until } from '../helpers/load.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { startProxy } from '../helpers/proxy.js'
import { streamCount } from '../helpers/stream.js'

/** Messages per second: well below what this machine forwards (tens of thousands). */
const CAP = 2000
const BACKLOG = 20_000

let nats: NatsServer
let natsDown = false
beforeAll(async () => {
  nats = await startNats()
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

/** Publishes `{device, seq, ts}` every `everyMs` at QoS 1 (ledger), until stopped. */
function ticker(c: MqttClient, ledger: AckLedger, device: string, topic: string, everyMs: number): { stop: () => Promise<void>; sent: () => number } {
  let seq = 0
  let inflight = 0
  let drained: (() => void) | undefined
  const t = setInterval(() => {
    const s = ++seq
    inflight++
    ledger.sent(device, s, topic)
    c.publish(topic, JSON.stringify({ device, seq: s, ts: Date.now() }), { qos: 1 }, (err) => {
      inflight--
      if (!err) ledger.acked(device, s)
      if (inflight === 0) drained?.()
    })
  }, everyMs)
  return {
    sent: () => seq,
    stop: () =>
      new Promise<void>((resolve) => {
        clearInterval(t)
        if (inflight === 0) resolve()
        else drained = resolve
      }),
  }
}

describe('drain rate', () => {
  it('drain rate - the backlog drains at --drain-max-rate; live-lane and high-priority messages are not held behind it', async () => {
    const ledger = new AckLedger()
    const gw: GatewayProcess = await spawnGateway([
      '--mqtt-listen', '127.0.0.1:0', '--data-dir', tempDir('ferry-drain-'), '--nats-url', nats.url, '--gateway-id', 'drain',
      '--priority', 'alarms/#=high', '--drain-max-rate', `${CAP}/s`, '--presence', 'off',
    ]) // prettier-ignore
    const clients: MqttClient[] = []
    let watcher: NatsConnection | undefined
    try {
      // The stream exists (one record through the gateway), then the outage.
      const warm = await connectClient(gw.port, 'dr-warmup')
      clients.push(warm)
      await publishTracked(warm, ledger, { device: 'dr-warmup', topic: 'status/dr-warmup', count: 1 })
      await until(async () => (await streamCount(nats.url)) >= 1, 20_000, 'the warm-up record in the stream')
      natsDown = true
      await nats.stop()
      for (let i = 0; i < 4; i++) clients.push(await connectClient(gw.port, `dr-dev-${i}`))
      await Promise.all(clients.slice(1).map((c, i) => publishTracked(c, ledger, { device: `dr-dev-${i}`, topic: `bulk/dr-dev-${i}/data`, count: BACKLOG / 4, window: 200 })))
      await nats.start()
      natsDown = false

      // Latency of live and alarm messages: publish time (in the payload) to delivery on the subject.
      watcher = await connect({ servers: nats.url })
      const latencies: Array<{ kind: string; ms: number; at: number }> = []
      watcher.subscribe('ferry.up.>', {
        callback: (_err, m) => {
          if (!m.subject.startsWith('ferry.up.live.') && !m.subject.startsWith('ferry.up.alarms.')) return
          const v = decodeCbor(m.data) as { ts: number }
          latencies.push({ kind: m.subject.startsWith('ferry.up.live.') ? 'live' : 'alarm', ms: Date.now() - v.ts, at: Date.now() })
        },
      })
      await watcher.flush()
      // The live lane opens once the normal class's forwarder has scanned its backlog.
      await until(() => gw.output().includes('live lane open'), 20_000, 'the live lane to open')
      const live = await connectClient(gw.port, 'dr-live')
      const alarm = await connectClient(gw.port, 'dr-alarm')
      clients.push(live, alarm)
      const liveTicker = ticker(live, ledger, 'dr-live', 'live/dr-live/data', 50)
      const alarmTicker = ticker(alarm, ledger, 'dr-alarm', 'alarms/dr-alarm/fire', 100)

      // The stream's growth (everything: backlog, live, alarms) over a window of several seconds.
      const sample = async (): Promise<{ n: number; t: number }> => {
        const before = performance.now()
        const n = await streamCount(nats.url, 'FERRY', 'all')
        return { n, t: (before + performance.now()) / 2 }
      }
      await new Promise((r) => setTimeout(r, 1000))
      const a = await sample()
      await new Promise((r) => setTimeout(r, 5000))
      const b = await sample()
      const rate = ((b.n - a.n) * 1000) / (b.t - a.t)
      const measuredAt = Date.now()
      // Backlog still left at the end of the window (else the window measured something else): at least 2 s of it.
      const left = 1 + BACKLOG + liveTicker.sent() + alarmTicker.sent() - b.n
      await liveTicker.stop()
      await alarmTicker.stop()
      expect(left, 'the backlog was gone before the window ended').toBeGreaterThan(2 * CAP)
      expect(rate, `stream grew ${b.n - a.n} in ${((b.t - a.t) / 1000).toFixed(2)} s`).toBeGreaterThan(CAP * 0.9)
      expect(rate).toBeLessThan(CAP * 1.1)

      // Everything arrives, once, in order.
      const expected = ledger.size
      await until(async () => (await streamCount(nats.url)) >= expected, 30_000, async () => `${expected} records (has ${await streamCount(nats.url)})`, 250)
      const records = await readRecords(nats.url)
      const report = checkRecords(ledger, records)
      expect(clean(report), formatReport(report)).toBe(true)
      expect(records.length).toBe(expected)

      // Live and alarm messages went past the paced backlog: each took far less than the >= 2 s of backlog
      // still ahead of it (published during the window, while >= 2 s of backlog was left).
      const during = latencies.filter((l) => l.at <= measuredAt)
      expect(during.filter((l) => l.kind === 'live').length).toBeGreaterThan(50)
      expect(during.filter((l) => l.kind === 'alarm').length).toBeGreaterThan(25)
      const worst = (kind: string): number => Math.max(...during.filter((l) => l.kind === kind).map((l) => l.ms))
      console.log(`drain rate: ${rate.toFixed(0)} msg/s (cap ${CAP}); worst latency live ${worst('live')} ms, alarm ${worst('alarm')} ms; ${left} left`)
      expect(worst('live'), 'a live-lane message waited behind the paced backlog').toBeLessThan(1000)
      expect(worst('alarm'), 'an alarm waited behind the paced backlog').toBeLessThan(1000)
      expect(await gw.kill('SIGTERM')).toBe(0)
    } finally {
      await watcher?.close()
      await Promise.all(clients.map((c) => endClient(c)))
      await gw.kill('SIGKILL')
      if (natsDown) await nats.start()
    }
  })

  it('drain rate - a cap in payload bytes per second: the backlog drains at that many bytes per second', async () => {
    // Payloads of one size: {device, seq, tag} with seqs of five digits (one CBOR size) and a fixed tag.
    const BYTES_PER_SECOND = 200 * 1024
    const ledger = new AckLedger()
    const base = await streamCount(nats.url, 'FERRY', 'all')
    const gw: GatewayProcess = await spawnGateway([
      '--mqtt-listen', '127.0.0.1:0', '--data-dir', tempDir('ferry-drain-bytes-'), '--nats-url', nats.url, '--gateway-id', 'drainb',
      '--drain-max-rate', '200KiB/s', '--presence', 'off',
    ]) // prettier-ignore
    const clients: MqttClient[] = []
    let watcher: NatsConnection | undefined
    try {
      const warm = await connectClient(gw.port, 'db-warmup')
      clients.push(warm)
      await publishTracked(warm, ledger, { device: 'db-warmup', topic: 'status/db-warmup', count: 1 })
      await until(async () => (await streamCount(nats.url, 'FERRY', 'all')) >= base + 1, 20_000, 'the warm-up record in the stream')
      natsDown = true
      await nats.stop()
      for (let i = 0; i < 4; i++) clients.push(await connectClient(gw.port, `db-dev-${i}`))
      const tag = 'x'.repeat(200)
      await Promise.all(clients.slice(1).map((c, i) => publishTracked(c, ledger, { device: `db-dev-${i}`, topic: `bulk/db-dev-${i}/data`, count: 3000, from: 10_000, tag, window: 200 })))
      await nats.start()
      natsDown = false
      watcher = await connect({ servers: nats.url })
      const sizes = new Set<number>()
      watcher.subscribe('ferry.up.bulk.>', { callback: (_err, m) => void sizes.add(m.data.length) })
      await watcher.flush()
      const sample = async (): Promise<{ n: number; t: number }> => {
        const before = performance.now()
        const n = await streamCount(nats.url, 'FERRY', 'all')
        return { n, t: (before + performance.now()) / 2 }
      }
      // Past the first second's burst.
      await until(async () => (await streamCount(nats.url, 'FERRY', 'all')) > base + 1, 20_000, 'the drain to start')
      await new Promise((r) => setTimeout(r, 1500))
      const a = await sample()
      await new Promise((r) => setTimeout(r, 4000))
      const b = await sample()
      expect(base + 1 + 12_000 - b.n, 'the backlog was gone before the window ended').toBeGreaterThan(0)
      expect(sizes.size, `payload sizes ${[...sizes].join(', ')}`).toBe(1)
      const size = [...sizes][0]!
      const bytesRate = ((b.n - a.n) * size * 1000) / (b.t - a.t)
      console.log(`drain rate (bytes): ${(bytesRate / 1024).toFixed(1)} KiB/s of ${size}-byte payloads (cap 200 KiB/s)`)
      expect(bytesRate).toBeGreaterThan(BYTES_PER_SECOND * 0.9)
      expect(bytesRate).toBeLessThan(BYTES_PER_SECOND * 1.1)
      expect(await gw.kill('SIGTERM')).toBe(0)
    } finally {
      await watcher?.close()
      await Promise.all(clients.map((c) => endClient(c)))
      await gw.kill('SIGKILL')
      if (natsDown) await nats.start()
    }
  })

  it('drain rate - what a reconnect makes the forwarder send again is backlog too: resent at the cap, not at once', async () => {
    const RATE = 500
    const proxy = await startProxy(nats.port)
    const gw = await startInProcess({
      'log.dataDir': tempDir('ferry-drain-resend-'), 'nats.url': proxy.url, 'nats.stream': 'DRR', 'nats.subjectPrefix': 'drr',
      presence: 'off', 'forward.drainMaxRate': `${RATE}/s`, 'nats.maxInflight': 1000, 'nats.ackTimeoutMs': 60_000,
    }) // prettier-ignore
    try {
      const c = await connectClient(gw.ingress.address.port, 'drr-dev')
      await publishTracked(c, new AckLedger(), { device: 'drr-dev', topic: 'warm/drr-dev', count: 1 })
      await until(async () => (await streamCount(nats.url, 'DRR', 'all')) >= 1, 20_000, 'the warm-up record')
      // A slow path: PubAcks come seconds late, so the paced backlog fills the window (1,000 in flight).
      proxy.setLatency(3000)
      await publishTracked(c, new AckLedger(), { device: 'drr-dev', topic: 'bulk/drr-dev', count: 3000, window: 200 })
      await endClient(c)
      await until(() => gw.forwarder.inflight >= 900, 20_000, () => `the window to fill (in flight ${gw.forwarder.inflight})`)
      // The link fails with all that in flight: after the reconnect the probe goes alone, the rest is resent.
      const before = gw.metrics.forwardRetries.get()
      proxy.setLatency(0)
      proxy.cut()
      const samples: Array<{ t: number; n: number }> = []
      await until(
        () => {
          samples.push({ t: performance.now(), n: gw.metrics.forwardRetries.get() - before })
          return samples.at(-1)!.n >= 900
        },
        20_000,
        () => `the resends (${gw.metrics.forwardRetries.get() - before} so far)`,
        20,
      )
      // From the first resend after the probe: at most the burst (one second's worth) plus the cap per second.
      const first = samples.find((x) => x.n > 1)!
      const last = samples.at(-1)!
      const seconds = (last.t - first.t) / 1000
      console.log(`drain rate (resends): ${last.n} resent in ${seconds.toFixed(2)} s after the probe (cap ${RATE}/s)`)
      expect(seconds, 'the resends went out at once, not paced').toBeGreaterThan((last.n - RATE - 1) / RATE / 1.2)
      for (const x of samples) {
        if (x.t < first.t) continue
        expect(x.n, `${x.n} resent ${((x.t - first.t) / 1000).toFixed(2)} s after the first`).toBeLessThanOrEqual(first.n + RATE + (RATE * 1.1 * (x.t - first.t)) / 1000 + 64)
      }
    } finally {
      await gw.close()
      await proxy.close()
    }
  })
})
