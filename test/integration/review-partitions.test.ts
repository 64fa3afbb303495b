// Review of issue 15's partitions against a real nats-server: a stream whose events filter fits only the
// unpartitioned event subjects (`<prefix>.events.*.*`, four tokens).
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { streamCount } from '../helpers/stream.js'

let nats: NatsServer
beforeAll(async () => {
  nats = await startNats()
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

async function until(cond: () => boolean | Promise<boolean>, ms: number, what: string): Promise<void> {
  const end = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > end) throw new Error(`not met in ${ms} ms: ${what}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

describe('partitions review - events the stream does not capture', () => {
  it('partitions review - --partitions 4 with a stream capturing <prefix>.events.*.* only: events are dropped and counted, device data still flows (the stream check probes the partitioned event layout)', async () => {
    const nc = await connect({ servers: nats.url })
    try {
      await (await jetstreamManager(nc)).streams.add({ name: 'NARROW', subjects: ['narrow.up.>', 'narrow.events.*.*'] })
    } finally {
      await nc.close()
    }
    const gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'nats.stream': 'NARROW', 'nats.subjectPrefix': 'narrow', 'nats.partitions': 4 })
    try {
      const c = await connectClient(gw.ingress.address.port, 'dev-1') // its `connected` event is record 1
      for (let i = 0; i < 3; i++) await c.publishAsync('devices/dev-1/telemetry', `{"n":${i}}`, { qos: 1 })
      await endClient(c)
      // `narrow.events.<p>.dev-1.connected` has five tokens: no stream captures it. Before the fix the stream
      // check asked JetStream about `narrow.events.probe.connected` (four), was told "captured", and every
      // publish of the event got no responders (503): the stream was checked again, found "fine", the
      // event resent, forever, and the device data behind it waited in the log.
      await until(async () => (await streamCount(nats.url, 'NARROW')) === 3, 15_000, 'the 3 device messages in NARROW')
      await until(() => gw.metrics.drops.get({ reason: 'events_not_captured' }) >= 1, 15_000, 'events dropped as not captured')
      await until(() => gw.log.acked === gw.log.durableSeq, 15_000, 'the log fully acknowledged')
      expect(await streamCount(nats.url, 'NARROW', 'events')).toBe(0)
    } finally {
      await gw.close()
    }
  }, 60_000)
})
