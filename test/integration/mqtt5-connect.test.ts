// MQTT 5 CONNECT/CONNACK (issue 13, "MQTT 5 ingress"): the properties Ferry advertises, Session
// Expiry, Server Keep Alive, Assigned Client Identifier, Receive Maximum, Maximum Packet Size, and
// the v5 reason codes of refusals, each with mqtt.js (protocolVersion 5) and with a client we did
// not write (Python paho-mqtt, mosquitto_pub/_sub -V mqttv5). The bundled gateway, real nats-server.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import mqtt from 'mqtt'
import type { IClientOptions, MqttClient } from 'mqtt'
import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { packetLog } from '../helpers/packets.js'
import { runPaho } from '../helpers/paho.js'
import { reapAtExit } from '../helpers/reap.js'

interface Connacked {
  readonly client?: MqttClient
  /** CONNACK reason code (3.1.1: return code). */
  readonly code: number | 'closed'
  readonly properties: Record<string, unknown>
}

/** Connects with mqtt.js; resolves with the CONNACK code and properties (the client when accepted). */
function tryConnect(port: number, opts: IClientOptions): Promise<Connacked> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  return new Promise((resolve) => {
    c.once('packetreceive', (p) => {
      if (p.cmd !== 'connack') return
      const code = p.reasonCode ?? p.returnCode ?? -1
      const properties = (p.properties ?? {}) as Record<string, unknown>
      if (code === 0) c.once('connect', () => resolve({ client: c, code, properties }))
      else {
        c.end(true)
        resolve({ code, properties })
      }
    })
    c.once('close', () => resolve({ code: 'closed', properties: {} }))
  })
}

/** Runs a mosquitto client to completion. */
function mosquitto(cmd: 'mosquitto_pub' | 'mosquitto_sub', args: string[], timeoutMs = 10_000): Promise<{ code: number | null; out: string }> {
  const child = reapAtExit(spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  child.stderr!.on('data', (b: Buffer) => (out += b.toString()))
  const t = setTimeout(() => child.kill('SIGTERM'), timeoutMs)
  return new Promise((resolve) =>
    child.once('exit', (code) => {
      clearTimeout(t)
      resolve({ code, out })
    }),
  )
}

/** A raw MQTT 5 connection (for what client libraries do not do: break the Receive Maximum with QoS 2). */
async function rawV5(port: number, clientId: string): Promise<{ send(p: Packet): void; sendMany(ps: Packet[]): void; next(match: (p: Packet) => boolean, ms?: number): Promise<Packet>; close(): void }> {
  const sock = net.connect(port, '127.0.0.1')
  const { parse, push, next } = packetLog(5, 5000)
  sock.on('data', (b: Buffer) => parse(b))
  sock.on('close', () => push({ cmd: 'disconnect', reasonCode: -1 } as unknown as Packet))
  const gen = (p: Packet): Buffer => mqttPacket.generate(p, { protocolVersion: 5 })
  sock.write(gen({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 5, clientId, clean: true, keepalive: 60 }))
  await next((p) => p.cmd === 'connack')
  return { send: (p) => void sock.write(gen(p)), sendMany: (ps) => void sock.write(Buffer.concat(ps.map(gen))), next, close: () => sock.destroy() }
}

describe('mqtt5 - CONNECT and CONNACK (bundled gateway)', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let authGw: GatewayProcess
  let dir: string

  beforeAll(async () => {
    nats = await startNats()
    dir = tempDir('ferry-v5-')
    gw = await spawnGateway(['--data-dir', path.join(dir, 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--max-packet-bytes', '4KiB', '--max-inflight-in', '5', '--max-session-expiry', '3', '--max-keepalive', '600', '--max-topic-alias', '7'])
    const authFile = path.join(dir, 'devices.passwd')
    const child = spawn(process.execPath, ['dist/ferry.cjs', 'passwd', authFile, 'dev1'], { stdio: ['pipe', 'ignore', 'pipe'] })
    child.stdin.end('secret-1\n')
    await new Promise((r) => child.once('exit', r))
    expect(fs.existsSync(authFile)).toBe(true)
    authGw = await spawnGateway(['--data-dir', path.join(dir, 'data2'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--auth-file', authFile])
  }, 40_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await authGw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('mqtt5 - the CONNACK advertises Maximum Packet Size (--max-packet-bytes), Receive Maximum (--max-inflight-in), Topic Alias Maximum and the capped Session Expiry (mqtt.js and paho)', async () => {
    const r = await tryConnect(gw.port, { protocolVersion: 5, clientId: 'v5-props', properties: { sessionExpiryInterval: 3600 } })
    expect(r.code).toBe(0)
    expect(r.properties).toMatchObject({ maximumPacketSize: 4096, receiveMaximum: 5, topicAliasMaximum: 7, sessionExpiryInterval: 3 })
    await endClient(r.client!)
    const p = await runPaho({ port: gw.port, version: 5, clientId: 'v5-props-paho', sessionExpiry: 0xffffffff })
    expect(p.connack).toBe(0)
    expect(p.connackProps).toMatchObject({ MaximumPacketSize: 4096, ReceiveMaximum: 5, TopicAliasMaximum: 7, SessionExpiryInterval: 3 })
  })

  it('mqtt5 - an empty client id gets an Assigned Client Identifier (mqtt.js and paho)', async () => {
    const r = await tryConnect(gw.port, { protocolVersion: 5, clientId: '' })
    expect(r.code).toBe(0)
    expect(typeof r.properties.assignedClientIdentifier).toBe('string')
    expect((r.properties.assignedClientIdentifier as string).length).toBeGreaterThan(0)
    await endClient(r.client!)
    const p = await runPaho({ port: gw.port, version: 5, clientId: '' })
    expect(p.connack).toBe(0)
    expect(typeof p.connackProps.AssignedClientIdentifier).toBe('string')
  })

  it('mqtt5 - keepalive 0 or above --max-keepalive gets Server Keep Alive, not a refusal (mqtt.js and paho)', async () => {
    for (const keepalive of [0, 7200]) {
      const r = await tryConnect(gw.port, { protocolVersion: 5, clientId: `v5-ka-${keepalive}`, keepalive })
      expect(r.code).toBe(0)
      expect(r.properties.serverKeepAlive).toBe(600)
      await endClient(r.client!)
      const p = await runPaho({ port: gw.port, version: 5, clientId: `v5-ka-paho-${keepalive}`, keepalive })
      expect(p.connack).toBe(0)
      expect(p.connackProps.ServerKeepAlive).toBe(600)
    }
    // Within the bound: no Server Keep Alive.
    const r = await tryConnect(gw.port, { protocolVersion: 5, clientId: 'v5-ka-ok', keepalive: 30 })
    expect(r.properties.serverKeepAlive).toBeUndefined()
    await endClient(r.client!)
  })

  it('mqtt5 - Session Expiry Interval is honoured and capped: the session outlives the connection for the capped interval only (mosquitto_sub, mqtt.js)', async () => {
    // mosquitto_sub asks for an hour (-x 3600), subscribes, and leaves; --max-session-expiry is 3 s.
    const m = await mosquitto('mosquitto_sub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(gw.port), '-i', 'v5-sess', '-c', '-x', '3600', '-t', 'sess/#', '-W', '1'])
    expect(m.out).toContain('Timed out')
    const again = mqtt.connect(`mqtt://127.0.0.1:${gw.port}`, { protocolVersion: 5, clientId: 'v5-sess', clean: false, reconnectPeriod: 0, properties: { sessionExpiryInterval: 3 } })
    const present = await new Promise<boolean>((resolve) => again.once('connect', (ack) => resolve(ack.sessionPresent)))
    expect(present).toBe(true)
    await endClient(again)
    await new Promise((r) => setTimeout(r, 3500)) // the expiry itself is what is tested
    const later = mqtt.connect(`mqtt://127.0.0.1:${gw.port}`, { protocolVersion: 5, clientId: 'v5-sess', clean: false, reconnectPeriod: 0 })
    const presentLater = await new Promise<boolean>((resolve) => later.once('connect', (ack) => resolve(ack.sessionPresent)))
    expect(presentLater).toBe(false)
    await endClient(later)
  })

  it('mqtt5 - more unacknowledged QoS 2 PUBLISHes than the Receive Maximum (no PUBREL) get DISCONNECT 0x93', async () => {
    const c = await rawV5(gw.port, 'v5-recvmax')
    const burst: Packet[] = []
    for (let i = 1; i <= 40; i++) burst.push({ cmd: 'publish', topic: 'devices/v5-recvmax/t', payload: Buffer.from('{"i":1}'), qos: 2, messageId: i, retain: false, dup: false })
    c.sendMany(burst)
    const d = (await c.next((p) => p.cmd === 'disconnect')) as mqttPacket.IDisconnectPacket
    expect(d.reasonCode).toBe(0x93)
    c.close()
    expect(gw.child.exitCode).toBe(null)
  })

  it('mqtt5 - a packet above Maximum Packet Size gets DISCONNECT 0x95 (mqtt.js); mosquitto_pub honours the advertised size', async () => {
    const r = await tryConnect(gw.port, { protocolVersion: 5, clientId: 'v5-big' })
    const c = r.client!
    const disconnected = new Promise<number | undefined>((resolve) => c.once('disconnect', (p) => resolve(p.reasonCode)))
    c.publish('devices/v5-big/t', Buffer.alloc(8192, 1), { qos: 1 })
    expect(await disconnected).toBe(0x95)
    c.end(true)
    // mosquitto_pub read the Maximum Packet Size from the CONNACK and does not send the PUBLISH at all.
    const m = await mosquitto('mosquitto_pub', ['-d', '-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(gw.port), '-i', 'v5-big-mosq', '-t', 'devices/x/t', '-q', '1', '-m', 'x'.repeat(8192)])
    expect(m.out).toContain('received CONNACK (0)')
    expect(m.out).not.toContain('sending PUBLISH')
    expect(gw.child.exitCode).toBe(null)
  })

  it('mqtt5 - a message larger than the subscriber\'s Maximum Packet Size is not sent to it (mosquitto_sub and mqtt.js)', async () => {
    const sub = await tryConnect(gw.port, { protocolVersion: 5, clientId: 'v5-small-sub', properties: { maximumPacketSize: 200 } })
    const got: string[] = []
    sub.client!.on('message', (topic) => got.push(topic))
    await sub.client!.subscribeAsync('local/#', { qos: 0 })
    const mosq = mosquitto('mosquitto_sub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(gw.port), '-i', 'v5-small-mosq', '-t', 'local/#', '-D', 'connect', 'maximum-packet-size', '200', '-C', '1', '-v'])
    await new Promise((r) => setTimeout(r, 500)) // mosquitto_sub has no ready signal; its subscription must exist
    const pub = await tryConnect(gw.port, { protocolVersion: 5, clientId: 'v5-small-pub' })
    await pub.client!.publishAsync('local/big', Buffer.alloc(1000, 65), { qos: 1 })
    await pub.client!.publishAsync('local/small', 'x', { qos: 1 })
    const m = await mosq
    expect(m.out.trim()).toBe('local/small x')
    await new Promise((r) => setTimeout(r, 200))
    expect(got).toEqual(['local/small'])
    await endClient(pub.client!)
    await endClient(sub.client!)
  })

  it('mqtt5 - a subscriber announcing Receive Maximum 1 gets all of a burst of 20 QoS 1 messages, in order, and stays connected (mosquitto_sub)', async () => {
    // The gateway sends it one unacknowledged PUBLISH at a time [MQTT-3.3.4-7] (test/unit/aedes-seam.test.ts
    // shows the window on the wire); here a client we did not write gets the whole burst through it.
    const mosq = mosquitto('mosquitto_sub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(gw.port), '-i', 'v5-rm1-mosq', '-q', '1', '-t', 'rm1/#', '-D', 'connect', 'receive-maximum', '1', '-C', '20', '-v'])
    await new Promise((r) => setTimeout(r, 500)) // mosquitto_sub has no ready signal; its subscription must exist
    const pub = await tryConnect(gw.port, { protocolVersion: 4, clientId: 'v5-rm1-pub' })
    await Promise.all(Array.from({ length: 20 }, (_, i) => pub.client!.publishAsync(`rm1/${i}`, String(i), { qos: 1 })))
    const m = await mosq
    expect(m.code).toBe(0)
    expect(m.out.trim().split('\n')).toEqual(Array.from({ length: 20 }, (_, i) => `rm1/${i} ${i}`))
    await endClient(pub.client!)
  })

  it('mqtt5 - refusals carry v5 reason codes and a Reason String: 0x86 bad password, 0x87 no credentials, 0x85 client id too long (mqtt.js; mosquitto_pub)', async () => {
    const bad = await tryConnect(authGw.port, { protocolVersion: 5, clientId: 'dev1', username: 'dev1', password: 'wrong' })
    expect(bad.code).toBe(0x86)
    expect(bad.properties.reasonString).toBe('bad user name or password')
    const none = await tryConnect(authGw.port, { protocolVersion: 5, clientId: 'dev1' })
    expect(none.code).toBe(0x87)
    expect(none.properties.reasonString).toBe('not authorized')
    const long = await tryConnect(gw.port, { protocolVersion: 5, clientId: 'é'.repeat(130) })
    expect(long.code).toBe(0x85)
    expect(long.properties.reasonString).toBe('client identifier not valid')
    const ok = await tryConnect(authGw.port, { protocolVersion: 5, clientId: 'dev1', username: 'dev1', password: 'secret-1' })
    expect(ok.code).toBe(0)
    await endClient(ok.client!)
    const m = await mosquitto('mosquitto_pub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(authGw.port), '-i', 'dev1', '-u', 'dev1', '-P', 'wrong', '-t', 'devices/dev1/t', '-m', 'x'])
    expect(m.code).not.toBe(0)
    expect(m.out.toLowerCase()).toContain('bad user name or password')
    const p = await runPaho({ port: authGw.port, version: 5, clientId: 'dev1', username: 'dev1', password: 'wrong' })
    expect(p.connack).toBe(0x86)
  })

  it('mqtt5 - the same refusals over MQTT 3.1.1 keep their CONNACK codes (4, 5, 2)', async () => {
    expect((await tryConnect(authGw.port, { protocolVersion: 4, clientId: 'dev1', username: 'dev1', password: 'wrong' })).code).toBe(4)
    expect((await tryConnect(authGw.port, { protocolVersion: 4, clientId: 'dev1' })).code).toBe(5)
    expect((await tryConnect(gw.port, { protocolVersion: 4, clientId: 'é'.repeat(130) })).code).toBe(2)
    const p = await runPaho({ port: authGw.port, version: 4, clientId: 'dev1', username: 'dev1', password: 'wrong' })
    expect(p.connack).toBe(4)
  })
})
