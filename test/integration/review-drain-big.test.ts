// Review of issue 16 (--drain-max-rate): records larger than one second's worth of a byte cap still
// drain at the cap. Six 8 KiB payloads under '4KiB/s': after the first (the burst), one every 2 s, so the
// last is stored about 9 s after the first (the stream's own store times), not about 5 s.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { startGateway } from '../helpers/gateway.js'
import { until } from '../helpers/load.js'
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

describe('review drain big records', () => {
  it('review drain big records - payloads of two seconds of the byte cap go one every two seconds', async () => {
    const RECORDS = 6
    const gw = await startGateway({ 'log.dataDir': tempDir('ferry-drain-big-'), 'nats.url': nats.url, 'nats.stream': 'DRB', 'nats.subjectPrefix': 'drb', presence: 'off', 'forward.drainMaxRate': '4KiB/s' })
    try {
      const c = await connectClient(gw.ingress.address.port, 'drb-dev')
      for (let i = 0; i < RECORDS; i++) await c.publishAsync('big/drb-dev', Buffer.alloc(8192, i + 1), { qos: 1 })
      await endClient(c)
      await until(async () => (await streamCount(nats.url, 'DRB', 'all')) >= RECORDS, 30_000, async () => `${RECORDS} records stored (has ${await streamCount(nats.url, 'DRB', 'all')})`, 100)
      const nc = await connect({ servers: nats.url })
      try {
        const jsm = await jetstreamManager(nc)
        const first = (await jsm.streams.getMessage('DRB', { seq: 1 }))!
        const last = (await jsm.streams.getMessage('DRB', { seq: RECORDS }))!
        expect(last.data.length).toBe(8192)
        const seconds = (last.time.getTime() - first.time.getTime()) / 1000
        console.log(`review drain big records: ${RECORDS} x 8 KiB at 4 KiB/s stored over ${seconds.toFixed(2)} s`)
        // At the cap: (RECORDS - 1) x 8 KiB after the first at 4 KiB/s, less the one-second burst = 9 s; 3 s more than twice the cap.
        expect(seconds, 'records larger than the burst went faster than the cap').toBeGreaterThan(7.5)
      } finally {
        await nc.close()
      }
    } finally {
      await gw.close()
    }
  })
})
