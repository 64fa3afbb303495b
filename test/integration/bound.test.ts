// The bound: with upstream down, filling past --log-max-bytes keeps disk use bounded and counts every drop exactly.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor } from '../../src/codec/index.js'
import { startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

const SEGMENT = 64 * 1024
const MAX = 256 * 1024

let nats: NatsServer
beforeAll(async () => {
  nats = await startNats()
  await nats.stop() // upstream starts down; each test brings it up when it wants the drain
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

function diskUse(dir: string): number {
  const seg = path.join(dir, 'segments')
  return fs.readdirSync(seg).reduce((s, f) => s + fs.statSync(path.join(seg, f)).size, 0)
}

function config(dir: string, discard: 'old' | 'new', stream: string): Record<string, unknown> {
  return {
    'log.dataDir': dir,
    'log.segmentBytes': SEGMENT,
    'log.maxBytes': MAX,
    'log.maxRecordBytes': 16 * 1024,
    'log.discard': discard,
    // Exact record accounting below: no presence events in the log.
    presence: 'off',
    'nats.url': nats.url,
    'nats.stream': stream,
    'nats.subjectPrefix': stream.toLowerCase(),
  }
}

describe('log bound', () => {
  it('bound - discard old: disk stays within the bound, evicted records are counted exactly, the newest are forwarded', async () => {
    const dir = tempDir()
    const gw = await startGateway(config(dir, 'old', 'BOUNDOLD'))
    try {
      const c = await connectClient(gw.ingress.address.port, 'filler')
      const total = 4000
      let maxSeen = 0
      for (let from = 1; from <= total; from += 250) {
        await publishSeries(c, 'filler', 250, 20, from)
        maxSeen = Math.max(maxSeen, diskUse(dir))
      }
      await endClient(c)
      expect(maxSeen).toBeLessThanOrEqual(MAX + SEGMENT)
      expect(diskUse(dir)).toBeLessThanOrEqual(MAX)
      const dropped = gw.metrics.drops.get({ reason: 'discard_old' })
      expect(dropped).toBeGreaterThan(0)
      // Exactly the records no longer in the log were counted.
      expect(dropped).toBe(total - (gw.log.durableSeq - gw.log.acked))

      await nats.start()
      const kept = total - dropped
      expect(await waitForCount(nats.url, kept, 30_000, 'BOUNDOLD')).toBe(kept)
      const seqs = (await readStream(nats.url, 'BOUNDOLD')).map((m) => (decodeCbor(m.data) as { seq: number }).seq)
      expect(seqs).toEqual(Array.from({ length: kept }, (_, i) => dropped + 1 + i))
    } finally {
      await gw.close()
      await nats.stop()
    }
  })

  it('bound - discard new: a full log refuses the publish (no PUBACK, client disconnected), counts it, and loses nothing acknowledged', async () => {
    const dir = tempDir()
    const gw = await startGateway(config(dir, 'new', 'BOUNDNEW'))
    try {
      const c = await connectClient(gw.ingress.address.port, 'filler-new')
      const acked: number[] = []
      let refusedAt = 0
      const closed = new Promise<'closed'>((resolve) => c.once('close', () => resolve('closed')))
      for (let seq = 1; seq <= 5000 && refusedAt === 0; seq++) {
        const sent = c.publishAsync('devices/filler-new/telemetry', JSON.stringify({ seq }), { qos: 1 }).then(() => 'acked' as const)
        if ((await Promise.race([sent, closed])) === 'acked') acked.push(seq)
        else refusedAt = seq
      }
      await endClient(c)
      expect(refusedAt).toBeGreaterThan(0)
      expect(diskUse(dir)).toBeLessThanOrEqual(MAX)
      expect(gw.metrics.drops.get({ reason: 'discard_new' })).toBe(1)
      expect(gw.metrics.mqttRefused.get({ reason: 'log_full' })).toBe(1)

      await nats.start()
      expect(await waitForCount(nats.url, acked.length, 30_000, 'BOUNDNEW')).toBe(acked.length)
      const seqs = (await readStream(nats.url, 'BOUNDNEW')).map((m) => (decodeCbor(m.data) as { seq: number }).seq)
      expect(seqs).toEqual(acked)
      // Once forwarded, the space is reusable: publishing works again.
      const c2 = await connectClient(gw.ingress.address.port, 'filler-new')
      await publishSeries(c2, 'filler-new', 300, 20, refusedAt)
      await endClient(c2)
    } finally {
      await gw.close()
      await nats.stop()
    }
  })
})
