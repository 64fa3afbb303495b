// Issue 15, test 5: RPC reaches the gateway that holds the device. Three gateways A, B, C share one
// subject prefix, each connected to a different node of a 3-node cluster; a real MQTT device on B
// answers RPC. Requests from NATS clients on the other nodes get exactly one reply, B's; a request to
// a device connected nowhere gets NATS's no-responders at once; a device that moves to A is then
// answered by A alone.
import { connect, createInbox, headers } from '@nats-io/transport-node'
import type { Msg, NatsConnection } from '@nats-io/transport-node'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor } from '../../src/codec/index.js'
import { startCluster } from '../helpers/cluster.js'
import type { NatsCluster } from '../helpers/cluster.js'
import { until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { NO_RESPONDERS, rpcStatus } from '../helpers/rpc.js'

/** --rpc-timeout-ms of every gateway: a no-responders answer must come well before it. */
const RPC_TIMEOUT_MS = 4000
const DEVICE = 'fleet-dev'

/** A counter or gauge from a gateway's /metrics (0 when absent). */
async function metric(gw: GatewayProcess, line: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
  const m = new RegExp(`^${line.replace(/[{}"=]/g, (c) => `\\${c}`)} (\\S+)$`, 'm').exec(text)
  return m ? Number(m[1]) : 0
}
const okCount = (gw: GatewayProcess): Promise<number> => metric(gw, 'ferry_downlink_rpc_requests_total{result="ok"}')
const subscriptions = (gw: GatewayProcess): Promise<number> => metric(gw, 'ferry_downlink_rpc_subscriptions')

/** An MQTT device on `port` that answers every RPC with the gateway name it was told it is on. */
async function answeringDevice(port: number, site: string): Promise<MqttClient> {
  const d = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: DEVICE, reconnectPeriod: 0, clean: true })
  d.on('message', (topic) => d.publish(`devices/${DEVICE}/rpc/response/${topic.split('/')[4]}`, JSON.stringify({ site }), { qos: 1 }))
  await d.subscribeAsync(`devices/${DEVICE}/rpc/request/+/json`, { qos: 1 })
  return d
}

/**
 * Sends one request on a fixed inbox of `nc` and collects every reply for `settleMs` after the first
 * (a request through nc.request() would take the first reply and hide a second).
 */
async function allReplies(nc: NatsConnection, subject: string, settleMs = 500): Promise<Msg[]> {
  const inbox = createInbox()
  const got: Msg[] = []
  const sub = nc.subscribe(inbox, { callback: (_err, m) => void got.push(m) })
  try {
    await nc.flush()
    const h = headers()
    h.set('Content-Type', 'application/json')
    nc.publish(subject, '{}', { reply: inbox, headers: h })
    if (!(await until(() => got.length > 0, 5000))) return got
    await new Promise((r) => setTimeout(r, settleMs)) // a second reply would land here
    return got
  } finally {
    sub.unsubscribe()
  }
}

describe('fleet rpc - one prefix, three gateways, three nodes', () => {
  let cluster: NatsCluster
  const gws: Record<'A' | 'B' | 'C', GatewayProcess> = {} as never
  /** Requesters on n1 (A's node) and n3 (C's node); B is on n2. */
  let on1: NatsConnection
  let on3: NatsConnection

  beforeAll(async () => {
    cluster = await startCluster()
    // One at a time: the first creates the streams, the others find them.
    for (const [i, name] of (['A', 'B', 'C'] as const).entries()) {
      gws[name] = await spawnGateway(['--data-dir', tempDir(`ferry-fleet-rpc-${name}-`), '--nats-url', cluster.nodes[i]!.url, '--gateway-id', `gw-${name.toLowerCase()}`, '--mqtt-listen', '127.0.0.1:0', '--rpc-timeout-ms', String(RPC_TIMEOUT_MS), '--stream-replicas', '3'], 30_000)
      const ready = await until(async () => {
        const r = (await (await fetch(`http://127.0.0.1:${gws[name].httpPort}/readyz`)).json()) as { checks: Record<string, { status: string }> }
        return r.checks.downlink?.status === 'ok'
      }, 30_000)
      expect(ready, `gateway ${name}'s downlink ready`).toBe(true)
    }
    on1 = await connect({ servers: cluster.nodes[0]!.url })
    on3 = await connect({ servers: cluster.nodes[2]!.url })
  }, 90_000)

  afterAll(async () => {
    await on1?.close()
    await on3?.close()
    for (const gw of Object.values(gws)) await gw.kill('SIGTERM')
    await cluster?.[Symbol.asyncDispose]()
  })

  it('fleet rpc - a device on B is answered by B alone, from clients on the other nodes; a device connected nowhere fails fast with no responders', async () => {
    // Connected nowhere yet: the server answers no responders at once, on every node.
    for (const nc of [on1, on3]) {
      const t0 = performance.now()
      expect(await rpcStatus(nc, `ferry.rpc.${DEVICE}.getSite`, '{}', {}, 10_000)).toBe(NO_RESPONDERS)
      const ms = performance.now() - t0
      console.log(`RPC to a device connected nowhere: no responders after ${ms.toFixed(1)} ms (--rpc-timeout-ms ${RPC_TIMEOUT_MS})`)
      expect(ms).toBeLessThan(RPC_TIMEOUT_MS / 4)
    }
    const d = await answeringDevice(gws.B.port, 'B')
    try {
      // B's subscription reaches n1 and n3 through the routes a moment after B subscribed.
      for (const nc of [on1, on3]) expect(await until(async () => (await rpcStatus(nc, `ferry.rpc.${DEVICE}.getSite`, '{}', {}, 1000).catch(() => 'timeout')) === '200 OK', 10_000)).toBe(true)
      const before = { A: await okCount(gws.A), B: await okCount(gws.B), C: await okCount(gws.C) }
      const rounds = 5
      for (let i = 0; i < rounds; i++) {
        for (const nc of [on1, on3]) {
          const replies = await allReplies(nc, `ferry.rpc.${DEVICE}.getSite`)
          expect(replies.map((m) => m.headers?.get('Ferry-Status'))).toEqual(['200 OK'])
          expect(decodeCbor(replies[0]!.data)).toEqual({ site: 'B' }) // the device's own answer, through its one connection (to B)
        }
      }
      expect(await okCount(gws.B)).toBe(before.B + 2 * rounds)
      expect(await okCount(gws.A)).toBe(before.A)
      expect(await okCount(gws.C)).toBe(before.C)
      expect([await subscriptions(gws.A), await subscriptions(gws.B), await subscriptions(gws.C)]).toEqual([0, 1, 0])
      // Another device id, never connected: still no responders at once while the fleet runs.
      const t0 = performance.now()
      expect(await rpcStatus(on1, 'ferry.rpc.nobody-here.getSite', '{}', {}, 10_000)).toBe(NO_RESPONDERS)
      expect(performance.now() - t0).toBeLessThan(RPC_TIMEOUT_MS / 4)
    } finally {
      await endClient(d)
    }
    // Gone from B: B unsubscribes, and requests fail fast again. (One routed to B's node just as B
    // unsubscribed is dropped there and times out: the moment a device leaves is a race.)
    expect(await until(async () => (await rpcStatus(on1, `ferry.rpc.${DEVICE}.getSite`, '{}', {}, 1000).catch(() => 'timeout')) === NO_RESPONDERS, 10_000)).toBe(true)
    expect(await subscriptions(gws.B)).toBe(0)
  })

  it('fleet rpc - a device that moves from B to A is then answered by A alone', async () => {
    const onB = await answeringDevice(gws.B.port, 'B')
    try {
      expect(await until(async () => (await rpcStatus(on3, `ferry.rpc.${DEVICE}.getSite`, '{}', {}, 1000).catch(() => 'timeout')) === '200 OK', 10_000)).toBe(true)
    } finally {
      await endClient(onB)
    }
    const onA = await answeringDevice(gws.A.port, 'A')
    try {
      // Once A's subscription has reached n3 and B's unsubscribe too, every request gets A's answer only.
      const site = async (): Promise<unknown> => {
        const replies = await allReplies(on3, `ferry.rpc.${DEVICE}.getSite`, 0)
        return replies.length === 1 ? decodeCbor(replies[0]!.data) : undefined
      }
      expect(await until(async () => JSON.stringify(await site()) === '{"site":"A"}', 10_000)).toBe(true)
      const before = { A: await okCount(gws.A), B: await okCount(gws.B), C: await okCount(gws.C) }
      for (let i = 0; i < 5; i++) {
        const replies = await allReplies(on3, `ferry.rpc.${DEVICE}.getSite`)
        expect(replies.map((m) => m.headers?.get('Ferry-Status'))).toEqual(['200 OK'])
        expect(decodeCbor(replies[0]!.data)).toEqual({ site: 'A' })
      }
      expect(await okCount(gws.A)).toBe(before.A + 5)
      expect(await okCount(gws.B)).toBe(before.B)
      expect(await okCount(gws.C)).toBe(before.C)
      expect([await subscriptions(gws.A), await subscriptions(gws.B), await subscriptions(gws.C)]).toEqual([1, 0, 0])
    } finally {
      await endClient(onA)
    }
  })
})
