// Expiry reclaim (issue 16): with NATS down, segments whose records all expired are deleted (the log
// shrinks, ferry_log_size_bytes) and their records counted as expired; also at the start after a
// restart while still down; once NATS is back none of them is forwarded, and every expiring record
// is counted exactly once (by the log's reclaim or, for those sharing a segment with live records,
// by the forwarder when it skips them).
import fs from 'node:fs'
import path from 'node:path'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readRecords } from '../helpers/ack-ledger.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { waitForCount } from '../helpers/stream.js'

const STREAM = 'TTLRECLAIM'
const DEVICE = 'ttl-dev'
const TOPIC = `devices/${DEVICE}/telemetry`

let nats: NatsServer
beforeAll(async () => {
  nats = await startNats()
  await nats.stop() // upstream down while records expire
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

async function metric(g: GatewayProcess, name: string, labels: string[] = []): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.httpPort}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) if (labels.every((l) => m[1]?.includes(l) ?? false)) sum += Number(m[2])
  return sum
}

async function until(cond: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = Date.now() + ms
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`${what}: not within ${ms} ms`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

function segmentBytesOnDisk(dir: string): number {
  const d = path.join(dir, 'segments')
  return fs.readdirSync(d).reduce((a, f) => a + fs.statSync(path.join(d, f)).size, 0)
}

/** Publishes `count` records tagged `tag` (MQTT 5, QoS 1), with a Message Expiry Interval when `expirySeconds` is given. */
async function publish(c: MqttClient, tag: string, from: number, count: number, expirySeconds?: number): Promise<void> {
  const pad = 'x'.repeat(300)
  let next = from
  const worker = async (): Promise<void> => {
    while (next < from + count) {
      const seq = next++
      await c.publishAsync(TOPIC, JSON.stringify({ device: DEVICE, seq, tag, pad }), {
        qos: 1,
        ...(expirySeconds !== undefined ? { properties: { messageExpiryInterval: expirySeconds } } : {}),
      })
    }
  }
  await Promise.all(Array.from({ length: 16 }, worker))
}

describe('ttl reclaim', () => {
  it('ttl reclaim - expired segments are deleted and counted while NATS is down, also at a restart; none is forwarded when NATS returns', async () => {
    const dir = tempDir('ferry-ttl-reclaim-')
    const args = [
      '--mqtt-listen', '127.0.0.1:0',
      '--data-dir', dir,
      '--nats-url', nats.url,
      '--stream', STREAM,
      '--subject-prefix', 'ttlreclaim',
      '--gateway-id', 'ttlreclaim',
      '--presence', 'off',
      '--log-segment-bytes', '64KiB', // about 150 records a segment
      '--max-record-bytes', '16KiB',
      '--log-max-bytes', '8MiB',
    ]
    let gw = await spawnGateway(args)
    let c: MqttClient | undefined
    try {
      // 1. While running: 600 records expiring in 2 s (about four segments, the last one the active
      // segment: rolled once it has all expired).
      c = await connectClient(gw.port, DEVICE, { protocolVersion: 5 })
      await publish(c, 'exp', 1, 600, 2)
      const size1 = await metric(gw, 'ferry_log_size_bytes')
      expect(size1).toBeGreaterThan(3 * 64 * 1024)
      await until(async () => (await metric(gw, 'ferry_drops_total', ['reason="expired"'])) >= 600, 15_000, 'expired segments reclaimed')
      const reclaimed1 = await metric(gw, 'ferry_drops_total', ['reason="expired"'])
      expect(reclaimed1).toBe(600)
      expect(await metric(gw, 'ferry_log_size_bytes')).toBe(0)
      expect(segmentBytesOnDisk(dir)).toBe(0)
      expect(gw.output()).toContain('segments expired before they were forwarded')

      // 2. Records that expire while the gateway is stopped (still no NATS) go at the next start.
      await publish(c, 'exp2', 601, 600, 3)
      await publish(c, 'keep', 1201, 10)
      const publishedAt = Date.now()
      await endClient(c)
      c = undefined
      expect(await metric(gw, 'ferry_drops_total', ['reason="expired"'])).toBe(reclaimed1) // not expired yet
      await gw.kill('SIGTERM')
      const diskBefore = segmentBytesOnDisk(dir)
      // Expiry is 3 s; the seal keeps it in whole seconds, rounded up.
      await new Promise((r) => setTimeout(r, Math.max(0, publishedAt + 4500 - Date.now())))
      gw = await spawnGateway(args)
      const reclaimed2 = await metric(gw, 'ferry_drops_total', ['reason="expired"'])
      expect(reclaimed2).toBeGreaterThanOrEqual(600 - 160) // counted at the start, before NATS is back
      expect(segmentBytesOnDisk(dir)).toBeLessThan(diskBefore - 2.5 * 64 * 1024)
      expect(await metric(gw, 'ferry_log_size_bytes')).toBe(segmentBytesOnDisk(dir))

      // 3. NATS returns: only the records that never expire are forwarded; the expired ones left in
      // the segment shared with them are skipped and counted by the forwarder: each exactly once.
      await nats.start()
      expect(await waitForCount(nats.url, 10, 30_000, STREAM)).toBe(10)
      await until(async () => reclaimed1 + (await metric(gw, 'ferry_drops_total', ['reason="expired"'])) >= 1200, 15_000, 'every expired record counted')
      expect(reclaimed1 + (await metric(gw, 'ferry_drops_total', ['reason="expired"']))).toBe(1200)
      const stored = await readRecords(nats.url, { stream: STREAM, filter: 'ttlreclaim.>' })
      expect(stored.map((r) => r.tag)).toEqual(Array<string>(10).fill('keep'))
      expect(stored.map((r) => r.seq)).toEqual(Array.from({ length: 10 }, (_, i) => 1201 + i))
    } finally {
      if (c) await endClient(c).catch(() => {})
      await gw.kill('SIGTERM')
      await nats.stop()
    }
  }, 60_000)
})
