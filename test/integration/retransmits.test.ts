// Retransmissions through the real ingress: a device's resend after a lost PUBACK is acknowledged
// without being stored again; a new message with the same packet id and bytes is stored: after the
// device's DISCONNECT, after a new message on the new connection, after 30 s more on the same
// connection; and stepping the wall clock either way changes neither.
import net from 'node:net'
import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { afterEach, describe, expect, it, vi } from 'vitest'
import type { Gateway } from '../../src/gateway.js'
import { startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'

/** Polls `ok` every 5 ms until it holds or `ms` pass. */
async function until(ok: () => boolean, ms = 3000): Promise<boolean> {
  for (const end = performance.now() + ms; !ok() && performance.now() < end; ) await new Promise((r) => setTimeout(r, 5))
  return ok()
}

/** A device on a raw socket: QoS 1 publishes with packet ids and DUP of our choice. */
async function rawDevice(port: number, clientId: string): Promise<{ publish(messageId: number, payload: string, dup?: boolean): Promise<void>; drop(): void; disconnect(): Promise<void> }> {
  const s = net.connect(port, '127.0.0.1')
  s.on('error', () => {})
  await new Promise((r) => s.once('connect', r))
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const got: Packet[] = []
  parser.on('packet', (p) => got.push(p))
  s.on('data', (b) => parser.parse(b))
  s.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId, keepalive: 60 }))
  expect(await until(() => got.some((p) => p.cmd === 'connack'))).toBe(true)
  return {
    async publish(messageId, payload, dup = false) {
      const acked = (): boolean => got.some((p) => p.cmd === 'puback' && p.messageId === messageId)
      got.splice(0) // a packet id's earlier PUBACK must not count
      s.write(mqttPacket.generate({ cmd: 'publish', topic: `dev/${clientId}`, payload: Buffer.from(payload), qos: 1, messageId, dup, retain: false }))
      expect(await until(acked), `PUBACK for packet id ${messageId}`).toBe(true)
    },
    /** The link drops (no DISCONNECT): for the gateway, PUBACKs written just before may be lost. */
    drop: () => void s.destroy(),
    /** DISCONNECT, then wait until the gateway has closed the connection. */
    async disconnect() {
      s.write(mqttPacket.generate({ cmd: 'disconnect' }))
      await new Promise((r) => s.once('close', r))
    },
  }
}

/** Offsets added to Date.now() (the wall clock) and performance.now() (the monotonic clock) in this process. */
function skewClocks(): { wallMs: number; monotonicMs: number } {
  const skew = { wallMs: 0, monotonicMs: 0 }
  const wall = Date.now.bind(Date)
  const mono = performance.now.bind(performance)
  vi.spyOn(Date, 'now').mockImplementation(() => wall() + skew.wallMs)
  vi.spyOn(performance, 'now').mockImplementation(() => mono() + skew.monotonicMs)
  return skew
}

describe('retransmissions through the ingress', () => {
  let gw: Gateway | undefined
  afterEach(async () => {
    vi.restoreAllMocks()
    await gw?.close(500)
    gw = undefined
  })
  const start = async (): Promise<{ port: number; stored: () => number; recognised: () => number; offline: (id: string) => Promise<boolean> }> => {
    const g = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': 'nats://127.0.0.1:1', presence: false })
    gw = g
    const first = g.log.durableSeq
    return {
      port: g.ingress.address.port,
      stored: () => g.log.durableSeq - first,
      recognised: () => g.metrics.mqttRetransmits.get(),
      offline: (id) => until(() => !g.ingress.devices.isOnline(id)),
    }
  }

  it('retransmit - the first publish of a new connection repeating one sent as the link dropped is not stored again', async () => {
    const g = await start()
    const a = await rawDevice(g.port, 'resender')
    await a.publish(9, '{"v":1}') // stored; say its PUBACK was lost with the link
    a.drop()
    expect(await g.offline('resender')).toBe(true)
    const b = await rawDevice(g.port, 'resender')
    await b.publish(9, '{"v":1}') // MQTT.js: resent after reconnecting, without DUP
    await b.publish(10, '{"v":2}') // then new messages
    expect(g.stored()).toBe(2)
    expect(g.recognised()).toBe(1)
  })

  it('retransmit - after the device sent DISCONNECT, the same packet id and bytes on its next connection are stored (deep sleep)', async () => {
    const g = await start()
    const wake1 = await rawDevice(g.port, 'sleeper')
    await wake1.publish(1, '{"door":"closed"}')
    await wake1.disconnect()
    expect(await g.offline('sleeper')).toBe(true)
    const wake2 = await rawDevice(g.port, 'sleeper') // packet ids start again at 1; the same reading
    await wake2.publish(1, '{"door":"closed"}')
    expect(g.stored()).toBe(2)
    expect(g.recognised()).toBe(0)
  })

  it('retransmit - after a new message on the new connection, a repeat of an earlier one is stored', async () => {
    const g = await start()
    const a = await rawDevice(g.port, 'restarter')
    await a.publish(1, '{"door":"closed"}')
    await a.publish(2, '{"battery":"ok"}')
    a.drop()
    expect(await g.offline('restarter')).toBe(true)
    const b = await rawDevice(g.port, 'restarter')
    await b.publish(1, '{"door":"open"}') // new: the device resends before anything new, so nothing after this is a resend
    await b.publish(2, '{"battery":"ok"}')
    expect(g.stored()).toBe(4)
    expect(g.recognised()).toBe(0)
  })

  it('retransmit - a message followed on its connection by a publish 30 s later is not taken for a resend; the later one is', async () => {
    const g = await start()
    const clock = skewClocks()
    const a = await rawDevice(g.port, 'steady')
    await a.publish(1, '{"door":"closed"}')
    clock.monotonicMs += 31_000
    await a.publish(2, '{"battery":"ok"}') // the link carried this 31 s later: packet id 1's PUBACK got through
    a.drop()
    expect(await g.offline('steady')).toBe(true)
    const b = await rawDevice(g.port, 'steady')
    await b.publish(2, '{"battery":"ok"}') // a resend (its PUBACK may have been lost)
    await b.publish(1, '{"door":"closed"}') // new
    expect(g.stored()).toBe(3)
    expect(g.recognised()).toBe(1)
  })

  it('retransmit - a resend is recognised after the wall clock steps forward an hour', async () => {
    const g = await start()
    const clock = skewClocks()
    const a = await rawDevice(g.port, 'ntp-fwd')
    await a.publish(6, '{"v":6}')
    a.drop()
    expect(await g.offline('ntp-fwd')).toBe(true)
    clock.wallMs += 3_600_000 // NTP steps the wall clock forward
    const b = await rawDevice(g.port, 'ntp-fwd')
    await b.publish(6, '{"v":6}')
    expect(g.stored()).toBe(1)
    expect(g.recognised()).toBe(1)
  })

  it('retransmit - stepping the wall clock back an hour does not widen the 5-minute window', async () => {
    const g = await start()
    const clock = skewClocks()
    const a = await rawDevice(g.port, 'ntp-back')
    await a.publish(5, '{"v":5}')
    a.drop()
    expect(await g.offline('ntp-back')).toBe(true)
    clock.monotonicMs += 6 * 60_000 // six minutes pass, during which the wall clock is set back an hour
    clock.wallMs += 6 * 60_000 - 3_600_000
    const b = await rawDevice(g.port, 'ntp-back')
    await b.publish(5, '{"v":5}') // outside the window: a new message
    expect(g.stored()).toBe(2)
    expect(g.recognised()).toBe(0)
  })
})
