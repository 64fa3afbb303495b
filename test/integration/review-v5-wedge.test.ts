// Review of issue 13 ("One refused message must never wedge a 3.1.1 device"): a QoS 1 publish that
// Ferry will refuse every time it is sent - too large to store (--max-record-bytes) - still gets no
// PUBACK and the connection closed under the default --refused-publish ack. mqtt.js 3.1.1 resends it
// after every reconnect, before anything new, and is closed again: its later telemetry never gets
// through. In-process gateway, real nats-server, mqtt.js 3.1.1.
import mqtt from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Gateway } from '../../src/gateway.js'
import { startWithNats, stopWithNats } from '../helpers/gateway.js'
import type { NatsServer } from '../helpers/nats.js'

describe('review - a message too large to store wedges a 3.1.1 device', () => {
  let nats: NatsServer
  let gw: Gateway
  beforeAll(async () => ({ nats, gw } = await startWithNats({ 'log.maxRecordBytes': 4096 })))
  afterAll(() => stopWithNats(gw, nats))

  it('3.1.1 (mqtt.js, default --refused-publish ack): after one publish over --max-record-bytes, the next publish is still stored', async () => {
    const port = gw.ingress.address.port
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: 'wedge-3', protocolVersion: 4, reconnectPeriod: 200, connectTimeout: 5000 })
    await new Promise<void>((resolve) => c.once('connect', () => resolve()))
    let closes = 0
    c.on('close', () => closes++)
    c.publish('devices/wedge-3/big', Buffer.alloc(8192, 1), { qos: 1 })
    const after = c.publishAsync('devices/wedge-3/after', '{"a":1}', { qos: 1 }).then(() => 'stored' as const)
    const result = await Promise.race([after, new Promise<'wedged'>((r) => setTimeout(() => r('wedged'), 4000))])
    c.end(true)
    expect({ result, closes: closes > 1 ? 'closed again and again' : closes }).toEqual({ result: 'stored', closes: expect.anything() })
  }, 15_000)
})
