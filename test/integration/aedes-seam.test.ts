// Contract test of src/ingress/aedes-seam.ts over real sockets: the installed aedes behind the seam
// on a TCP listener (port 0), a real mqtt.js client. The unit contract test
// (test/unit/aedes-seam.test.ts) pins each internal on in-memory streams; this one checks the same
// seam end to end where a TCP connection changes what aedes sees (close vs error, PUBACK timing).
// Needs no nats-server.
import net from 'node:net'
import mqtt from 'mqtt'
import mqttPacket from 'mqtt-packet'
import { afterEach, describe, expect, it } from 'vitest'
import { MqttCore } from '../../src/ingress/aedes-seam.js'
import type { CoreHooks, MqttClientRef, SessionEndReason } from '../../src/ingress/aedes-seam.js'
import { frameCheck } from '../../src/ingress/limits.js'
import { connectClient } from '../helpers/mqtt.js'

const allow: CoreHooks = {
  authenticate: (_c, _u, _p, _k, done) => done(null),
  authorizePublish: (_c, _p, _w, done) => done(null),
  authorizeSubscribe: (_c, _t, done) => done(null, true),
  mayForward: () => true,
}

interface Served {
  readonly core: MqttCore
  readonly port: number
  readonly violations: string[]
}

describe('aedes seam over TCP', () => {
  const open: { core: MqttCore; server: net.Server; sockets: Set<net.Socket> }[] = []
  afterEach(async () => {
    for (const { core, server, sockets } of open.splice(0)) {
      await core.close()
      for (const s of sockets) s.destroy()
      await new Promise<void>((r) => server.close(() => r()))
    }
  })

  async function serve(hooks: Partial<CoreHooks> = {}, maxPacketBytes = 1 << 20): Promise<Served> {
    const core = await MqttCore.create(
      { maxClientIdLength: 255, connectTimeoutMs: 5000, maxTopicLevels: 16, maxInflightIn: 100, drainTimeoutMs: 5000, maxPacketBytes, topicAliasMaximum: 10, maxSessionExpirySec: 3600, maxKeepaliveSec: 60, onListenerError: () => {} },
      { ...allow, ...hooks },
    )
    const violations: string[] = []
    const sockets = new Set<net.Socket>()
    const server = net.createServer((socket) => {
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
      core.attach(socket, frameCheck(maxPacketBytes), (why) => violations.push(why))
    })
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', () => r()))
    open.push({ core, server, sockets })
    return { core, port: (server.address() as net.AddressInfo).port, violations }
  }

  const disconnected = (core: MqttCore, id: string): Promise<SessionEndReason> => new Promise((r) => core.on('disconnected', (c, reason) => c.id === id && r(reason)))

  it('aedes seam (tcp) - mqtt.js v3.1.1: connected/accepted, a delivery resolves acked on its PUBACK, DISCONNECT reads clean', async () => {
    const { core, port } = await serve()
    const connected = new Promise<{ client: MqttClientRef; outcome: { accepted: boolean; code: number } }>((r) => core.on('connected', (client, outcome) => r({ client, outcome })))
    const c = await connectClient(port, 'tcp-1', { protocolVersion: 4 })
    const { client, outcome } = await connected
    expect(outcome).toEqual({ accepted: true, code: 0 })
    expect(client.address).toBe('127.0.0.1')
    let delivered = 0
    core.onDeliver(client, () => delivered++)
    const got = new Promise<string>((r) => c.once('message', (topic) => r(topic)))
    await expect(core.deliver(client, 'commands/tcp-1/a', Buffer.from('x'), 5000)).resolves.toBe('acked')
    expect(await got).toBe('commands/tcp-1/a')
    expect(delivered).toBe(1)
    const left = disconnected(core, 'tcp-1')
    await c.endAsync()
    expect(await left).toBe('clean')
  })

  it('aedes seam (tcp) - a refused client gets the CONNACK code given', async () => {
    const { core, port } = await serve({ authenticate: (_c, _u, _p, _k, done) => done(4) })
    const outcome = new Promise<{ accepted: boolean; code: number }>((r) => core.on('connected', (_c, o) => r(o)))
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: 'tcp-refused', reconnectPeriod: 0, username: 'u', password: 'wrong' })
    const err = await new Promise<Error & { code?: number }>((r) => c.once('error', r))
    expect(err.code).toBe(4)
    expect(await outcome).toEqual({ accepted: false, code: 4 })
    c.end(true)
  })

  it('aedes seam (tcp) - a dropped TCP connection reads connection_lost, and its delivery ends offline', async () => {
    const { core, port } = await serve()
    const connected = new Promise<MqttClientRef>((r) => core.on('connected', (client) => r(client)))
    const c = await connectClient(port, 'tcp-2')
    const client = await connected
    c.on('message', () => {}) // mqtt.js would PUBACK; the stream is destroyed first
    const left = disconnected(core, 'tcp-2')
    c.stream.destroy()
    const pending = core.deliver(client, 'commands/tcp-2/a', Buffer.from('x'), 60_000)
    expect(await left).toBe('connection_lost')
    await expect(pending).resolves.toBe('offline')
    c.end(true)
  })

  it('aedes seam (tcp) - the frame guard closes a connection whose fixed header announces too much, before the body is sent', async () => {
    const { port, violations } = await serve({}, 4096)
    const s = net.connect(port, '127.0.0.1')
    await new Promise((r) => s.once('connect', r))
    const closed = new Promise<void>((r) => s.once('close', () => r()))
    s.on('error', () => {})
    // CONNECT first (aedes reads nothing else before), then a PUBLISH header announcing about 10 MB.
    s.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'tcp-big', clean: true, keepalive: 0 }))
    s.write(Buffer.from([0x30, 0x80, 0x80, 0xe2, 0x04]))
    await closed
    expect(violations).toEqual(['packet of 9994245 bytes announced; the limit is 4096 (--max-packet-bytes)'])
  })
})
