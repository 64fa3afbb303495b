// PUBLISH refusals per protocol version (issue 13, README "Refusals"): an MQTT 5 device gets the
// PUBACK reason code and keeps its connection; an MQTT 3.1.1 device refused by policy gets its
// PUBACK and the message is dropped (--refused-publish ack, the default), or is disconnected
// (--refused-publish disconnect); a full log under --discard new: 0x97 for v5, no PUBACK for 3.1.1.
// mqtt.js (v5 and 3.1.1), mosquitto_pub -V mqttv5 and paho 3.1.1. Bundled gateway, real nats-server.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import mqtt from 'mqtt'
import type { IClientOptions, MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { closedWithin, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { runPaho } from '../helpers/paho.js'
import { reapAtExit } from '../helpers/reap.js'
import { readStream, waitForCount } from '../helpers/stream.js'

const ACL = `pattern write devices/%u/#
pattern write $SYS/%u
pattern write devices/%u/${'x'.repeat(80)}
`

async function connected(port: number, opts: IClientOptions): Promise<MqttClient> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve())
    c.once('error', reject)
  })
  return c
}

/** mosquitto_pub -V mqttv5 -d: resolves with the PUBACK reason code it printed (undefined if none). */
function mosquittoPub(port: number, args: string[]): Promise<{ rc: number | undefined; out: string }> {
  const child = reapAtExit(spawn('mosquitto_pub', ['-d', '-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(port), '-q', '1', ...args], { stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()))
  const t = setTimeout(() => child.kill('SIGTERM'), 10_000)
  return new Promise((resolve) =>
    child.once('exit', () => {
      clearTimeout(t)
      const m = /received PUBACK \(Mid: \d+, RC:(\d+)\)/.exec(out)
      resolve({ rc: m ? Number(m[1]) : undefined, out })
    }),
  )
}

async function metric(g: GatewayProcess, name: string, labels = ''): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.httpPort}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) if (m[1]?.includes(labels) ?? labels === '') sum += Number(m[2])
  return sum
}

/** The PUBACK reason code mqtt.js reports for a QoS 1 publish (0 when acknowledged as success). */
async function pubackCode(c: MqttClient, topic: string, payload: string | Buffer, opts: mqtt.IClientPublishOptions = {}): Promise<number> {
  try {
    await c.publishAsync(topic, payload, { qos: 1, ...opts })
    return 0
  } catch (err) {
    const code = (err as { code?: unknown }).code
    if (typeof code === 'number') return code
    throw err
  }
}

describe('mqtt5 - PUBLISH refusals per protocol version (bundled gateway)', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let strict: GatewayProcess
  let dir: string

  beforeAll(async () => {
    nats = await startNats()
    dir = tempDir('ferry-v5pub-')
    const authFile = path.join(dir, 'devices.passwd')
    for (const d of ['dev1', 'dev3']) {
      const child = spawn(process.execPath, ['dist/ferry.cjs', 'passwd', authFile, d], { stdio: ['pipe', 'ignore', 'pipe'] })
      child.stdin.end('secret-1\n')
      await new Promise((r) => child.once('exit', r))
    }
    fs.writeFileSync(path.join(dir, 'acl'), ACL)
    const common = ['--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--auth-file', authFile, '--acl-file', path.join(dir, 'acl'), '--max-topic-bytes', '64']
    gw = await spawnGateway(['--data-dir', path.join(dir, 'data'), ...common])
    strict = await spawnGateway(['--data-dir', path.join(dir, 'data-strict'), ...common, '--refused-publish', 'disconnect'])
  }, 40_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await strict?.kill('SIGTERM')
    await nats?.stop()
  })

  const v5 = { protocolVersion: 5 as const, username: 'dev1', password: 'secret-1' }
  const v3 = { protocolVersion: 4 as const, username: 'dev3', password: 'secret-1' }

  it('refusals - a stored message is acknowledged 0x00, never 0x10 (no subscriber): mosquitto_pub and mqtt.js v5', async () => {
    const m = await mosquittoPub(gw.port, ['-i', 'dev1', '-u', 'dev1', '-P', 'secret-1', '-t', 'devices/dev1/ok', '-m', '{"a":1}'])
    expect(m.rc).toBe(0)
    const c = await connected(gw.port, { ...v5, clientId: 'dev1' })
    expect(await pubackCode(c, 'devices/dev1/ok', '{"a":2}')).toBe(0)
    await endClient(c)
  })

  it('refusals - ACL denial: v5 PUBACK 0x87 and connected (mqtt.js, mosquitto_pub); 3.1.1 acknowledged and dropped (mqtt.js, paho), counted', async () => {
    const dropsBefore = await metric(gw, 'ferry_drops_total', 'reason="refused"')
    const deniedBefore = await metric(gw, 'ferry_mqtt_acl_denials_total')
    const c5 = await connected(gw.port, { ...v5, clientId: 'dev1' })
    expect(await pubackCode(c5, 'devices/other/t', '{}')).toBe(0x87)
    expect(c5.connected).toBe(true)
    expect(await pubackCode(c5, 'devices/dev1/after', '{}')).toBe(0) // the device is not wedged
    await endClient(c5)
    const m = await mosquittoPub(gw.port, ['-i', 'dev1', '-u', 'dev1', '-P', 'secret-1', '-t', 'devices/other/t', '-m', '{}'])
    expect(m.rc).toBe(0x87)
    const c3 = await connected(gw.port, { ...v3, clientId: 'dev3' })
    expect(await pubackCode(c3, 'devices/other/t', '{}')).toBe(0)
    expect(c3.connected).toBe(true)
    await endClient(c3)
    const p = await runPaho({ port: gw.port, version: 4, clientId: 'dev3', username: 'dev3', password: 'secret-1', publish: [{ topic: 'devices/other/t', payload: '{}', qos: 1 }, { topic: 'devices/dev3/after', payload: '{}', qos: 1 }] })
    expect(p.published).toEqual([1, 2])
    expect(await metric(gw, 'ferry_drops_total', 'reason="refused"')).toBe(dropsBefore + 2)
    expect(await metric(gw, 'ferry_mqtt_acl_denials_total')).toBeGreaterThanOrEqual(deniedBefore + 4)
    const topics = (await readStream(nats.url)).map((s) => s.subject)
    expect(topics).not.toContain('ferry.up.devices.other.t')
  })

  it('refusals - a $ topic and a topic over --max-topic-bytes: v5 PUBACK 0x90 (mqtt.js, mosquitto_pub); 3.1.1 acknowledged and dropped', async () => {
    const c5 = await connected(gw.port, { ...v5, clientId: 'dev1' })
    expect(await pubackCode(c5, '$SYS/dev1', '{}')).toBe(0x90)
    expect(await pubackCode(c5, `devices/dev1/${'x'.repeat(80)}`, '{}')).toBe(0x90)
    expect(c5.connected).toBe(true)
    await endClient(c5)
    expect((await mosquittoPub(gw.port, ['-i', 'dev1', '-u', 'dev1', '-P', 'secret-1', '-t', '$SYS/dev1', '-m', '{}'])).rc).toBe(0x90)
    const c3 = await connected(gw.port, { ...v3, clientId: 'dev3' })
    expect(await pubackCode(c3, '$SYS/dev3', '{}')).toBe(0)
    expect(await pubackCode(c3, `devices/dev3/${'x'.repeat(80)}`, '{}')).toBe(0)
    expect(c3.connected).toBe(true)
    await endClient(c3)
  })

  it('refusals - Payload Format Indicator UTF-8 with a payload that is not: v5 PUBACK 0x99 (mqtt.js, mosquitto_pub)', async () => {
    const c5 = await connected(gw.port, { ...v5, clientId: 'dev1' })
    expect(await pubackCode(c5, 'devices/dev1/pfi', Buffer.from([0xff, 0xfe]), { properties: { payloadFormatIndicator: true } })).toBe(0x99)
    expect(await pubackCode(c5, 'devices/dev1/pfi', 'ok ✓', { properties: { payloadFormatIndicator: true } })).toBe(0)
    await endClient(c5)
    const file = path.join(dir, 'not-utf8')
    fs.writeFileSync(file, Buffer.from([0xc3, 0x28]))
    const m = await mosquittoPub(gw.port, ['-i', 'dev1', '-u', 'dev1', '-P', 'secret-1', '-t', 'devices/dev1/pfi', '-f', file, '-D', 'publish', 'payload-format-indicator', '1'])
    expect(m.rc).toBe(0x99)
  })

  it('refusals - --refused-publish disconnect: 3.1.1 is disconnected without PUBACK (mqtt.js); v5 still gets 0x87 and stays', async () => {
    const c3 = await connected(strict.port, { ...v3, clientId: 'dev3' })
    let acked = false
    c3.publish('devices/other/t', '{}', { qos: 1 }, (err) => (acked ||= !err))
    expect(await closedWithin(c3, 3000)).toBe(true)
    expect(acked).toBe(false)
    c3.end(true)
    const c5 = await connected(strict.port, { ...v5, clientId: 'dev1' })
    expect(await pubackCode(c5, 'devices/other/t', '{}')).toBe(0x87)
    expect(c5.connected).toBe(true)
    await endClient(c5)
  })

  it('topic alias - a PUBLISH by alias is stored under its full topic (mqtt.js v5; mosquitto_pub with -D publish topic-alias)', async () => {
    const c5 = await connected(gw.port, { ...v5, clientId: 'dev1' })
    await c5.publishAsync('devices/dev1/aliased', '{"n":1}', { qos: 1, properties: { topicAlias: 3 } })
    await c5.publishAsync('', '{"n":2}', { qos: 1, properties: { topicAlias: 3 } })
    await endClient(c5)
    expect((await mosquittoPub(gw.port, ['-i', 'dev1', '-u', 'dev1', '-P', 'secret-1', '-t', 'devices/dev1/aliased', '-m', '{"n":3}', '-D', 'publish', 'topic-alias', '2'])).rc).toBe(0)
    let stored: string[] = []
    for (let i = 0; i < 100 && stored.length < 3; i++) {
      stored = (await readStream(nats.url)).filter((s) => s.subject === 'ferry.up.devices.dev1.aliased').map((s) => s.subject)
      if (stored.length < 3) await new Promise((r) => setTimeout(r, 100))
    }
    expect(stored).toHaveLength(3)
  })
})

describe('mqtt5 - a full log under --discard new (bundled gateway, upstream down)', () => {
  let gw: GatewayProcess

  beforeAll(async () => {
    const dir = tempDir('ferry-v5full-')
    // Nothing is forwarded (no NATS server on that port): the log fills and --discard new refuses.
    gw = await spawnGateway(['--data-dir', path.join(dir, 'data'), '--nats-url', 'nats://127.0.0.1:1', '--mqtt-listen', '127.0.0.1:0', '--discard', 'new', '--log-max-bytes', '128KiB', '--log-segment-bytes', '64KiB', '--max-record-bytes', '16KiB'])
  }, 30_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
  })

  it('log full - v5 PUBACK 0x97 and the device keeps its connection (mqtt.js, mosquitto_pub); 3.1.1 gets no PUBACK and is disconnected (mqtt.js)', async () => {
    const c5 = await connected(gw.port, { protocolVersion: 5, clientId: 'full-5' })
    const payload = Buffer.alloc(8000, 0x61)
    let code = 0
    for (let i = 0; i < 40 && code === 0; i++) code = await pubackCode(c5, 'devices/full-5/t', payload)
    expect(code).toBe(0x97)
    expect(c5.connected).toBe(true)
    expect(await pubackCode(c5, 'devices/full-5/t', payload)).toBe(0x97)
    await endClient(c5)
    expect((await mosquittoPub(gw.port, ['-i', 'full-mosq', '-t', 'devices/full-mosq/t', '-m', 'x'.repeat(8000)])).rc).toBe(0x97)
    const c3 = await connected(gw.port, { protocolVersion: 4, clientId: 'full-3' })
    let acked = false
    c3.publish('devices/full-3/t', payload, { qos: 1 }, (err) => (acked ||= !err))
    expect(await closedWithin(c3, 3000)).toBe(true)
    expect(acked).toBe(false)
    c3.end(true)
  })
})

describe('mqtt5 - a message is measured as it goes upstream (bundled gateway)', () => {
  let nats: NatsServer
  let gw: GatewayProcess

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', path.join(tempDir('ferry-v5size-'), 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--max-record-bytes', '16KiB', '--presence', 'off'])
  }, 30_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('size - properties that grow as headers (escaping, base64) count against --max-record-bytes: v5 PUBACK 0x83, nothing stored; the same payload without them is stored (mqtt.js v5)', async () => {
    const c = await connected(gw.port, { protocolVersion: 5, clientId: 'size-5' })
    const payload = Buffer.alloc(12 * 1024, 0x61)
    // 3 KiB of control characters: 3 KiB in the log, 9 KiB escaped as a header.
    const responseTopic = '\x01'.repeat(3 * 1024)
    expect(await pubackCode(c, 'devices/size-5/t', payload, { properties: { responseTopic } })).toBe(0x83)
    expect(c.connected).toBe(true)
    expect(await pubackCode(c, 'devices/size-5/t', payload)).toBe(0)
    await endClient(c)
    // Forwarded once; the refused one never (the stored one is the only message on this stream).
    expect(await waitForCount(nats.url, 1)).toBe(1)
    const stored = await readStream(nats.url)
    expect(stored.map((m) => m.subject)).toEqual(['ferry.up.devices.size-5.t'])
  })
})
