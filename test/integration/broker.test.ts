// Ingress behaves like any MQTT broker for local subscribers (QoS 2, retained, wills, persistent sessions), and QoS 2 resends are stored once.
import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Gateway } from '../../src/gateway.js'
import { startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

let nats: NatsServer
let gw: Gateway
let port: number

beforeAll(async () => {
  nats = await startNats()
  gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url })
  port = gw.ingress.address.port
})
afterAll(async () => {
  await gw?.close()
  await nats?.[Symbol.asyncDispose]()
})

function nextMessage(c: import('mqtt').MqttClient): Promise<{ topic: string; payload: string; retain: boolean }> {
  return new Promise((resolve) => c.once('message', (topic, payload, packet) => resolve({ topic, payload: payload.toString(), retain: packet.retain })))
}

describe('broker', () => {
  it('broker - QoS 2 publish reaches a local subscriber once and JetStream once', async () => {
    const sub = await connectClient(port, 'local-sub')
    await sub.subscribeAsync('local/q2', { qos: 2 })
    const got = nextMessage(sub)
    const pub = await connectClient(port, 'q2-pub')
    await pub.publishAsync('local/q2', '{"v":2}', { qos: 2 })
    expect(await got).toMatchObject({ topic: 'local/q2', payload: '{"v":2}' })
    await endClient(pub)
    await endClient(sub)
    const msgs = (await readStream(nats.url)).filter((m) => m.subject === 'ferry.up.local.q2')
    expect(msgs).toHaveLength(1)
  })

  it('broker - retained messages are delivered to later subscribers', async () => {
    const pub = await connectClient(port, 'ret-pub')
    await pub.publishAsync('local/retained', 'keep', { qos: 1, retain: true })
    await endClient(pub)
    const sub = await connectClient(port, 'ret-sub')
    const got = nextMessage(sub)
    await sub.subscribeAsync('local/retained', { qos: 1 })
    expect(await got).toMatchObject({ payload: 'keep', retain: true })
    await endClient(sub)
  })

  it('broker - a will is published (locally and upstream) when a client vanishes', async () => {
    const sub = await connectClient(port, 'will-sub')
    await sub.subscribeAsync('local/will/#', { qos: 1 })
    const got = nextMessage(sub)
    const dying = await connectClient(port, 'will-dev', { will: { topic: 'local/will/dev', payload: Buffer.from('gone'), qos: 1, retain: false } })
    ;(dying as unknown as { stream: net.Socket }).stream.destroy()
    expect(await got).toMatchObject({ topic: 'local/will/dev', payload: 'gone' })
    await endClient(sub)
    await endClient(dying)
    const count = await waitForCount(nats.url, 1)
    expect(count).toBeGreaterThan(0)
    expect((await readStream(nats.url)).some((m) => m.subject === 'ferry.up.local.will.dev')).toBe(true)
  })

  it('broker - a persistent session receives QoS 1 messages published while it was offline', async () => {
    const sub = await connectClient(port, 'persist-sub', { clean: false })
    await sub.subscribeAsync('local/persist', { qos: 1 })
    await endClient(sub)
    const pub = await connectClient(port, 'persist-pub')
    await pub.publishAsync('local/persist', 'while-away', { qos: 1 })
    await endClient(pub)
    const back = (await import('mqtt')).default.connect(`mqtt://127.0.0.1:${port}`, { clientId: 'persist-sub', clean: false, reconnectPeriod: 0 })
    const got = nextMessage(back)
    expect(await got).toMatchObject({ topic: 'local/persist', payload: 'while-away' })
    await endClient(back)
  })

  it('broker - a QoS 2 PUBLISH resent with DUP before PUBREL is stored once', async () => {
    const before = (await readStream(nats.url)).length
    const s = net.connect(port, '127.0.0.1')
    await new Promise<void>((resolve) => s.once('connect', () => resolve()))
    const frames: Buffer[] = []
    s.on('data', (d: Buffer) => frames.push(d))
    const waitBytes = async (n: number): Promise<void> => {
      const until = Date.now() + 5000
      while (Buffer.concat(frames).length < n && Date.now() < until) await new Promise((r) => setTimeout(r, 10))
    }
    // CONNECT (MQTT 3.1.1, clean session, client id "q2raw")
    s.write(Buffer.from([0x10, 0x11, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x05, 0x71, 0x32, 0x72, 0x61, 0x77]))
    await waitBytes(4) // CONNACK
    const publish = (dup: boolean): Buffer => {
      const topic = Buffer.from('local/q2dup')
      const payload = Buffer.from('{"once":true}')
      const body = Buffer.concat([Buffer.from([0, topic.length]), topic, Buffer.from([0x00, 0x07]), payload])
      return Buffer.concat([Buffer.from([0x34 | (dup ? 0x08 : 0), body.length]), body])
    }
    s.write(publish(false))
    await waitBytes(8) // PUBREC
    s.write(publish(true))
    await waitBytes(12) // PUBREC again
    s.write(Buffer.from([0x62, 0x02, 0x00, 0x07])) // PUBREL
    await waitBytes(16) // PUBCOMP
    const all = Buffer.concat(frames)
    expect([...all.subarray(4, 16)]).toEqual([0x50, 0x02, 0x00, 0x07, 0x50, 0x02, 0x00, 0x07, 0x70, 0x02, 0x00, 0x07])
    s.end()
    await waitForCount(nats.url, before + 1)
    await new Promise((r) => setTimeout(r, 300))
    expect((await readStream(nats.url)).filter((m) => m.subject === 'ferry.up.local.q2dup')).toHaveLength(1)
  })
})
