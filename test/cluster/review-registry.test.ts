// Review of the fleet registry (issue 15) on a 3-node JetStream cluster, in process (a stand-in for ingress's
// Devices, plain counters for metrics): a watcher whose consumer lived on a node that dies.
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { EventEmitter } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FleetRegistry } from '../../src/fleet/index.js'
import type { FleetMetrics } from '../../src/fleet/index.js'
import type { DeviceInfo, Devices } from '../../src/ingress/index.js'
import { silentLogger } from '../../src/logger.js'
import { startCluster } from '../helpers/cluster.js'
import type { NatsCluster } from '../helpers/cluster.js'

const BUCKET = 'rv_watch'
const STREAM = `KV_${BUCKET}`

let cluster: NatsCluster
let nc: NatsConnection
const registries: FleetRegistry[] = []

class StandInDevices extends EventEmitter {
  readonly takenOver: [string, string][] = []
  takeOver(clientId: string, by: string): boolean {
    this.takenOver.push([clientId, by])
    return true
  }
}

const metrics: FleetMetrics = {
  fleetTakeovers: { inc: () => {} },
  fleetRegistryUpdates: { inc: () => {} },
  fleetStaleRemoved: { inc: () => {} },
  fleetGateways: { collect: () => {} },
  fleetIdConflicts: { inc: () => {} },
}

async function waitFor(what: string, probe: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs
  for (;;) {
    if (await Promise.resolve(probe()).catch(() => false)) return
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

beforeAll(async () => {
  cluster = await startCluster()
  nc = await connect({ servers: [...cluster.urls] })
}, 60_000)

afterAll(async () => {
  for (const r of registries) await r.close(Date.now() + 2000)
  await nc?.close()
  await cluster?.[Symbol.asyncDispose]()
})

describe('review registry on a cluster', () => {
  it('review registry (cluster) - a watcher whose consumer was on a node killed -9 is replaced: a device taken over elsewhere is still closed here', async () => {
    const kv = await new Kvm(jetstream(nc, { timeout: 5000 })).create(BUCKET, { history: 1, replicas: 3 })
    const jsm = await jetstreamManager(nc)
    // A registry connected to one node whose watcher's consumer lives on another.
    let found: { reg: FleetRegistry; devices: StandInDevices; consumerNode: string } | undefined
    const consumers = async (): Promise<Map<string, string | undefined>> => {
      const m = new Map<string, string | undefined>()
      for await (const ci of jsm.consumers.list(STREAM)) m.set(ci.name, ci.cluster?.leader)
      return m
    }
    for (let attempt = 0; attempt < 9 && !found; attempt++) {
      const node = cluster.nodes[attempt % cluster.nodes.length]!
      const before = await consumers()
      const devices = new StandInDevices()
      const reg = new FleetRegistry({ servers: [node.url], connectOptions: {}, bucket: BUCKET, replicas: 3, gatewayId: 'gwA', heartbeatMs: 500, version: 'review', devices: devices as unknown as Devices, logger: silentLogger, metrics })
      registries.push(reg)
      await waitFor('the registry ready', () => reg.status.ready)
      // Its watcher's consumer: the one that was not there before.
      const mine = [...(await consumers())].filter(([name]) => !before.has(name)).map(([, leader]) => leader)
      const consumerNode = mine.length === 1 ? mine[0] : undefined
      if (consumerNode !== undefined && consumerNode !== node.name) found = { reg, devices, consumerNode }
      else await reg.close(Date.now() + 2000)
    }
    expect(found).toBeDefined()
    const { devices, consumerNode } = found!
    const d: DeviceInfo = { clientId: 'mover', address: '127.0.0.1:1', connectedAt: Date.now(), clean: true, messagesIn: 0, messagesOut: 0 }
    devices.emit('online', d)
    await waitFor('the device written', async () => (await kv.get('devices.mover'))?.json<{ gateway: string }>().gateway === 'gwA')

    await cluster.node(consumerNode).kill()
    // The device connects to gwB: a newer write (retried while the bucket elects a leader, if it must).
    const value = JSON.stringify({ device: 'mover', gateway: 'gwB', boot: 'bB', since: Date.now(), address: '10.0.0.9:1', clean: true })
    await waitFor('gwB\'s write', async () => (await kv.put('devices.mover', value)) > 0, 30_000)
    // gwA closes its stale session. nats.js alone notices the lost consumer only after missing two of its
    // 30 s idle heartbeats (60 s); the bucket's own leader election may take several seconds first.
    await waitFor('gwA yields', () => devices.takenOver.some(([id, by]) => id === 'mover' && by === 'gwB'), 35_000)

    await cluster.node(consumerNode).start()
    await cluster.waitStreamHealthy(STREAM)
  }, 90_000)
})
