// Live lane: while a backlog drains, new messages on topics without backlog go ahead; every topic keeps its order; nothing is lost or doubled.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor } from '../../src/codec/index.js'
import type { Gateway } from '../../src/gateway.js'
import { memoryLogger, startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

let nats: NatsServer
let gw: Gateway
const lines: string[] = []

beforeAll(async () => {
  nats = await startNats()
  // A small window makes the drain slow enough to publish live traffic during it.
  gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'nats.maxInflight': 16 }, memoryLogger(lines))
  await waitForCount(nats.url, 0)
  await nats.stop()
})
afterAll(async () => {
  await gw?.close()
  await nats?.[Symbol.asyncDispose]()
})

describe('live lane', () => {
  it('live lane - live topics overtake the backlog, backlog topics keep their order, all arrive once', async () => {
    const port = gw.ingress.address.port
    const backlogDevices = ['bk-0', 'bk-1', 'bk-2', 'bk-3']
    const clients = await Promise.all(backlogDevices.map((d) => connectClient(port, d)))
    await Promise.all(clients.map((c, i) => publishSeries(c, backlogDevices[i]!, 4000)))
    expect(gw.log.durableSeq - gw.log.acked).toBeGreaterThanOrEqual(16_000)
    expect(lines.some((l) => l.includes('live lane open'))).toBe(false)

    await nats.start()
    const until = Date.now() + 20_000
    while (!lines.some((l) => l.includes('live lane open')) && Date.now() < until) await new Promise((r) => setTimeout(r, 5))
    // Connected once the drain runs: nothing of this device (not even its "connected" event) is in the backlog.
    const live = await connectClient(port, 'live-0')
    // During the drain: a device without backlog, and a backlog device that keeps publishing.
    for (let i = 1; i <= 20; i++) {
      await publishSeries(live, 'live-0', 1, 1, i)
      await publishSeries(clients[0]!, 'bk-0', 1, 1, 4000 + i)
      await new Promise((r) => setTimeout(r, 20))
    }
    await endClient(live)
    await Promise.all(clients.map(endClient))

    const total = 16_000 + 40
    expect(await waitForCount(nats.url, total, 60_000)).toBe(total)
    const msgs = (await readStream(nats.url)).map((m, i) => ({ at: i, ...(decodeCbor(m.data) as { device: string; seq: number }) }))
    expect(msgs).toHaveLength(total)
    const byDevice = new Map<string, { at: number; seq: number }[]>()
    for (const m of msgs) byDevice.set(m.device, [...(byDevice.get(m.device) ?? []), m])
    // Every device: each seq exactly once, in order.
    for (const d of backlogDevices) {
      const expected = d === 'bk-0' ? 4020 : 4000
      expect(byDevice.get(d)!.map((m) => m.seq)).toEqual(Array.from({ length: expected }, (_, i) => i + 1))
    }
    expect(byDevice.get('live-0')!.map((m) => m.seq)).toEqual(Array.from({ length: 20 }, (_, i) => i + 1))
    // The live device did not wait for the whole backlog.
    const lastBacklog = Math.max(...backlogDevices.flatMap((d) => byDevice.get(d)!.filter((m) => m.seq <= 4000).map((m) => m.at)))
    const firstLive = byDevice.get('live-0')![0]!.at
    expect(firstLive).toBeLessThan(lastBacklog)
    expect(gw.metrics.drops.get({ reason: 'corrupt' }) + gw.metrics.drops.get({ reason: 'discard_old' })).toBe(0)
    // The ack cursor covered everything once drained, and the lane closed.
    const deadline = Date.now() + 10_000
    while (gw.log.acked < gw.log.durableSeq && Date.now() < deadline) await new Promise((r) => setTimeout(r, 50))
    expect(lines.some((l) => l.includes('live lane closed'))).toBe(true)
    expect(gw.log.acked).toBe(gw.log.durableSeq)
  })
})
