// Upstream outage: NATS goes away while devices publish; PUBACKs continue; everything arrives once, in order.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor } from '../../src/codec/index.js'
import type { Gateway } from '../../src/gateway.js'
import { startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

let nats: NatsServer
let gw: Gateway

beforeAll(async () => {
  nats = await startNats()
  gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'nats.ackTimeoutMs': 1000 })
})
afterAll(async () => {
  await gw?.close()
  await nats?.[Symbol.asyncDispose]()
})

describe('upstream outage', () => {
  it('outage - publishes are acknowledged while NATS is down and forwarded in order, once, when it returns', async () => {
    const port = gw.ingress.address.port
    const devices = ['out-a', 'out-b', 'out-c']
    const clients = await Promise.all(devices.map((d) => connectClient(port, d)))
    await Promise.all(clients.map((c, i) => publishSeries(c, devices[i]!, 300)))
    expect(await waitForCount(nats.url, 900)).toBe(900)

    await nats.stop()
    // While upstream is down, devices still get PUBACKs: the log holds the messages.
    const during = await Promise.all(clients.map((c, i) => publishSeries(c, devices[i]!, 700, 20, 301)))
    expect(during.flat()).toHaveLength(2100)
    expect(gw.log.durableSeq - gw.log.acked).toBeGreaterThanOrEqual(2100 - 2048)

    await nats.start()
    // Traffic keeps flowing after the outage too.
    await Promise.all(clients.map((c, i) => publishSeries(c, devices[i]!, 100, 20, 1001)))
    await Promise.all(clients.map(endClient))

    expect(await waitForCount(nats.url, 3300, 60_000)).toBe(3300)
    const msgs = await readStream(nats.url)
    expect(msgs).toHaveLength(3300)
    for (const d of devices) {
      const seqs = msgs.map((m) => decodeCbor(m.data) as { device: string; seq: number }).filter((v) => v.device === d).map((v) => v.seq)
      expect(seqs).toEqual(Array.from({ length: 1100 }, (_, i) => i + 1))
    }
  })
})
