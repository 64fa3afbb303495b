// Review of the --max-forward-lag slow-down against a real gateway, NATS and MQTT clients.
import { spawnSync } from 'node:child_process'
import { closeSync, openSync, readFileSync } from 'node:fs'
import path from 'node:path'
import { describe, expect, it, onTestFinished } from 'vitest'
import { AckLedger } from '../helpers/ack-ledger.js'
import { spawnGateway } from '../helpers/gateway.js'
import { startLoad, until } from '../helpers/load.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import { startProxy } from '../helpers/proxy.js'
import { connectClient } from '../helpers/mqtt.js'

const DEVICES = Array.from({ length: 10 }, (_, i) => `dev-${i}`)

async function scrape(httpPort: number): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${httpPort}/metrics`)).text()
  const out = new Map<string, number>()
  for (const m of text.matchAll(/^([a-z_]+) (\S+)$/gm)) out.set(m[1]!, Number(m[2]))
  return out
}

describe('slowdown review', () => {
  it('slowdown review - SIGTERM while PUBACKs are held: every stored message of a device is acknowledged before its connection closes', async () => {
    await using nats = await startNats()
    await using proxy = await startProxy(nats.port)
    proxy.setLatency(40)
    const dir = tempDir()
    const gw = await spawnGateway(['--mqtt-listen', '127.0.0.1:0', '--data-dir', dir, '--nats-url', proxy.url, '--gateway-id', 'term', '--max-forward-lag', '0.3', '--max-inflight', '16'])
    onTestFinished(async () => {
      await gw.kill('SIGKILL')
    })
    const ledger = new AckLedger()
    const load = await startLoad(gw.port, ledger, { devices: DEVICES, ratePerSec: 100, window: 10 })
    onTestFinished(() => load.stop(1000))
    await until(async () => (await scrape(gw.httpPort)).get('ferry_ingress_slowed') === 1, 20_000, 'ferry_ingress_slowed 1')
    // A device that sends a burst (mqtt.js sends every publish at once): several of its PUBACKs are held.
    const c = await connectClient(gw.port, 'probe', { reconnectPeriod: 0 })
    c.on('error', () => {})
    let acked = 0
    for (let i = 0; i < 200; i++) c.publish('probe/t', JSON.stringify({ i }), { qos: 1 }, (err) => (err ? undefined : acked++))
    await until(async () => (await scrape(gw.httpPort)).get('ferry_ingress_pubacks_held')! >= 5 && acked > 0 && acked < 200, 20_000, 'PUBACKs of the probe held')
    // Let what the probe's first reads carried be stored (and held) before the signal.
    await new Promise((r) => setTimeout(r, 300))
    const closed = new Promise<void>((resolve) => c.once('close', () => resolve()))
    const signalledAt = Date.now()
    await gw.kill('SIGTERM')
    await closed
    // Into a file: `ferry log dump` exits with output still unwritten to a pipe whose reader lags
    // (it loses records when piped; seen in review, not fixed here).
    const out = path.join(tempDir(), 'dump.jsonl')
    const fd = openSync(out, 'w')
    const dump = spawnSync(process.execPath, ['dist/ferry.cjs', 'log', 'dump', dir, '--json', '--limit', '1000000'], { stdio: ['ignore', fd, 'pipe'], encoding: 'utf8' })
    closeSync(fd)
    expect(dump.status, dump.stderr).toBe(0)
    const probe = readFileSync(out, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"probe"') && l.includes('probe/t'))
      .map((l) => JSON.parse(l) as { time: string })
    // Stored before the signal: its PUBACK was written or held. (A publish the core reads after the
    // held ones are answered may still be stored after its client was closed: resent, as before.)
    const storedBefore = probe.filter((r) => Date.parse(r.time) < signalledAt).length
    console.log(`probe: ${acked} PUBACKs; ${storedBefore} stored before SIGTERM, ${probe.length} in all`)
    expect(storedBefore, 'the probe stored something').toBeGreaterThan(0)
    // "Held PUBACKs go out now" (ingress.ts, close): the device got a PUBACK for each message stored before.
    expect(acked, `PUBACKs the probe got, of ${storedBefore} stored before SIGTERM (${probe.length} in all)`).toBeGreaterThanOrEqual(storedBefore)
  })

  it('slowdown review - JetStream stops answering (TCP up) while PUBACKs are held: after --ack-timeout-ms they are all released and PUBACKs keep coming', async () => {
    await using nats = await startNats()
    await using proxy = await startProxy(nats.port)
    proxy.setLatency(40)
    const gw = await spawnGateway(['--mqtt-listen', '127.0.0.1:0', '--data-dir', tempDir(), '--nats-url', proxy.url, '--gateway-id', 'hole', '--max-forward-lag', '0.3', '--max-inflight', '16', '--ack-timeout-ms', '1000'])
    onTestFinished(async () => {
      await gw.kill('SIGKILL')
    })
    const ledger = new AckLedger()
    const load = await startLoad(gw.port, ledger, { devices: DEVICES, ratePerSec: 100, window: 10 })
    onTestFinished(() => load.stop(1000))
    await until(async () => (await scrape(gw.httpPort)).get('ferry_ingress_pubacks_held')! > 0, 20_000, 'PUBACKs held')
    proxy.blackhole()
    await until(async () => {
      const m = await scrape(gw.httpPort)
      return m.get('ferry_ingress_slowed') === 0 && m.get('ferry_ingress_pubacks_held') === 0
    }, 10_000, 'nothing held once JetStream stopped answering')
    const before = load.acked()
    await until(() => load.acked() >= before + 500, 20_000, '500 PUBACKs while JetStream does not answer')
    expect((await scrape(gw.httpPort)).get('ferry_ingress_slowed')).toBe(0)
    proxy.heal()
  })

  it('slowdown review - MQTT 5 QoS 2 devices while slowed: PUBRECs held, PUBREL/PUBCOMP complete, every message stored once and in order', async () => {
    await using nats = await startNats()
    await using proxy = await startProxy(nats.port)
    proxy.setLatency(40)
    const dir = tempDir()
    const gw = await spawnGateway(['--mqtt-listen', '127.0.0.1:0', '--data-dir', dir, '--nats-url', proxy.url, '--gateway-id', 'qos2', '--max-forward-lag', '0.3', '--max-inflight', '16'])
    onTestFinished(async () => {
      await gw.kill('SIGKILL')
    })
    const ledger = new AckLedger()
    const load = await startLoad(gw.port, ledger, { devices: DEVICES, ratePerSec: 100, window: 10 })
    onTestFinished(() => load.stop(1000))
    await until(async () => (await scrape(gw.httpPort)).get('ferry_ingress_slowed') === 1, 20_000, 'ferry_ingress_slowed 1')
    const c = await connectClient(gw.port, 'v5q2', { protocolVersion: 5, reconnectPeriod: 0 })
    c.on('error', () => {})
    const delayedBefore = (await scrape(gw.httpPort)).get('ferry_ingress_pubacks_delayed_total')!
    const N = 150
    let done = 0
    await new Promise<void>((resolve, reject) => {
      for (let i = 0; i < N; i++) {
        c.publish('v5q2/t', JSON.stringify({ i }), { qos: 2 }, (err) => {
          if (err) return reject(err)
          if (++done === N) resolve()
        })
      }
    })
    expect((await scrape(gw.httpPort)).get('ferry_ingress_pubacks_delayed_total')!, 'PUBRECs were held').toBeGreaterThan(delayedBefore)
    await new Promise<void>((resolve) => c.end(false, {}, () => resolve()))
    await load.stop(10_000)
    await gw.kill('SIGTERM')
    const out = path.join(tempDir(), 'dump.jsonl')
    const fd = openSync(out, 'w')
    spawnSync(process.execPath, ['dist/ferry.cjs', 'log', 'dump', dir, '--json', '--limit', '1000000'], { stdio: ['ignore', fd, 'pipe'] })
    closeSync(fd)
    const seen = readFileSync(out, 'utf8')
      .split('\n')
      .filter((l) => l.includes('"v5q2"') && l.includes('v5q2/t'))
      .map((l) => (JSON.parse((JSON.parse(l) as { payload: string }).payload) as { i: number }).i)
    expect(seen).toEqual(Array.from({ length: N }, (_, i) => i))
  })
})
