// Requests from devices to cloud services through the bundled gateway: a real nats-server, a small
// nats.js service on ferry.svc.config.get, and devices on mqtt.js, Paho (python3) and mosquitto_rr.
import { execFile } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { connect, headers } from '@nats-io/transport-node'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startFleet } from '../../firmware-sim/index.js'
import { until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

/** Debian's python3, which has python3-paho-mqtt (a pyenv python3 on PATH may not). */
const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'

interface Got {
  readonly topic: string
  readonly payload: string
  readonly at: number
  readonly props?: Record<string, unknown>
}

/** An mqtt.js device that records every message it receives. */
async function device(port: number, id: string, version: 4 | 5 = 4): Promise<{ c: MqttClient; got: Got[] }> {
  const c = await connectClient(port, id, { protocolVersion: version })
  const got: Got[] = []
  c.on('message', (topic, payload, packet) => got.push({ topic, payload: payload.toString(), at: performance.now(), ...(packet.properties ? { props: packet.properties } : {}) }))
  return { c, got }
}

function run(cmd: string, args: string[], timeoutMs = 15_000): Promise<{ code: number; stdout: string; stderr: string }> {
  return new Promise((resolve) => {
    execFile(cmd, args, { timeout: timeoutMs }, (err, stdout, stderr) => resolve({ code: err ? ((err as { code?: number }).code ?? 1) : 0, stdout, stderr }))
  })
}

/** A Paho device: connects as `id`, publishes one request, prints `<topic> <payload>` of the first message, or TIMEOUT. */
function pahoRequest(port: number, id: string, topic: string, version: 'MQTTv311' | 'MQTTv5', responseTopic?: string): Promise<{ code: number; stdout: string; stderr: string }> {
  const script = `
import sys, threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
v5 = ${version === 'MQTTv5' ? 'True' : 'False'}
done = threading.Event()
def on_message(c, u, m):
    props = ''
    if v5 and m.properties is not None:
        cd = getattr(m.properties, 'CorrelationData', b'')
        up = dict(getattr(m.properties, 'UserProperty', []))
        props = ' cd=%s status=%s' % (cd.decode(), up.get('Ferry-Status'))
    print(m.topic, m.payload.decode() + props, flush=True)
    done.set()
c = mqtt.Client(client_id=${JSON.stringify(id)}, protocol=mqtt.${version})
c.on_message = on_message
c.connect('127.0.0.1', ${port}, 30)
c.loop_start()
if v5:
    p = Properties(PacketTypes.PUBLISH)
    p.ResponseTopic = ${JSON.stringify(responseTopic ?? '')}
    p.CorrelationData = b'paho-cd-1'
    c.subscribe(${JSON.stringify(responseTopic ?? '')}, qos=1)
    c.publish(${JSON.stringify(topic)}, b'{}', qos=1, properties=p)
else:
    c.publish(${JSON.stringify(topic)}, b'{}', qos=1)
if not done.wait(10):
    print('TIMEOUT', flush=True)
c.loop_stop()
c.disconnect()
`
  return run(PYTHON, ['-c', script])
}

/** Value of a counter sample in the gateway's /metrics, 0 when absent. */
async function metric(gw: GatewayProcess, sample: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
  const line = text.split('\n').find((l) => l.startsWith(sample + ' '))
  return line ? Number(line.split(' ')[1]) : 0
}

describe('requests from devices', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let nc: NatsConnection
  const subs: Subscription[] = []
  /** Ferry-Device of every call the services got. */
  const calls: string[] = []
  const dataDir = tempDir('ferry-requests-')

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', dataDir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--request-timeout-ms', '600', '--request-max-pending-per-device', '2'])
    nc = await connect({ servers: nats.url })
    // The README's service, near enough: answers config.get with who asked and what.
    subs.push(
      nc.subscribe('ferry.svc.config.get', {
        callback: (_err, m) => {
          const device = m.headers?.get('Ferry-Device') ?? ''
          calls.push(device)
          const h = headers()
          h.set('Content-Type', 'application/json')
          m.respond(JSON.stringify({ device, asked: m.string() }), { headers: h })
        },
      }),
    )
    // A service that never answers.
    subs.push(
      nc.subscribe('ferry.svc.slow.get', {
        callback: (_err, m) => {
          calls.push(`slow:${m.headers?.get('Ferry-Device') ?? ''}`)
        },
      }),
    )
    await nc.flush()
    // The downlink (which makes the requests) connects after MQTT listens: wait until a request gets through.
    const probe = await device(gw.port, 'probe')
    expect(
      await until(async () => {
        probe.c.publish('requests/probe/config/get/p', '', { qos: 0 })
        return until(() => probe.got.some((g) => g.topic.endsWith('/200')), 300)
      }),
    ).toBe(true)
    await endClient(probe.c)
  }, 30_000)

  afterAll(async () => {
    for (const s of subs) s.unsubscribe()
    await nc?.close()
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('requests - 3.1.1 round trip with mqtt.js: PUBACK at once, answer at QoS 1 on devices/<id>/requests/reply/<cid>/200', async () => {
    const { c, got } = await device(gw.port, 'req-1')
    await c.publishAsync('requests/req-1/config/get/c1', '{"v":1}', { qos: 1 })
    expect(await until(() => got.length > 0)).toBe(true)
    expect(got[0]).toMatchObject({ topic: 'devices/req-1/requests/reply/c1/200' })
    expect(JSON.parse(got[0]!.payload)).toEqual({ device: 'req-1', asked: '{"v":1}' })
    await endClient(c)
  })

  it('requests - 3.1.1 round trip with Paho (python3)', async () => {
    const r = await pahoRequest(gw.port, 'req-paho', 'requests/req-paho/config/get/42', 'MQTTv311')
    expect(r.stderr).toBe('')
    const [topic, ...rest] = r.stdout.trim().split(' ')
    expect(topic).toBe('devices/req-paho/requests/reply/42/200')
    expect(JSON.parse(rest.join(' '))).toEqual({ device: 'req-paho', asked: '{}' })
  })

  it('requests - no responders: the device gets "503 no responders" at once', async () => {
    const { c, got } = await device(gw.port, 'req-nores')
    const t0 = performance.now()
    c.publish('requests/req-nores/nosuch/get/c2', '', { qos: 1 })
    expect(await until(() => got.length > 0)).toBe(true)
    expect(got[0]).toMatchObject({ topic: 'devices/req-nores/requests/reply/c2/503', payload: '503 no responders' })
    expect(got[0]!.at - t0).toBeLessThan(500) // well short of --request-timeout-ms 600 plus delivery
    await endClient(c)
  })

  it('requests - timeout: the device gets "504 service did not answer" after --request-timeout-ms', async () => {
    const { c, got } = await device(gw.port, 'req-slow')
    const t0 = performance.now()
    c.publish('requests/req-slow/slow/get/c3', 'x', { qos: 1 })
    expect(await until(() => got.length > 0)).toBe(true)
    expect(got[0]).toMatchObject({ topic: 'devices/req-slow/requests/reply/c3/504', payload: '504 service did not answer' })
    expect(got[0]!.at - t0).toBeGreaterThanOrEqual(550)
    expect(calls).toContain('slow:req-slow')
    await endClient(c)
  })

  it('requests - a device cannot ask on behalf of another: 403, and the service is not called', async () => {
    const { c, got } = await device(gw.port, 'req-a')
    const before = calls.length
    await c.publishAsync('requests/req-b/config/get/c4', '', { qos: 1 })
    expect(await until(() => got.length > 0)).toBe(true)
    expect(got[0]).toMatchObject({ topic: 'devices/req-a/requests/reply/c4/403', payload: '403 forbidden: the topic names another device' })
    expect(calls.slice(before)).toEqual([])
    expect(await metric(gw, 'ferry_device_requests_total{result="forbidden"}')).toBeGreaterThanOrEqual(1)
    await endClient(c)
  })

  it('requests - pending bound per device: the third of three slow requests gets 429 at once, the others 504', async () => {
    const { c, got } = await device(gw.port, 'req-busy')
    for (const id of ['b1', 'b2', 'b3']) c.publish(`requests/req-busy/slow/get/${id}`, '', { qos: 1 })
    expect(await until(() => got.length >= 3)).toBe(true)
    const byId = Object.fromEntries(got.map((g) => [g.topic.split('/')[4], g.topic.split('/')[5]]))
    expect(byId).toEqual({ b1: '504', b2: '504', b3: '429' })
    expect(got.find((g) => g.topic.includes('/b3/'))!.payload).toBe('429 too many pending requests')
    expect(got[0]!.topic).toContain('/b3/') // answered before the others timed out
    await endClient(c)
  })

  it('requests - do not go through the ring log: nothing on the telemetry stream for request topics', async () => {
    const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
    // Only the probe and tests above published, all on request topics: nothing appended but presence events.
    expect(text).toMatch(/ferry_device_requests_total\{result="ok"\} [1-9]/)
    const received = text.split('\n').filter((l) => l.startsWith('ferry_mqtt_received_messages_total{'))
    expect(received.map((l) => Number(l.split(' ')[1])).reduce((a, b) => a + b, 0)).toBe(0)
  })

  it('requests - pending bound for all devices together (--request-max-pending): 429 for the device over it', async () => {
    const gw2 = await spawnGateway(['--data-dir', tempDir('ferry-requests-total-'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--request-timeout-ms', '800', '--request-max-pending', '1', '--subject-prefix', 'ferry'])
    try {
      const a = await device(gw2.port, 'tot-a')
      const b = await device(gw2.port, 'tot-b')
      // The downlink connects after MQTT listens (until then: 503 at once). A slow request that gets no
      // answer within 300 ms holds the only slot (for --request-timeout-ms 800).
      let holding = false
      for (let i = 0; i < 50 && !holding; i++) {
        a.got.length = 0
        a.c.publish(`requests/tot-a/slow/get/${i}`, '', { qos: 1 })
        holding = !(await until(() => a.got.length > 0, 300))
      }
      expect(holding).toBe(true)
      b.c.publish('requests/tot-b/config/get/1', '', { qos: 1 })
      expect(await until(() => b.got.length > 0)).toBe(true)
      expect(b.got[0]).toMatchObject({ topic: 'devices/tot-b/requests/reply/1/429', payload: '429 too many pending requests' })
      await endClient(a.c)
      await endClient(b.c)
    } finally {
      await gw2.kill('SIGTERM')
    }
  })

  it('requests - firmware-sim devices fetch their configuration at start (--fetch-config)', async () => {
    const fleet = startFleet({ url: `mqtt://127.0.0.1:${gw.port}`, devices: 3, ratePerDevice: 0.1, idPrefix: 'cfg', fetchConfig: true, rampMs: 100 })
    try {
      expect(await until(() => fleet.stats().configFetched === 3)).toBe(true)
      expect(fleet.stats().configErrors).toBe(0)
      for (const id of fleet.deviceIds) expect(calls).toContain(id)
    } finally {
      await fleet.close()
    }
  })

  it('requests - v5 round trip with mqtt.js: answer on the Response Topic with the Correlation Data and Ferry-Status', async () => {
    const { c, got } = await device(gw.port, 'req-v5', 5)
    await c.publishAsync('requests/req-v5/config/get', '{"v":5}', { qos: 1, properties: { responseTopic: 'devices/req-v5/answers', correlationData: Buffer.from('cd-1') } })
    expect(await until(() => got.length > 0)).toBe(true)
    expect(got[0]!.topic).toBe('devices/req-v5/answers')
    expect(JSON.parse(got[0]!.payload)).toEqual({ device: 'req-v5', asked: '{"v":5}' })
    expect(Buffer.from(got[0]!.props!['correlationData'] as Buffer).toString()).toBe('cd-1')
    expect(got[0]!.props!['userProperties']).toMatchObject({ 'Ferry-Status': '200 OK' })
    await endClient(c)
  })

  it('requests - v5 with mosquitto_rr: round trip, and no responders answered 503', async () => {
    const ok = await run('mosquitto_rr', ['-V', 'mqttv5', '-p', String(gw.port), '-i', 'req-rr', '-t', 'requests/req-rr/config/get', '-e', 'devices/req-rr/answers', '-m', 'hi', '-W', '5'])
    expect(JSON.parse(ok.stdout.trim())).toEqual({ device: 'req-rr', asked: 'hi' })
    const nores = await run('mosquitto_rr', ['-V', 'mqttv5', '-p', String(gw.port), '-i', 'req-rr', '-t', 'requests/req-rr/nosuch/get', '-e', 'devices/req-rr/answers', '-m', 'hi', '-W', '5'])
    expect(nores.stdout.trim()).toBe('503 no responders')
  })

  it('requests - v5 with Paho: Correlation Data and Ferry-Status come back; another device\'s topic gets 403', async () => {
    const ok = await pahoRequest(gw.port, 'req-paho5', 'requests/req-paho5/config/get', 'MQTTv5', 'devices/req-paho5/answers')
    expect(ok.stdout).toMatch(/^devices\/req-paho5\/answers \{.*"device":"req-paho5".*\} cd=paho-cd-1 status=200 OK/)
    const other = await pahoRequest(gw.port, 'req-paho5', 'requests/req-other/config/get', 'MQTTv5', 'devices/req-paho5/answers')
    expect(other.stdout.trim()).toBe('devices/req-paho5/answers 403 forbidden: the topic names another device cd=paho-cd-1 status=403 forbidden: the topic names another device')
  })

  it('requests - v5 timeout and pending bound answer with Ferry-Status 504 and 429', async () => {
    const { c, got } = await device(gw.port, 'req-v5-busy', 5)
    for (const id of ['1', '2', '3']) c.publish('requests/req-v5-busy/slow/get', '', { qos: 1, properties: { responseTopic: 'devices/req-v5-busy/answers', correlationData: Buffer.from(id) } })
    expect(await until(() => got.length >= 3)).toBe(true)
    const byCd = Object.fromEntries(got.map((g) => [Buffer.from(g.props!['correlationData'] as Buffer).toString(), (g.props!['userProperties'] as Record<string, string>)['Ferry-Status']]))
    expect(byCd).toEqual({ '1': '504 service did not answer', '2': '504 service did not answer', '3': '429 too many pending requests' })
    await endClient(c)
  })

  // Last: it stops the NATS server.
  it('requests - upstream down: "503 upstream unavailable" at once (3.1.1 and v5)', async () => {
    await nc.close()
    await nats.stop()
    const { c, got } = await device(gw.port, 'req-down')
    // The downlink notices the disconnect within moments; until then a request may still wait for its timeout.
    expect(
      await until(async () => {
        got.length = 0
        const t0 = performance.now()
        c.publish('requests/req-down/config/get/d', '', { qos: 1 })
        return (await until(() => got.length > 0, 2000)) && got[0]!.topic.endsWith('/503') && got[0]!.at - t0 < 300
      }),
    ).toBe(true)
    expect(got[0]!.payload).toBe('503 upstream unavailable')
    const v5 = await device(gw.port, 'req-down5', 5)
    v5.c.publish('requests/req-down5/config/get', '', { qos: 1, properties: { responseTopic: 'devices/req-down5/answers', correlationData: Buffer.from('d') } })
    expect(await until(() => v5.got.length > 0, 2000)).toBe(true)
    expect(v5.got[0]!.props!['userProperties']).toMatchObject({ 'Ferry-Status': '503 upstream unavailable' })
    await endClient(v5.c)
    await endClient(c)
  })
})

describe('requests from devices - ACL', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let nc: NatsConnection
  const calls: string[] = []
  const dir = tempDir('ferry-requests-acl-')

  beforeAll(async () => {
    nats = await startNats()
    const acl = path.join(dir, 'acl')
    // Anonymous devices (rules before any "user" line; patterns apply to identified clients only):
    // requests to config only, answers readable on the 3.1.1 reply topic only.
    const rules = ['acl-ok', 'acl-no', 'acl-v5'].map((id) => `topic write requests/${id}/config/#\ntopic read devices/${id}/requests/reply/#\n`)
    fs.writeFileSync(acl, rules.join(''))
    gw = await spawnGateway(['--data-dir', path.join(dir, 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--allow-anonymous', '--acl-file', acl])
    nc = await connect({ servers: nats.url })
    nc.subscribe('ferry.svc.>', {
      callback: (_err, m) => {
        calls.push(m.subject)
        m.respond('ok')
      },
    })
    await nc.flush()
  }, 30_000)

  afterAll(async () => {
    await nc?.close()
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('requests - the ACL allows a request topic: answered', async () => {
    const { c, got } = await device(gw.port, 'acl-ok')
    expect(
      await until(async () => {
        c.publish('requests/acl-ok/config/get/1', '', { qos: 0 })
        return until(() => got.some((g) => g.topic === 'devices/acl-ok/requests/reply/1/200'), 300)
      }),
    ).toBe(true)
    await endClient(c)
  })

  it('requests - a request topic the ACL does not let the device write: refused, the service is not called (3.1.1)', async () => {
    const { c, got } = await device(gw.port, 'acl-no')
    const before = calls.length
    c.publish('requests/acl-no/secrets/get/1', '', { qos: 1 })
    // 3.1.1: refused as any publish the ACL denies (today: the connection is closed; see --refused-publish).
    await new Promise<void>((resolve) => {
      const t = setTimeout(resolve, 1500)
      c.once('close', () => (clearTimeout(t), resolve()))
    })
    expect(got).toEqual([])
    expect(calls.slice(before)).toEqual([])
    await endClient(c)
  })

  it('requests - a request topic the ACL does not let a v5 device write: PUBACK 0x87, the service is not called', async () => {
    const { c, got } = await device(gw.port, 'acl-v5', 5)
    const before = calls.length
    await expect(c.publishAsync('requests/acl-v5/secrets/get', '', { qos: 1, properties: { responseTopic: 'devices/acl-v5/requests/reply/x', correlationData: Buffer.from('x') } })).rejects.toThrow()
    await new Promise((r) => setTimeout(r, 300)) // an answer, were one sent, would be here by now
    expect(got).toEqual([])
    expect(calls.slice(before)).toEqual([])
    await endClient(c)
  })

  it('requests - an answer topic the device may not read: not asked, counted result="acl" (3.1.1 and v5)', async () => {
    const before = calls.length
    const denied0 = await metric(gw, 'ferry_device_requests_total{result="acl"}')
    // v5: a Response Topic outside devices/<id>/requests/reply/# is not readable under this ACL.
    const { c, got } = await device(gw.port, 'acl-v5', 5)
    await c.publishAsync('requests/acl-v5/config/get', '', { qos: 1, properties: { responseTopic: 'elsewhere/acl-v5', correlationData: Buffer.from('x') } })
    expect(await until(async () => (await metric(gw, 'ferry_device_requests_total{result="acl"}')) === denied0 + 1)).toBe(true)
    expect(got).toEqual([])
    await endClient(c)
    // 3.1.1 under a second gateway whose ACL lets devices write requests but read nothing.
    const acl = path.join(dir, 'acl-noread')
    fs.writeFileSync(acl, 'topic write requests/acl-noread/#\n')
    const gw2 = await spawnGateway(['--data-dir', path.join(dir, 'data2'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--allow-anonymous', '--acl-file', acl, '--subject-prefix', 'ferry2'])
    try {
      const { c, got } = await device(gw2.port, 'acl-noread')
      await c.publishAsync('requests/acl-noread/config/get/1', '', { qos: 1 })
      expect(await until(async () => (await metric(gw2, 'ferry_device_requests_total{result="acl"}')) === 1)).toBe(true)
      expect(got).toEqual([])
      expect(c.connected).toBe(true)
      await endClient(c)
    } finally {
      await gw2.kill('SIGTERM')
    }
    expect(calls.slice(before)).toEqual([])
  })
})
