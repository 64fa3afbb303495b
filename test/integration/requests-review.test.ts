// Review of issue 13 (requests from devices): what happens to a QoS 0, 1 and 2 request publish, and to
// a QoS 1 request the device sends again (DUP) because its PUBACK was lost.
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

describe('requests from devices - QoS', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let nc: NatsConnection
  const calls: string[] = []

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', tempDir('ferry-req-qos-'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0'])
    nc = await connect({ servers: nats.url })
    nc.subscribe('ferry.svc.config.get', {
      callback: (_err, m) => {
        calls.push(m.headers?.get('Ferry-Device') ?? '')
        m.respond('{"rate":5}')
      },
    })
    await nc.flush()
  }, 60_000)

  afterAll(async () => {
    await nc?.close()
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('requests - QoS 0, 1 and 2 requests each make one NATS request and get one answer', async () => {
    const c = await connectClient(gw.port, 'q-dev')
    const got: string[] = []
    c.on('message', (topic) => got.push(topic))
    for (const qos of [0, 1, 2] as const) await c.publishAsync(`requests/q-dev/config/get/q${qos}`, '', { qos })
    expect(await until(() => got.length >= 3, 5000)).toBe(true)
    await new Promise((r) => setTimeout(r, 300)) // a duplicate answer would come right behind
    expect(got.sort()).toEqual(['devices/q-dev/requests/reply/q0/200', 'devices/q-dev/requests/reply/q1/200', 'devices/q-dev/requests/reply/q2/200'])
    expect(calls.length).toBe(3)
    await endClient(c)
  }, 20_000)
})
