// Review of issue 13: mqtt.js 5.16 with protocolVersion 5 does not honour the server's Receive
// Maximum for its own QoS 1 publishes (it neither reads nor applies the CONNACK's receiveMaximum), so a
// burst of QoS 1 publishes from an ordinary mqtt.js v5 device must be stored as it is from a 3.1.1
// device, not answered DISCONNECT 0x93 (it would resend the burst forever). In-process gateway, real
// nats-server.
import mqtt from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Gateway } from '../../src/gateway.js'
import { startWithNats, stopWithNats } from '../helpers/gateway.js'
import type { NatsServer } from '../helpers/nats.js'

describe('review - mqtt.js v5 and the Receive Maximum', () => {
  let nats: NatsServer
  let gw: Gateway
  beforeAll(async () => ({ nats, gw } = await startWithNats({ 'limits.maxInflightIn': 20 })))
  afterAll(() => stopWithNats(gw, nats))

  it('mqtt.js v5: a burst of 500 QoS 1 publishes is not disconnected with 0x93 (Receive Maximum 20 advertised)', async () => {
    const port = gw.ingress.address.port
    const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: 'rm-burst', protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000 })
    await new Promise<void>((resolve) => c.once('connect', () => resolve()))
    const serverRM = (c as unknown as { _serverReceiveMaximum?: number })._serverReceiveMaximum
    let reason: number | undefined
    c.on('disconnect', (p) => (reason = p.reasonCode))
    const all = Promise.allSettled(Array.from({ length: 500 }, (_, i) => c.publishAsync('devices/rm-burst/t', JSON.stringify({ i }), { qos: 1 })))
    await Promise.race([all, new Promise((r) => setTimeout(r, 3000))])
    c.end(true)
    expect({ reason, serverRM }).toEqual({ reason: undefined, serverRM })
  }, 15_000)
})
