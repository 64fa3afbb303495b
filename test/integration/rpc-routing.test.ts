// RPC routing (issue 15): the gateway subscribes `<prefix>.rpc.<device>.>` for each device while it is
// connected here. A device replaced by a new connection with the same id keeps exactly one
// subscription; subscriptions come back after the NATS server restarts; a device that leaves takes its
// subscription with it. Bundled gateway, real nats-server, real MQTT clients.
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { NO_RESPONDERS, rpcStatus } from '../helpers/rpc.js'

describe('rpc routing', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let nc: NatsConnection

  const subscriptions = async (): Promise<number> => {
    const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
    return Number(/^ferry_downlink_rpc_subscriptions (\S+)$/m.exec(text)?.[1] ?? NaN)
  }
  /** A device answering every request with `tag`. */
  const device = async (id: string, tag: string): Promise<MqttClient> => {
    const d = await mqtt.connectAsync(`mqtt://127.0.0.1:${gw.port}`, { clientId: id, reconnectPeriod: 0 })
    d.on('message', (topic) => d.publish(`devices/${id}/rpc/response/${topic.split('/')[4]}`, JSON.stringify({ tag }), { qos: 1 }))
    await d.subscribeAsync(`devices/${id}/rpc/request/+/json`, { qos: 1 })
    return d
  }
  /** Ferry-Status, NO_RESPONDERS, or 'timeout' (a request lost while NATS reconnects). */
  const ask = (id: string): Promise<string | undefined> => rpcStatus(nc, `ferry.rpc.${id}.get`, '{}', {}, 1000).catch(() => 'timeout')

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', tempDir('ferry-rpc-routing-'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--rpc-timeout-ms', '3000'])
    nc = await connect({ servers: nats.url, maxReconnectAttempts: -1, reconnectTimeWait: 200 })
  }, 30_000)

  afterAll(async () => {
    await nc?.close()
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('rpc routing - a device that reconnects (the new connection takes over the old) keeps exactly one subscription', async () => {
    const first = await device('move-dev', 'first')
    expect(await until(async () => (await ask('move-dev')) === '200 OK')).toBe(true)
    expect(await subscriptions()).toBe(1)
    // Same id again while the first is connected: the gateway closes the first (a takeover).
    const second = await device('move-dev', 'second')
    try {
      expect(await until(() => first.disconnected || !first.connected)).toBe(true)
      for (let i = 0; i < 5; i++) expect(await ask('move-dev')).toBe('200 OK')
      expect(await subscriptions()).toBe(1)
    } finally {
      first.end(true)
      await endClient(second)
    }
    expect(await until(async () => (await subscriptions()) === 0)).toBe(true)
    expect(await ask('move-dev')).toBe(NO_RESPONDERS)
  })

  it('rpc routing - after the NATS server restarts, the subscriptions of connected devices are back (nats.js resubscribes)', async () => {
    const a = await device('nr-a', 'a')
    const b = await device('nr-b', 'b')
    try {
      for (const id of ['nr-a', 'nr-b']) expect(await until(async () => (await ask(id)) === '200 OK')).toBe(true)
      await nats.stop()
      await nats.start()
      for (const id of ['nr-a', 'nr-b']) expect(await until(async () => (await ask(id)) === '200 OK', 20_000)).toBe(true)
      expect(await subscriptions()).toBe(2)
    } finally {
      await endClient(a)
      await endClient(b)
    }
    // Gone while connected to NATS: unsubscribed, no responders.
    for (const id of ['nr-a', 'nr-b']) expect(await until(async () => (await ask(id)) === NO_RESPONDERS)).toBe(true)
    expect(await subscriptions()).toBe(0)
  }, 60_000)

  it('rpc routing - a device that connects while NATS is down is subscribed once NATS is back', async () => {
    await nats.stop()
    const d = await device('late-dev', 'late')
    try {
      await nats.start()
      expect(await until(async () => (await ask('late-dev')) === '200 OK', 20_000)).toBe(true)
      expect(await subscriptions()).toBe(1)
    } finally {
      await endClient(d)
    }
  }, 60_000)
})
