// Regressions found by review: retransmissions recognised across a restart with other codec
// settings; no ghost device session after a reset right after CONNACK; a device's presence events
// keep their order with its data through the live lane.
import net from 'node:net'
import mqttPacket from 'mqtt-packet'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { memoryLogger, startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

/** Connects on a raw socket, publishes one QoS 1 message and waits for its PUBACK. */
async function rawPublish(port: number, clientId: string, messageId: number, payload: string, dup: boolean): Promise<void> {
  const s = net.connect(port, '127.0.0.1')
  s.on('error', () => {})
  await new Promise((r) => s.once('connect', r))
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const got: string[] = []
  parser.on('packet', (p) => got.push(p.cmd))
  s.on('data', (b) => parser.parse(b))
  s.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 60 }))
  s.write(mqttPacket.generate({ cmd: 'publish', topic: 'dev/t', payload: Buffer.from(payload), qos: 1, messageId, dup, retain: false }))
  for (const until = Date.now() + 3000; !got.includes('puback') && Date.now() < until; ) await new Promise((r) => setTimeout(r, 10))
  expect(got).toContain('puback')
  s.destroy()
}

describe('retransmissions across a restart with other codec settings', () => {
  for (const [name, second] of [
    ['the same settings', {}],
    ['--cbor off', { 'codec.cbor': false }],
    ['--raw-topics dev/#', { 'codec.rawTopics': 'dev/#' }],
  ] as const) {
    it(`retransmit - a resend after a restart with ${name} is not stored again`, async () => {
      const dir = tempDir()
      const base = { 'log.dataDir': dir, 'nats.url': 'nats://127.0.0.1:1', presence: false }
      let gw = await startGateway(base)
      const payload = JSON.stringify({ v: 1, ts: 1700000000 })
      await rawPublish(gw.ingress.address.port, 'dev-1', 77, payload, false) // stored; its PUBACK "lost"
      const before = gw.log.durableSeq
      await gw.close(500)
      gw = await startGateway({ ...base, ...second })
      try {
        await rawPublish(gw.ingress.address.port, 'dev-1', 77, payload, true) // the device resends it
        expect(gw.log.durableSeq).toBe(before)
        expect(gw.metrics.mqttRetransmits.get()).toBe(1)
      } finally {
        await gw.close(500)
      }
    })
  }
})

describe('device sessions', () => {
  it('presence - a connection reset right after its CONNACK leaves no ghost session', async () => {
    const gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': 'nats://127.0.0.1:1' })
    try {
      // The MQTT core (aedes-seam.ts) reports a registered client synchronously from aedes' 'client' event.
      const core = (gw.ingress as unknown as { core: { on(e: 'registered', f: (c: { socket: net.Socket }) => void): void } }).core
      core.on('registered', (c) => {
        const write = c.socket.write.bind(c.socket) as (...a: unknown[]) => boolean
        c.socket.write = ((...a: unknown[]) => {
          const r = write(...a)
          process.nextTick(() => c.socket.destroy(new Error('ECONNRESET')))
          return r
        })
      })
      const s = net.connect(gw.ingress.address.port, '127.0.0.1')
      s.on('error', () => {})
      await new Promise((r) => s.once('connect', r))
      s.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'ghost', keepalive: 60 }))
      await new Promise((r) => setTimeout(r, 500))
      expect(gw.ingress.devices.isOnline('ghost')).toBe(false)
      expect(gw.ingress.devices.list()).toEqual([])
    } finally {
      await gw.close(500)
    }
  })
})

describe('live lane and presence', () => {
  let nats: NatsServer
  beforeAll(async () => {
    nats = await startNats()
  })
  afterAll(async () => {
    await nats?.stop()
  })

  it('live lane - a device that arrives during a drain has its events and data in order', async () => {
    const lines: string[] = []
    const gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'nats.maxInflight': 16 }, memoryLogger(lines))
    try {
      await waitForCount(nats.url, 0)
      await nats.stop()
      const port = gw.ingress.address.port
      const bk = await connectClient(port, 'bk-0') // its `connected` event goes into the backlog
      await publishSeries(bk, 'bk-0', 12_000, 50)
      await nats.start()
      for (const until = Date.now() + 20_000; !lines.some((l) => l.includes('live lane open')) && Date.now() < until; ) await new Promise((r) => setTimeout(r, 5))
      expect(lines.some((l) => l.includes('live lane open'))).toBe(true)
      const late = await connectClient(port, 'late')
      await publishSeries(late, 'late', 3)
      await late.endAsync()
      await endClient(bk)
      await waitForCount(nats.url, 12_003, 60_000)
      for (let i = 0; i < 50 && (await readStream(nats.url, 'FERRY', 'all')).filter((m) => m.subject.includes('.late.')).length < 5; i++) await new Promise((r) => setTimeout(r, 100))
      const ofLate = (await readStream(nats.url, 'FERRY', 'all')).filter((m) => m.subject.includes('.late.'))
      expect(ofLate.map((m) => m.subject.split('.').pop())).toEqual(['connected', 'telemetry', 'telemetry', 'telemetry', 'disconnected'])
    } finally {
      await gw.close()
    }
  }, 90_000)
})
