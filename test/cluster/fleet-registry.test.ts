// The fleet registry on a 3-node JetStream cluster: the bucket is created with --stream-replicas 3, and
// entries, takeover and `ferry devices --fleet` keep working after the kill -9 of the bucket's leader.
import fs from 'node:fs'
import path from 'node:path'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { deviceKey } from '../../src/fleet/index.js'
import { startCluster } from '../helpers/cluster.js'
import type { NatsCluster } from '../helpers/cluster.js'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'

const STREAM = 'KV_ferry_devices'
let cluster: NatsCluster
let dir: string
let nc: NatsConnection
const gateways: GatewayProcess[] = []
const clients: MqttClient[] = []

async function gateway(id: string): Promise<GatewayProcess> {
  const g = await spawnGateway(['--data-dir', path.join(dir, id), '--nats-url', cluster.urls.join(','), '--mqtt-listen', '127.0.0.1:0', '--gateway-id', id, '--stream-replicas', '3', '--registry-heartbeat-ms', '500'], 30_000)
  gateways.push(g)
  return g
}

async function holderOf(device: string): Promise<string | undefined> {
  const kv = await new Kvm(jetstream(nc)).open('ferry_devices', { bindOnly: true })
  const e = await kv.get(deviceKey(device))
  return e?.operation === 'PUT' ? e.json<{ gateway: string }>().gateway : undefined
}

async function waitHolder(device: string, gateway: string | undefined, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const h = await holderOf(device).catch(() => 'unreadable')
    if (h === gateway) return
    if (Date.now() > until) throw new Error(`${device}: registry shows ${h}, expected ${gateway}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

beforeAll(async () => {
  cluster = await startCluster()
  dir = tempDir('ferry-fleet-cluster-')
  nc = await connect({ servers: [...cluster.urls] })
}, 60_000)

afterAll(async () => {
  for (const c of clients) await endClient(c)
  await Promise.all(gateways.map((g) => g.kill('SIGKILL')))
  await nc?.close()
  await cluster?.[Symbol.asyncDispose]()
  if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
})

describe('fleet registry on a cluster', () => {
  it('fleet registry - R3 bucket; after the kill -9 of its leader, a device moving from A to B is taken over and listed', async () => {
    const [a, b] = await Promise.all([gateway('gwA'), gateway('gwB')])
    const first = await connectClient(a.port, 'mover', { protocolVersion: 5 })
    first.on('error', () => {})
    clients.push(first)
    await waitHolder('mover', 'gwA')
    const jsm = await jetstreamManager(nc)
    expect((await jsm.streams.info(STREAM)).config.num_replicas).toBe(3)

    const leader = await cluster.streamLeader(STREAM)
    await cluster.node(leader!).kill()
    const reason = new Promise<number | undefined>((resolve) => first.once('disconnect', (p) => resolve(p.reasonCode)))
    const second = await connectClient(b.port, 'mover', { protocolVersion: 5 })
    second.on('error', () => {})
    clients.push(second)
    expect(await reason).toBe(0x8e)
    await waitHolder('mover', 'gwB')

    // Listed as live once the bucket has its new leader and B's heartbeat is renewed through it.
    let last = ''
    for (const until = Date.now() + 30_000; ; await new Promise((r) => setTimeout(r, 250))) {
      const list = await runFerry(['devices', '--fleet', '--json', '--nats-url', cluster.urls.join(',')])
      last = `exit ${list.code}: ${list.stdout}${list.stderr}`
      if (list.code === 0 && (JSON.parse(list.stdout) as { devices: { device: string; gateway: string; live: boolean }[] }).devices.some((d) => d.device === 'mover' && d.gateway === 'gwB' && d.live)) break
      if (Date.now() > until) throw new Error(`ferry devices --fleet never listed mover at a live gwB: ${last}`)
    }
    await cluster.node(leader!).start()
    await cluster.waitStreamHealthy(STREAM)
  }, 90_000)
})
