// Issue 16, test 4: fair shares (--device-max-bytes). With NATS down, a device flooding the gateway
// has its publishes refused past its share (MQTT 3.1.1: no PUBACK, the connection closes; MQTT 5:
// PUBACK 0x97 Quota exceeded), counted as drops{reason="device_quota"}, while 50 other devices
// lose nothing and keep their PUBACK latency (medians against a baseline taken in the same test).
// Then NATS is up: JetStream holds every acknowledged message once, and the flooder's share is
// free again. The bundled gateway, real nats-server, mqtt.js devices.
import path from 'node:path'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AckLedger, checkRecords, clean, formatReport, readRecords } from '../helpers/ack-ledger.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { closedWithin, connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { waitForCount } from '../helpers/stream.js'

const SHARE = 64 * 1024
const DEVICES = 50
const PER_BATCH = 10
const FLOOD_PAYLOAD = 1000

async function metric(g: GatewayProcess, name: string, ...labels: string[]): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.httpPort}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) if (labels.every((l) => (m[1] ?? '').includes(l))) sum += Number(m[2])
  return sum
}

const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.floor(s.length / 2)]!
}

/** Each device publishes PER_BATCH messages one after the other (QoS 1); resolves with every PUBACK latency (ms). */
async function batch(ledger: AckLedger, devices: MqttClient[], from: number): Promise<number[]> {
  const latencies: number[] = []
  await Promise.all(
    devices.map(async (c, i) => {
      const device = `quiet-${i}`
      for (let seq = from; seq < from + PER_BATCH; seq++) {
        const topic = `site/${device}/telemetry`
        ledger.sent(device, seq, topic)
        const t0 = performance.now()
        await c.publishAsync(topic, JSON.stringify({ device, seq, temp: 21.5 }), { qos: 1 })
        latencies.push(performance.now() - t0)
        ledger.acked(device, seq)
      }
    }),
  )
  return latencies
}

/** Floods at QoS 1 with up to `window` in flight until `count` were answered or the connection closed. */
async function flood(ledger: AckLedger, c: MqttClient, device: string, from: number, count: number, window: number): Promise<{ acked: number; refused: number; failed: number; next: number }> {
  let next = from
  let inflight = 0
  let acked = 0
  let refused = 0
  let failed = 0
  const pad = 'x'.repeat(FLOOD_PAYLOAD)
  await new Promise<void>((resolve) => {
    const done = (): void => {
      if (inflight === 0 && (next >= from + count || !c.connected)) resolve()
    }
    c.once('close', () => {
      // 3.1.1: what was in flight is never answered; ending the client fails its callbacks.
      c.end(true)
      setTimeout(done, 0)
    })
    const pump = (): void => {
      while (c.connected && inflight < window && next < from + count) {
        const seq = next++
        const topic = `site/${device}/telemetry`
        ledger.sent(device, seq, topic)
        inflight++
        c.publish(topic, JSON.stringify({ device, seq, pad }), { qos: 1 }, (err) => {
          inflight--
          if (!err) {
            acked++
            ledger.acked(device, seq)
          } else if ((err as { code?: number }).code === 0x97) refused++
          else failed++
          pump()
          done()
        })
      }
    }
    pump()
  })
  return { acked, refused, failed, next }
}

describe('device share - one device flooding (bundled gateway)', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let gwArgs: string[]

  beforeAll(async () => {
    nats = await startNats()
    gwArgs = ['--data-dir', path.join(tempDir('ferry-device-share-'), 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--presence', 'off', '--device-max-bytes', `${SHARE / 1024}KiB`]
    gw = await spawnGateway(gwArgs)
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.[Symbol.asyncDispose]()
  })

  it('device share - the flooder is refused past its share (3.1.1: no PUBACK; v5: 0x97), 50 others lose nothing and keep their latency', async () => {
    const deadline = Date.now() + 5000
    while ((await metric(gw, 'ferry_forward_connected')) !== 1 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    await nats.stop()
    const ledger = new AckLedger()
    const quiet = await Promise.all(Array.from({ length: DEVICES }, (_, i) => connectClient(gw.port, `quiet-${i}`)))
    try {
      await batch(ledger, quiet, 1) // warm-up (connections, JIT)
      const baseline = await batch(ledger, quiet, 1 + PER_BATCH)

      // MQTT 5 flooder: acknowledged up to its share, then 0x97 for each publish, the connection stays.
      const v5 = await connectClient(gw.port, 'flood-v5', { protocolVersion: 5 })
      const [during, f5] = await Promise.all([batch(ledger, quiet, 1 + 2 * PER_BATCH), flood(ledger, v5, 'flood-v5', 1, 1000, 50)])
      expect(v5.connected, gw.output().split('\n').filter((l) => l.includes('flood-v5')).slice(-5).join('\n')).toBe(true)
      expect(f5.failed).toBe(0)
      expect(f5.refused).toBeGreaterThan(0)
      expect(f5.acked + f5.refused).toBe(1000)
      // Accepted up to the share: at least the share minus a message, at most the share plus what was in flight when it was reached.
      const entryBytes = FLOOD_PAYLOAD + 60
      expect(f5.acked * entryBytes).toBeGreaterThanOrEqual(SHARE - 2 * entryBytes)
      expect(f5.acked * entryBytes).toBeLessThanOrEqual(SHARE + 50 * entryBytes)

      // MQTT 3.1.1 flooder: no PUBACK past its share, the connection closes; again after reconnecting.
      const v3 = await connectClient(gw.port, 'flood-v3')
      const f3 = await flood(ledger, v3, 'flood-v3', 1, 1000, 20)
      expect(await closedWithin(v3, 5000)).toBe(true)
      // (Stored records whose PUBACK the closing connection did not deliver count too: up to the window less.)
      expect(f3.acked * entryBytes).toBeGreaterThanOrEqual(SHARE - 21 * entryBytes)
      expect(f3.acked * entryBytes).toBeLessThanOrEqual(SHARE + 20 * entryBytes)
      const again = await connectClient(gw.port, 'flood-v3')
      const f3b = await flood(ledger, again, 'flood-v3', f3.next, 10, 1)
      expect(f3b.acked).toBe(0)
      expect(await closedWithin(again, 5000)).toBe(true)

      // Counted: every refusal is a device_quota drop and a refused publish.
      const drops = await metric(gw, 'ferry_drops_total', 'reason="device_quota"')
      expect(drops).toBeGreaterThanOrEqual(f5.refused + 2)
      expect(await metric(gw, 'ferry_mqtt_refused_total', 'reason="device_quota"')).toBe(drops)

      // The others kept their PUBACK latency (generous: a 2-core machine shared with the flooders).
      const b = median(baseline)
      const d = median(during)
      expect(d, `median PUBACK latency ${d.toFixed(1)} ms during the flood vs ${b.toFixed(1)} ms before`).toBeLessThanOrEqual(5 * b + 20)

      if (process.env.SHOW_TEST_FIGURES) console.info(`PUBACK latency medians: baseline ${b.toFixed(2)} ms, during the flood ${d.toFixed(2)} ms; flooder v5 acked ${f5.acked} refused ${f5.refused}; v3 acked ${f3.acked}`)
      await Promise.all(quiet.map(endClient))
      await endClient(v5)

      // Shares are rebuilt from the log at start: after a crash (kill -9) and a restart, NATS still down, the flooder is still over its share.
      await gw.kill('SIGKILL')
      gw = await spawnGateway(gwArgs)
      const v5b = await connectClient(gw.port, 'flood-v5', { protocolVersion: 5 })
      const stillOver = await flood(ledger, v5b, 'flood-v5', f5.next, 5, 1)
      expect(stillOver).toMatchObject({ acked: 0, refused: 5 })

      // Upstream back: everything acknowledged is stored once; the flooder's share is free again.
      await nats.start()
      // (At least: a record stored whose PUBACK the closing 3.1.1 connection never delivered is stored too.)
      expect(await waitForCount(nats.url, ledger.size, 30_000)).toBeGreaterThanOrEqual(ledger.size)
      const report = checkRecords(ledger, await readRecords(nats.url))
      expect(report.acked).toBe(ledger.size)
      expect(report.acked).toBe(DEVICES * 3 * PER_BATCH + f5.acked + f3.acked)
      expect(clean(report), formatReport(report)).toBe(true)
      const after = await flood(ledger, v5b, 'flood-v5', stillOver.next, 20, 1)
      expect(after).toMatchObject({ acked: 20, refused: 0 })
      await endClient(v5b)
    } finally {
      await Promise.all(quiet.map(endClient))
    }
  }, 40_000)
})
