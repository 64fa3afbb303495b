// End to end: MQTT devices → ring log → JetStream, exactly once, in order, JSON as CBOR.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor, subjectToTopic, unescapeHeaderValue } from '../../src/codec/index.js'
import type { Gateway } from '../../src/gateway.js'
import { startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

let nats: NatsServer
let gw: Gateway

beforeAll(async () => {
  nats = await startNats()
  gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'codec.rawTopics': 'raw/#,+/keep/+' })
})
afterAll(async () => {
  await gw?.close()
  await nats?.[Symbol.asyncDispose]()
})

describe('end to end', () => {
  it('forward - 10 devices x 1000 QoS 1 messages arrive once each, in per-device order, as CBOR', async () => {
    const port = gw.ingress.address.port
    const devices = Array.from({ length: 10 }, (_, i) => `dev-${i}`)
    const clients = await Promise.all(devices.map((d) => connectClient(port, d)))
    const acked = await Promise.all(clients.map((c, i) => publishSeries(c, devices[i]!, 1000)))
    expect(acked.flat()).toHaveLength(10_000)
    await Promise.all(clients.map(endClient))

    expect(await waitForCount(nats.url, 10_000)).toBe(10_000)
    const msgs = await readStream(nats.url)
    expect(msgs).toHaveLength(10_000)
    const seen = new Map<string, number[]>()
    const ids = new Set<string>()
    for (const m of msgs) {
      expect(m.headers['Content-Type']).toBe('application/cbor')
      const value = decodeCbor(m.data) as { device: string; seq: number; temp: number; ok: boolean }
      expect(value).toEqual({ device: value.device, seq: value.seq, temp: 20 + (value.seq % 10) / 10, ok: true })
      expect(m.headers['Ferry-Client']).toBe(value.device)
      expect(subjectToTopic('ferry', m.subject)).toBe(`devices/${value.device}/telemetry`)
      ids.add(m.headers['Nats-Msg-Id']!)
      const list = seen.get(value.device) ?? []
      list.push(value.seq)
      seen.set(value.device, list)
    }
    expect(ids.size).toBe(10_000)
    for (const d of devices) expect(seen.get(d)).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1))
    // 10,000 messages and a connected and a disconnected event per device.
    for (let i = 0; i < 100 && gw.metrics.forwarded.get() < 10_000 + 2 * devices.length; i++) await new Promise((r) => setTimeout(r, 50))
    expect(gw.metrics.forwarded.get()).toBe(10_000 + 2 * devices.length)
    // The same figures over HTTP, in Prometheus text format.
    const base = `http://127.0.0.1:${gw.http.address.port}`
    const text = await (await fetch(`${base}/metrics`)).text()
    expect(text).toContain('ferry_mqtt_received_messages_total{qos="1"} 10000')
    expect(text).toContain('ferry_forward_messages_total 10020')
    expect(text).toMatch(/# HELP ferry_log_fsync_latency_seconds .+\n# TYPE ferry_log_fsync_latency_seconds histogram/)
    expect(text).toMatch(/ferry_drops_total\{reason="discard_old"\} 0\n/)
    expect(text).not.toMatch(/ferry_drops_total\{[^}]*\} [1-9]/)
    expect(await (await fetch(`${base}/healthz`)).text()).toBe('ok\n')
  })

  it('forward - non-JSON payloads pass unchanged as application/octet-stream; topics with "." and spaces round-trip', async () => {
    const port = gw.ingress.address.port
    const c = await connectClient(port, 'bin-dev')
    const before = await waitForCount(nats.url, 0)
    const payload = Buffer.from([0, 1, 2, 255, 254])
    await c.publishAsync('site.a/dev 1/*raw>/', payload, { qos: 1 })
    await endClient(c)
    expect(await waitForCount(nats.url, before + 1)).toBe(before + 1)
    const last = (await readStream(nats.url)).at(-1)!
    expect(last.headers['Content-Type']).toBe('application/octet-stream')
    expect(Buffer.from(last.data)).toEqual(payload)
    expect(subjectToTopic('ferry', last.subject)).toBe('site.a/dev 1/*raw>/')
  })

  it('forward - a client id with CR/LF and non-ASCII is carried, escaped, in Ferry-Client', async () => {
    const c = await connectClient(gw.ingress.address.port, 'gerät\r\n%1')
    const before = await waitForCount(nats.url, 0)
    await c.publishAsync('odd/id', '{"x":1}', { qos: 1 })
    await endClient(c)
    expect(await waitForCount(nats.url, before + 1)).toBe(before + 1)
    const last = (await readStream(nats.url)).at(-1)!
    expect(last.headers['Ferry-Client']).toBe('gerät%0D%0A%251')
    expect(unescapeHeaderValue(last.headers['Ferry-Client']!)).toBe('gerät\r\n%1')
  })

  it('forward - JSON on topics matching --raw-topics passes unchanged', async () => {
    const c = await connectClient(gw.ingress.address.port, 'raw-dev')
    const before = await waitForCount(nats.url, 0)
    await c.publishAsync('raw/json', '{"a": 1}', { qos: 1 })
    await c.publishAsync('x/keep/y', '{"b": 2}', { qos: 1 })
    await c.publishAsync('x/other/y', '{"c": 3}', { qos: 1 })
    await endClient(c)
    expect(await waitForCount(nats.url, before + 3)).toBe(before + 3)
    const last3 = (await readStream(nats.url)).slice(-3)
    expect(last3.map((m) => [Buffer.from(m.data).toString(), m.headers['Content-Type']])).toEqual([
      ['{"a": 1}', 'application/octet-stream'],
      ['{"b": 2}', 'application/octet-stream'],
      [Buffer.from(last3[2]!.data).toString(), 'application/cbor'],
    ])
  })
})
