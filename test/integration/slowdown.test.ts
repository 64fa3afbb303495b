// --max-forward-lag: with a healthy but slow upstream, sustained overload slows devices down (PUBACKs
// held) instead of growing the backlog without bound; during an outage nothing is held; 0 turns it
// off. Every acknowledged message still reaches JetStream once and in order.
import { describe, expect, it, onTestFinished } from 'vitest'
import { AckLedger, checkRecords, clean, formatReport, readRecords } from '../helpers/ack-ledger.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { publishTracked, startLoad, until } from '../helpers/load.js'
import type { Load } from '../helpers/load.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import { startProxy } from '../helpers/proxy.js'
import { connectClient, endClient } from '../helpers/mqtt.js'

const DEVICES = Array.from({ length: 10 }, (_, i) => `dev-${i}`)

async function gateway(natsUrl: string, id: string, extra: string[]): Promise<GatewayProcess> {
  const gw = await spawnGateway(['--mqtt-listen', '127.0.0.1:0', '--data-dir', tempDir(), '--nats-url', natsUrl, '--gateway-id', id, ...extra])
  onTestFinished(async () => {
    await gw.kill('SIGKILL')
  })
  return gw
}

/** One scrape of /metrics, as name -> value (unlabelled series only). */
async function scrape(gw: GatewayProcess): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
  const out = new Map<string, number>()
  for (const m of text.matchAll(/^([a-z_]+) (\S+)$/gm)) out.set(m[1]!, Number(m[2]))
  return out
}

interface SlowdownStatus {
  readonly maxLagSeconds: number
  readonly lagSeconds: number
  readonly slowed: boolean
  readonly held: number
}

async function slowdownStatus(gw: GatewayProcess): Promise<SlowdownStatus> {
  return ((await (await fetch(`http://127.0.0.1:${gw.httpPort}/status.json`)).json()) as { slowdown: SlowdownStatus }).slowdown
}

/**
 * Samples /metrics (and /status.json's slowdown.lagSeconds, as "gate_lag") every 100 ms until
 * stopped; keeps the maxima of the series asked for.
 */
function watch(gw: GatewayProcess, names: readonly string[]): { max: Map<string, number>; stop(): Promise<void> } {
  const max = new Map<string, number>(names.map((n) => [n, 0]))
  let running = true
  const loop = (async () => {
    while (running) {
      const m = await scrape(gw).catch(() => new Map<string, number>())
      if (names.includes('gate_lag')) m.set('gate_lag', (await slowdownStatus(gw).catch(() => undefined))?.lagSeconds ?? 0)
      for (const n of names) max.set(n, Math.max(max.get(n)!, m.get(n) ?? 0))
      await new Promise((r) => setTimeout(r, 100))
    }
  })()
  return {
    max,
    stop: async () => {
      running = false
      await loop
    },
  }
}

/** Stops the load, waits for an empty backlog and nothing held, and checks the stream against the ledger. */
async function finish(gw: GatewayProcess, url: string, ledger: AckLedger, load: Load): Promise<void> {
  await load.stop(30_000)
  expect(load.drops(), 'the gateway dropped a device connection').toBe(0)
  expect(load.acked(), 'every publish was acknowledged').toBe(load.sent())
  await until(
    async () => {
      const m = await scrape(gw)
      return m.get('ferry_log_backlog_records') === 0 && m.get('ferry_ingress_slowed') === 0 && m.get('ferry_ingress_pubacks_held') === 0
    },
    60_000,
    async () => `an empty backlog, not slowed, nothing held: ${JSON.stringify([...(await scrape(gw))].filter(([k]) => /backlog|ingress_|oldest/.test(k)))}`,
  )
  const report = checkRecords(ledger, await readRecords(url))
  expect(clean(report), formatReport(report)).toBe(true)
}

describe('slowdown', () => {
  it('slowdown - forwarding slower than ingress with a healthy upstream: PUBACKs are held, the lag stays bounded, nothing is lost or reordered', async () => {
    await using nats = await startNats()
    await using proxy = await startProxy(nats.port)
    // A healthy but slow upstream: PubAcks keep arriving, but a small window behind up to 40 ms of
    // latency each way forwards fewer messages per second than the devices send (about a third here).
    proxy.setLatency(40)
    const gw = await gateway(proxy.url, 'slow', ['--max-forward-lag', '0.3', '--max-inflight', '16'])
    const ledger = new AckLedger()
    const w = watch(gw, ['ferry_ingress_slowed', 'ferry_log_oldest_unforwarded_age_seconds', 'ferry_ingress_pubacks_held', 'gate_lag'])
    onTestFinished(() => w.stop())
    const load = await startLoad(gw.port, ledger, { devices: DEVICES, ratePerSec: 100, window: 10 })
    onTestFinished(() => load.stop(1000))

    await until(async () => (await scrape(gw)).get('ferry_ingress_slowed') === 1, 20_000, 'ferry_ingress_slowed 1')
    await until(async () => (await scrape(gw)).get('ferry_ingress_pubacks_delayed_total')! > 0, 20_000, 'a held PUBACK released')
    // Keep the overload on for a while: the lag must not grow with it (without the slow-down it
    // grows by about two thirds of a second every second here, see the "0 disables" test).
    const from = load.acked()
    await until(() => load.acked() >= from + 2500, 90_000, '2,500 more PUBACKs while slowed')
    expect((await slowdownStatus(gw)).maxLagSeconds).toBe(0.3)
    const ready = await fetch(`http://127.0.0.1:${gw.httpPort}/readyz`)
    expect(ready.status, 'slowed is working as designed: /readyz stays ready').toBe(200)
    await w.stop()
    console.log(`slowed: max gate lag ${w.max.get('gate_lag')} s, max oldest-unforwarded gauge ${w.max.get('ferry_log_oldest_unforwarded_age_seconds')} s, max held ${w.max.get('ferry_ingress_pubacks_held')}`)
    expect(w.max.get('ferry_ingress_slowed')).toBe(1)
    // Generous bounds: the lag overshoots the bound by what arrived before a tick saw it, and the
    // gauge is read from the oldest record once a second (up to a second stale).
    expect(w.max.get('gate_lag'), 'forwarding lag bounded near --max-forward-lag').toBeLessThan(3)
    expect(w.max.get('ferry_log_oldest_unforwarded_age_seconds'), 'forwarding lag bounded near --max-forward-lag').toBeLessThan(5)
    // Bounded by connections x window (10 per device here).
    expect(w.max.get('ferry_ingress_pubacks_held')).toBeLessThanOrEqual(DEVICES.length * 10)

    proxy.setLatency(0)
    await finish(gw, nats.url, ledger, load)
    const m = await scrape(gw)
    expect(m.get('ferry_ingress_slowed_seconds_total')).toBeGreaterThan(0)
    expect(m.get('ferry_ingress_puback_delay_seconds_count')).toBe(m.get('ferry_ingress_pubacks_delayed_total'))
  })

  it('slowdown - a device that loses its connection while its PUBACKs are held resends; each message is stored once', async () => {
    await using nats = await startNats()
    await using proxy = await startProxy(nats.port)
    proxy.setLatency(40)
    const gw = await gateway(proxy.url, 'cut', ['--max-forward-lag', '0.3', '--max-inflight', '16'])
    const ledger = new AckLedger()
    const load = await startLoad(gw.port, ledger, { devices: DEVICES, ratePerSec: 100, window: 10 })
    onTestFinished(() => load.stop(1000))
    await until(async () => (await scrape(gw)).get('ferry_ingress_slowed') === 1, 20_000, 'ferry_ingress_slowed 1')
    // mqtt.js resends what was not acknowledged after it reconnects (without DUP): the retransmit index
    // must recognise those whose PUBACK was held when the connection went.
    const c = await connectClient(gw.port, 'dev-cut', { reconnectPeriod: 200 })
    onTestFinished(() => endClient(c))
    c.on('error', () => {})
    const done = publishTracked(c, ledger, { device: 'dev-cut', topic: 'load/dev-cut/telemetry', count: 300, window: 50 })
    const held = await (async () => {
      for (let i = 0; i < 100; i++) {
        const m = await scrape(gw)
        if (m.get('ferry_ingress_pubacks_held')! > 0 && ledger.get('dev-cut', 1) !== undefined) return true
        await new Promise((r) => setTimeout(r, 50))
      }
      return false
    })()
    expect(held).toBe(true)
    const retransmitsBefore = (await scrape(gw)).get('ferry_mqtt_retransmits_dropped_total') ?? 0
    c.stream.destroy()
    await done
    expect((await scrape(gw)).get('ferry_mqtt_retransmits_dropped_total')!, 'resends recognised as already stored').toBeGreaterThan(retransmitsBefore)
    proxy.setLatency(0)
    await finish(gw, nats.url, ledger, load)
  })

  it('slowdown - NATS down: nothing is held, PUBACKs keep coming, the log absorbs', async () => {
    await using nats = await startNats()
    const gw = await gateway(nats.url, 'outage', ['--max-forward-lag', '0.3'])
    const ledger = new AckLedger()
    const load = await startLoad(gw.port, ledger, { devices: DEVICES, ratePerSec: 100, window: 20 })
    onTestFinished(() => load.stop(1000))
    await until(() => load.acked() >= 500, 20_000, '500 PUBACKs with NATS up')

    await nats.stop()
    const w = watch(gw, ['ferry_ingress_slowed', 'ferry_ingress_pubacks_delayed_total', 'ferry_log_oldest_unforwarded_age_seconds'])
    onTestFinished(() => w.stop())
    const before = load.acked()
    // Well past the bound: the backlog ages, devices are still acknowledged.
    await until(async () => (await scrape(gw)).get('ferry_log_oldest_unforwarded_age_seconds')! > 1.5, 20_000, 'a backlog older than 1.5 s')
    await until(() => load.acked() >= before + 1000, 20_000, '1,000 PUBACKs during the outage')
    await w.stop()
    expect(w.max.get('ferry_ingress_slowed'), 'not slowed during an outage').toBe(0)
    expect(w.max.get('ferry_ingress_pubacks_delayed_total'), 'no PUBACK held during an outage').toBe(0)

    await nats.start()
    await finish(gw, nats.url, ledger, load)
  })

  it('slowdown - --max-forward-lag 0 disables it: the lag grows, nothing is held', async () => {
    await using nats = await startNats()
    await using proxy = await startProxy(nats.port)
    proxy.setLatency(40)
    const gw = await gateway(proxy.url, 'off', ['--max-forward-lag', '0', '--max-inflight', '16'])
    const ledger = new AckLedger()
    const w = watch(gw, ['ferry_ingress_slowed', 'ferry_ingress_pubacks_delayed_total'])
    onTestFinished(() => w.stop())
    const load = await startLoad(gw.port, ledger, { devices: DEVICES, ratePerSec: 100, window: 10 })
    onTestFinished(() => load.stop(1000))
    await until(async () => (await scrape(gw)).get('ferry_log_oldest_unforwarded_age_seconds')! > 1.5, 30_000, 'a forwarding lag over 1.5 s')
    await w.stop()
    expect(w.max.get('ferry_ingress_slowed')).toBe(0)
    expect(w.max.get('ferry_ingress_pubacks_delayed_total')).toBe(0)
    proxy.setLatency(0)
    await finish(gw, nats.url, ledger, load)
  })
})
