// The cluster helper itself: three nodes form one JetStream cluster, an R3 stream gets a leader, a killed
// leader is replaced and comes back current.
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startCluster } from '../helpers/cluster.js'
import type { NatsCluster } from '../helpers/cluster.js'

let cluster: NatsCluster
beforeAll(async () => {
  cluster = await startCluster()
})
afterAll(async () => {
  await cluster?.[Symbol.asyncDispose]()
})

describe('cluster helper', () => {
  it('an R3 stream survives the kill -9 of its leader: a new leader is elected and the old one catches up', async () => {
    const nc = await connect({ servers: [...cluster.urls] })
    try {
      const jsm = await jetstreamManager(nc)
      await jsm.streams.add({ name: 'HELPER', subjects: ['helper.>'], num_replicas: 3 })
      const js = jetstream(nc)
      for (let i = 0; i < 20; i++) await js.publish('helper.x', String(i), { msgID: `m${i}` })
      const leader = await cluster.streamLeader('HELPER')
      expect(['n1', 'n2', 'n3']).toContain(leader)
      await cluster.node(leader!).kill()
      let next: string | undefined
      for (const until = Date.now() + 30_000; Date.now() < until; await new Promise((r) => setTimeout(r, 100))) {
        next = await cluster.streamLeader('HELPER')
        if (next && next !== leader) break
      }
      expect(next).toBeDefined()
      expect(next).not.toBe(leader)
      await cluster.node(leader!).start()
      await cluster.waitStreamHealthy('HELPER')
      expect((await jsm.streams.info('HELPER')).state.messages).toBe(20)
    } finally {
      await nc.close()
    }
  })
})
