// RPC subscriptions and the NATS server's max_subscriptions (issue 15): the gateway subscribes once
// per connected device, so a user or account limit can now be reached. The server then refuses each
// SUB beyond it with `-ERR 'maximum subscriptions exceeded'` and keeps the connection: the
// subscription looks open to the client library and to Ferry, yet requests to that device get no
// responders (reported to callers as "device offline") while it is connected. The downlink must say
// so: /readyz `downlink` failing, naming the limit, and an error log line. Bundled gateway, real
// nats-server with max_subscriptions, real MQTT clients.
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { NO_RESPONDERS, rpcStatus } from '../helpers/rpc.js'

/** Far fewer than the downlink's own subscriptions plus one per device below. */
const MAX_SUBSCRIPTIONS = 12
const DEVICES = 16

describe('rpc subscription limit', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let nc: NatsConnection
  const clients: MqttClient[] = []

  const downlinkCheck = async (): Promise<{ status: string; detail: string }> => {
    const r = (await (await fetch(`http://127.0.0.1:${gw.httpPort}/readyz`)).json()) as { checks: Record<string, { status: string; detail: string }> }
    return r.checks.downlink!
  }

  beforeAll(async () => {
    nats = await startNats(`max_subscriptions: ${MAX_SUBSCRIPTIONS}`)
    gw = await spawnGateway(['--data-dir', tempDir('ferry-rpc-sublimit-'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--rpc-timeout-ms', '3000'])
    nc = await connect({ servers: nats.url })
  }, 30_000)

  afterAll(async () => {
    for (const c of clients) c.end(true)
    await nc?.close()
    await gw?.kill('SIGTERM')
    await nats?.[Symbol.asyncDispose]()
  })

  it('rpc subscription limit - devices beyond the server\'s max_subscriptions: /readyz downlink failing, naming the limit, and logged', async () => {
    expect(await until(async () => (await downlinkCheck()).status === 'ok', 20_000)).toBe(true)
    for (let i = 0; i < DEVICES; i++) {
      const id = `lim-${i}`
      const d = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.port}`, { clientId: id, reconnectPeriod: 0 })
      d.on('message', (topic) => d.publish(`devices/${id}/rpc/response/${topic.split('/')[4]}`, '{}', { qos: 1 }))
      await d.subscribeAsync(`devices/${id}/rpc/request/+/json`, { qos: 1 })
      clients.push(d)
    }
    // Some connected device is unreachable: the server refused its subscription.
    const statuses = async (): Promise<(string | undefined)[]> => Promise.all(clients.map((_c, i) => rpcStatus(nc, `ferry.rpc.lim-${i}.get`, '{}', {}, 2000).catch(() => 'timeout')))
    expect(await until(async () => (await statuses()).includes(NO_RESPONDERS), 20_000)).toBe(true)
    // The gateway says so.
    expect(await until(async () => (await downlinkCheck()).status === 'failing', 10_000)).toBe(true)
    expect((await downlinkCheck()).detail).toMatch(/maximum subscriptions exceeded/)
    expect(gw.output()).toMatch(/maximum subscriptions exceeded/)
  })
})
