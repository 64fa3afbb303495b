// Issue 16: per-device publish rates. --device-max-rate holds PUBACKs back so that a device that
// waits for them publishes at the rate (observed ≈ the limit; nothing dropped), and pauses a QoS 0
// publisher's socket instead of dropping; --device-hard-rate refuses an MQTT 5 QoS 1 publish past it
// with DISCONNECT 0x96 Message rate too high (not stored) and drops QoS 0 ones
// (drops{reason="rate_limited"}), while MQTT 3.1.1 QoS 1 publishes past it are only held. The bundled gateway, real nats-server, mqtt.js.
import path from 'node:path'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { closedWithin, connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, streamCount } from '../helpers/stream.js'

const RATE = 20
const HARD = 40

async function metric(g: GatewayProcess, name: string, ...labels: string[]): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.httpPort}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) if (labels.every((l) => (m[1] ?? '').includes(l))) sum += Number(m[2])
  return sum
}

/** Publishes `count` QoS 1 messages with up to `window` in flight; resolves with each answer's time (ms) and outcome. */
async function publishWindow(c: MqttClient, topic: string, count: number, window: number): Promise<{ ackedAt: number[]; refused: number[]; failed: number }> {
  const ackedAt: number[] = []
  const refused: number[] = []
  let failed = 0
  let next = 0
  let answered = 0
  await new Promise<void>((resolve) => {
    const pump = (): void => {
      while (next < count && next - answered < window) {
        const seq = next++
        c.publish(topic, JSON.stringify({ seq }), { qos: 1 }, (err) => {
          answered++
          if (!err) ackedAt.push(performance.now())
          else if ((err as { code?: number }).code !== undefined) refused.push((err as { code: number }).code)
          else failed++
          if (answered === count) resolve()
          else pump()
        })
      }
    }
    pump()
  })
  return { ackedAt, refused, failed }
}

/** Waits until the stream holds `n` device messages on subjects ending with `suffix`; returns how long that took (ms) and the count. */
async function storedOn(url: string, suffix: string, n: number, ms: number): Promise<number> {
  const end = Date.now() + ms
  for (;;) {
    const c = (await readStream(url)).filter((m) => m.subject.endsWith(suffix)).length
    if (c >= n || Date.now() > end) return c
    await new Promise((r) => setTimeout(r, 100))
  }
}

describe('device rate - --device-max-rate holds acknowledgements (bundled gateway)', () => {
  let nats: NatsServer
  let gw: GatewayProcess

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', path.join(tempDir('ferry-device-rate-'), 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--presence', 'off', '--device-max-rate', String(RATE)])
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.[Symbol.asyncDispose]()
  })

  it('device rate - a device publishing as fast as it can gets its PUBACKs at the rate (burst = rate); nothing is dropped; others are not slowed', async () => {
    const fast = await connectClient(gw.port, 'fast')
    const other = await connectClient(gw.port, 'other')
    try {
      const total = 100
      const started = performance.now()
      const run = publishWindow(fast, 'rate/fast', total, 50)
      // Another device at the same time: under its own burst, answered at once.
      await new Promise((r) => setTimeout(r, 500))
      const t0 = performance.now()
      const o = await publishWindow(other, 'rate/other', RATE / 2, RATE / 2)
      const otherMs = performance.now() - t0
      const r = await run
      expect(r.refused).toEqual([])
      expect(r.failed).toBe(0)
      expect(r.ackedAt).toHaveLength(total)
      expect(o.ackedAt).toHaveLength(RATE / 2)
      // After the burst (RATE at once), one PUBACK per 1/RATE s: measured from the 25th to the last.
      const steady = r.ackedAt.slice(24)
      const rate = ((steady.length - 1) * 1000) / (steady.at(-1)! - steady[0]!)
      expect(rate, `observed ${rate.toFixed(1)} PUBACKs/s`).toBeGreaterThan(RATE * 0.7)
      expect(rate, `observed ${rate.toFixed(1)} PUBACKs/s`).toBeLessThan(RATE * 1.15)
      // The whole run took about (total - RATE) / RATE seconds, not less.
      expect(r.ackedAt.at(-1)! - started).toBeGreaterThan(((total - RATE) / RATE) * 1000 * 0.9)
      // The other device was not held behind the fast one (generous: half a second).
      expect(otherMs).toBeLessThan(((total - RATE) / RATE) * 1000 / 4)
      expect(await storedOn(nats.url, 'rate.fast', total, 10_000)).toBe(total)
      expect(await metric(gw, 'ferry_drops_total', 'reason="rate_limited"')).toBe(0)
    } finally {
      await endClient(fast)
      await endClient(other)
    }
  }, 30_000)

  it('device rate - a QoS 0 publisher over the rate is paused, not dropped: every message is stored, and the device is read again only at the rate', async () => {
    const c = await connectClient(gw.port, 'qos0')
    try {
      const total = 3 * RATE
      const t0 = performance.now()
      for (let i = 0; i < total; i++) c.publish('rate/qos0', JSON.stringify({ seq: i }), { qos: 0 })
      // The next packet of the same connection is read (and answered) only once the QoS 0 ones had their slots.
      await c.publishAsync('rate/qos0', JSON.stringify({ seq: total }), { qos: 1 })
      const waitedMs = performance.now() - t0
      expect(waitedMs).toBeGreaterThan(((total + 1 - RATE) / RATE) * 1000 * 0.9)
      expect(await storedOn(nats.url, 'rate.qos0', total + 1, 15_000)).toBe(total + 1)
      expect(await metric(gw, 'ferry_drops_total', 'reason="rate_limited"')).toBe(0)
    } finally {
      await endClient(c)
    }
  }, 30_000)
})

describe('device rate - --device-hard-rate refuses (bundled gateway)', () => {
  let nats: NatsServer
  let gw: GatewayProcess

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', path.join(tempDir('ferry-device-hard-rate-'), 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--presence', 'off', '--device-max-rate', String(RATE), '--device-hard-rate', String(HARD)])
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.[Symbol.asyncDispose]()
  })

  it('device rate - an MQTT 5 publish past the hard rate gets DISCONNECT 0x96 (not stored); QoS 0 ones are dropped; 3.1.1 QoS 1 are only held', async () => {
    const v5 = await connectClient(gw.port, 'hard-v5', { protocolVersion: 5 })
    const v3 = await connectClient(gw.port, 'hard-v3')
    const q0 = await connectClient(gw.port, 'hard-q0', { protocolVersion: 5 })
    try {
      // A burst of 100 at once: HARD pass the hard bucket (acknowledged at the max rate); the next one
      // ends the connection with DISCONNECT 0x96 (PUBACK cannot carry 0x96 in MQTT 5), unacknowledged and not stored.
      const reason = new Promise<number>((resolve) => v5.once('disconnect', (p) => resolve(p.reasonCode ?? -1)))
      const acked: number[] = []
      for (let i = 0; i < 100; i++) v5.publish('hard/v5', JSON.stringify({ seq: i }), { qos: 1 }, (err) => {
          if (!err) acked.push(i)
        })
      expect(await reason).toBe(0x96)
      expect(await closedWithin(v5, 5000)).toBe(true)
      await endClient(v5)
      expect(acked.length).toBe(HARD)
      const refused = await metric(gw, 'ferry_drops_total', 'reason="rate_limited"')
      expect(refused).toBeGreaterThan(0)
      expect(refused).toBeLessThanOrEqual(100 - HARD)
      expect(await metric(gw, 'ferry_mqtt_refused_total', 'reason="rate_limited"')).toBe(refused)
      // Exactly the acknowledged ones are stored.
      expect(await storedOn(nats.url, 'hard.v5', acked.length, 10_000)).toBe(acked.length)

      // MQTT 3.1.1 QoS 1: nothing refused (no negative acknowledgement), everything stored.
      const r3 = await publishWindow(v3, 'hard/v3', 60, 60)
      expect(r3.refused).toEqual([])
      expect(r3.failed).toBe(0)
      expect(r3.ackedAt).toHaveLength(60)
      expect(await metric(gw, 'ferry_drops_total', 'reason="rate_limited"')).toBe(refused)

      // QoS 0 burst: what is past the hard rate is dropped and counted; stored + dropped = sent.
      const before = await metric(gw, 'ferry_drops_total', 'reason="rate_limited"')
      for (let i = 0; i < 200; i++) q0.publish('hard/q0', JSON.stringify({ seq: i }), { qos: 0 })
      // Settled: the drops plus what reached the stream account for all 200.
      const end = Date.now() + 15_000
      let dropped = 0
      let stored = 0
      while (Date.now() < end) {
        dropped = (await metric(gw, 'ferry_drops_total', 'reason="rate_limited"')) - before
        stored = (await readStream(nats.url)).filter((m) => m.subject.endsWith('hard.q0')).length
        if (dropped + stored === 200) break
        await new Promise((r) => setTimeout(r, 200))
      }
      expect(dropped).toBeGreaterThan(0)
      expect(dropped + stored).toBe(200)
      expect(await streamCount(nats.url)).toBe(acked.length + 60 + stored)
    } finally {
      await endClient(v5)
      await endClient(v3)
      await endClient(q0)
    }
  }, 30_000)
})
