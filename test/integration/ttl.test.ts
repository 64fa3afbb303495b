// Issue 16, test 3: time to live. Records past their --ttl are never forwarded and are counted in
// ferry_drops_total{reason="expired"} by class; an MQTT 5 Message Expiry shorter than the topic's
// TTL wins (mosquitto_pub -V mqttv5 and mqtt.js v5), a TTL shorter than the Message Expiry wins
// too. NATS is down while the records wait, then up. The bundled gateway, real nats-server.
import { spawn } from 'node:child_process'
import path from 'node:path'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { EXPIRES_HEADER } from '../../src/codec/index.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { reapAtExit } from '../helpers/reap.js'
import { readStream, waitForCount } from '../helpers/stream.js'

/** Sum of the series of `name` whose labels contain every one of `labels` (e.g. 'reason="expired"'). */
async function metric(g: GatewayProcess, name: string, ...labels: string[]): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.httpPort}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) if (labels.every((l) => (m[1] ?? '').includes(l))) sum += Number(m[2])
  return sum
}

/** Polls `read` until it returns `want` or `ms` pass; returns the last value. */
async function until(read: () => Promise<number>, want: number, ms: number): Promise<number> {
  const end = Date.now() + ms
  for (;;) {
    const v = await read()
    if (v === want || Date.now() > end) return v
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** Publishes `count` {device, seq} messages at QoS 1 on `topic`, one after the other; resolves once all are acknowledged. */
async function publishAll(c: MqttClient, device: string, topic: string, count: number, properties?: { messageExpiryInterval: number }): Promise<void> {
  for (let seq = 1; seq <= count; seq++) await c.publishAsync(topic, JSON.stringify({ device, seq }), { qos: 1, ...(properties ? { properties } : {}) })
}

function mosquittoPub(args: string[]): Promise<{ code: number | null; out: string }> {
  const child = reapAtExit(spawn('mosquitto_pub', args, { stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()))
  const t = setTimeout(() => child.kill('SIGTERM'), 10_000)
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(t)
      resolve({ code, out })
    }),
  )
}

const TTL_S = 2

describe('ttl - records past their time to live (bundled gateway)', () => {
  let nats: NatsServer
  let gw: GatewayProcess

  beforeAll(async () => {
    nats = await startNats()
    const dataDir = path.join(tempDir('ferry-ttl-'), 'data')
    gw = await spawnGateway(['--data-dir', dataDir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--presence', 'off', '--priority', 'alarms/#=high,telemetry/#=low', '--ttl', `telemetry/#=${TTL_S}s,status/#=1h`])
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.[Symbol.asyncDispose]()
  })

  it('ttl - expired records are not forwarded and are counted by class; the shorter of TTL and Message Expiry wins', async () => {
    // The stream exists (the gateway made it on start); then upstream goes down for the wait.
    await until(async () => (await metric(gw, 'ferry_forward_connected')) , 1, 10_000)
    await nats.stop()
    const v3 = await connectClient(gw.port, 'dev-v3')
    const v5 = await connectClient(gw.port, 'dev-v5', { protocolVersion: 5 })
    try {
      // Expire (low class, TTL 2 s): 3.1.1 telemetry, and MQTT 5 telemetry whose Message Expiry (1 h) is longer than the TTL.
      await publishAll(v3, 'dev-v3', 'telemetry/dev-v3', 20)
      await publishAll(v5, 'dev-v5', 'telemetry/dev-v5', 5, { messageExpiryInterval: 3600 })
      // Survive: 3.1.1 status (TTL 1 h), MQTT 5 status with a Message Expiry of 2 h (the TTL, 1 h, applies), alarms (no TTL).
      await publishAll(v3, 'dev-v3', 'status/dev-v3', 10)
      await publishAll(v5, 'dev-v5', 'status/dev-v5', 5, { messageExpiryInterval: 7200 })
      await publishAll(v3, 'dev-v3', 'alarms/dev-v3', 5)
      // A 3.1.1 publish refused by policy (a "$" topic) is acknowledged and dropped: its drop carries the class too.
      await v3.publishAsync('$reserved/dev-v3', 'x', { qos: 1 })
    } finally {
      await endClient(v3)
      await endClient(v5)
    }
    // Expires (normal class): a Message Expiry of 1 s, shorter than the topic's TTL (1 h), from a client we did not write.
    const mosq = await mosquittoPub(['-h', '127.0.0.1', '-p', String(gw.port), '-V', 'mqttv5', '-q', '1', '-i', 'dev-mosq', '-t', 'status/dev-mosq', '-m', JSON.stringify({ device: 'dev-mosq', seq: 1 }), '-D', 'publish', 'message-expiry-interval', '1'])
    expect(mosq.code, mosq.out).toBe(0)
    const publishedAt = Date.now()
    // Nothing is forwarded while NATS is down: the expiry times pass (wall clock, which is what they are measured on).
    await new Promise((r) => setTimeout(r, TTL_S * 1000 + 1000 - (Date.now() - publishedAt)))
    await nats.start()
    // The survivors arrive; the expired are counted, by class, and never sent.
    expect(await waitForCount(nats.url, 20, 30_000)).toBe(20)
    expect(await until(() => metric(gw, 'ferry_drops_total', 'reason="expired"'), 26, 20_000)).toBe(26)
    expect(await metric(gw, 'ferry_drops_total', 'reason="expired"', 'class="low"')).toBe(25)
    expect(await metric(gw, 'ferry_drops_total', 'reason="expired"', 'class="normal"')).toBe(1)
    expect(await metric(gw, 'ferry_drops_total', 'reason="refused"', 'class="normal"')).toBe(1)
    expect(await metric(gw, 'ferry_drops_total', 'reason="refused"')).toBe(1)
    // Logged with their seq ranges (by the forwarder, or by the log when it deleted whole expired segments).
    const expiredLines = gw.output().split('\n').filter((l) => l.includes('"level":"warn"') && l.includes('expired') && (l.includes('"seqs"') || l.includes('"firstSeq"')))
    expect(expiredLines.length, gw.output()).toBeGreaterThan(0)
    const stored = await readStream(nats.url)
    const topics = stored.map((m) => m.subject.split('.').slice(2).join('/'))
    const count = (t: string): number => topics.filter((x) => x === t).length
    expect(count('status/dev-v3')).toBe(10)
    expect(count('status/dev-v5')).toBe(5)
    expect(count('alarms/dev-v3')).toBe(5)
    expect(topics.filter((t) => t.startsWith('telemetry/') || t === 'status/dev-mosq')).toEqual([])
    expect(stored).toHaveLength(20)
    // A 3.1.1 message with a TTL carries its expiry (receive time + TTL) upstream; one without a TTL is as before.
    const status = stored.find((m) => m.subject.endsWith('status.dev-v3'))!
    const expires = Date.parse(status.headers[EXPIRES_HEADER] ?? '')
    expect(expires).toBeGreaterThan(publishedAt + 3_000_000)
    expect(expires).toBeLessThanOrEqual(Date.now() + 3_600_000)
    // MQTT 5 Message Expiry of 2 h: the TTL of 1 h came first.
    const statusV5 = stored.find((m) => m.subject.endsWith('status.dev-v5'))!
    expect(Date.parse(statusV5.headers[EXPIRES_HEADER] ?? '')).toBeLessThanOrEqual(Date.now() + 3_600_000)
    expect(stored.find((m) => m.subject.endsWith('alarms.dev-v3'))!.headers[EXPIRES_HEADER]).toBeUndefined()
  }, 40_000)
})
