// Issue 16, test 2: the log fills under --discard old with mixed priority classes while NATS is down.
// Only the lowest class loses data, and the counted drops (ferry_drops_total{reason="discard_old",
// class=...}) equal exactly the PUBACKed messages missing from the stream once NATS is back.
import fs from 'node:fs'
import path from 'node:path'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { AckLedger, readRecords } from '../helpers/ack-ledger.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { waitForCount } from '../helpers/stream.js'

const SEGMENT = 64 * 1024
/** Six segments: the three class logs together (the config requires at least four and the reserve). */
const MAX = 6 * SEGMENT
const STREAM = 'PRIOBOUND'
const CLASSES = { high: { device: 'pb-hi', topic: 'alarms/pb-hi/fire' }, normal: { device: 'pb-no', topic: 'devices/pb-no/status' }, low: { device: 'pb-lo', topic: 'devices/pb-lo/telemetry' } } as const
type Cls = keyof typeof CLASSES

let nats: NatsServer
beforeAll(async () => {
  nats = await startNats()
  await nats.stop() // upstream is down while the log fills
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

/** Sum of the samples of `name` whose labels include every one of `labels`. */
async function metric(g: GatewayProcess, name: string, labels: string[] = []): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.httpPort}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) if (labels.every((l) => m[1]?.includes(l) ?? false)) sum += Number(m[2])
  return sum
}

function segmentBytesOnDisk(dir: string): number {
  let n = 0
  for (const sub of ['', 'high', 'low']) {
    const d = path.join(dir, sub, 'segments')
    if (fs.existsSync(d)) for (const f of fs.readdirSync(d)) n += fs.statSync(path.join(d, f)).size
  }
  return n
}

/** Publishes seqs [from, from+count) of one class with up to `window` in flight; each PUBACK goes in the ledger. */
async function publish(c: MqttClient, ledger: AckLedger, cls: Cls, from: number, count: number, window = 16): Promise<void> {
  const { device, topic } = CLASSES[cls]
  const pad = 'x'.repeat(cls === 'low' ? 300 : 60)
  let next = from
  const worker = async (): Promise<void> => {
    while (next < from + count) {
      const seq = next++
      ledger.sent(device, seq, topic)
      await c.publishAsync(topic, JSON.stringify({ device, seq, pad }), { qos: 1 })
      ledger.acked(device, seq)
    }
  }
  await Promise.all(Array.from({ length: window }, worker))
}

describe('priority bound', () => {
  it('priority bound - full under discard old with mixed classes: only low loses data, and its drop count equals exactly the PUBACKed messages missing upstream', async () => {
    const dir = tempDir('ferry-prio-bound-')
    const gw = await spawnGateway([
      '--mqtt-listen', '127.0.0.1:0',
      '--data-dir', dir,
      '--nats-url', nats.url,
      '--stream', STREAM,
      '--subject-prefix', 'priobound',
      '--gateway-id', 'priobound',
      '--presence', 'off', // only device records in the logs
      '--log-segment-bytes', String(SEGMENT),
      '--log-max-bytes', String(MAX),
      '--max-record-bytes', '16KiB',
      '--discard', 'old',
      '--priority', 'alarms/#=high,+/+/telemetry=low',
    ])
    const ledger = new AckLedger()
    const clients = new Map<Cls, MqttClient>()
    try {
      for (const cls of Object.keys(CLASSES) as Cls[]) clients.set(cls, await connectClient(gw.port, CLASSES[cls].device))
      // Low floods (about four times the bound); normal and high come in between, far less than the bound.
      const sent = { high: 0, normal: 0, low: 0 }
      let maxDisk = 0
      for (let round = 0; round < 25; round++) {
        await Promise.all([
          publish(clients.get('low')!, ledger, 'low', sent.low + 1, 160),
          publish(clients.get('normal')!, ledger, 'normal', sent.normal + 1, 8, 4),
          publish(clients.get('high')!, ledger, 'high', sent.high + 1, 4, 2),
        ])
        sent.low += 160
        sent.normal += 8
        sent.high += 4
        maxDisk = Math.max(maxDisk, segmentBytesOnDisk(dir))
      }
      for (const c of clients.values()) await endClient(c)
      expect(ledger.size).toBe(sent.low + sent.normal + sent.high) // discard old never refuses
      expect(maxDisk).toBeLessThanOrEqual(MAX)

      const dropped = {
        high: await metric(gw, 'ferry_drops_total', ['reason="discard_old"', 'class="high"']),
        normal: await metric(gw, 'ferry_drops_total', ['reason="discard_old"', 'class="normal"']),
        low: await metric(gw, 'ferry_drops_total', ['reason="discard_old"', 'class="low"']),
      }
      expect(dropped.low).toBeGreaterThan(0)
      expect(dropped.normal).toBe(0)
      expect(dropped.high).toBe(0)

      await nats.start()
      const expected = ledger.size - dropped.low
      expect(await waitForCount(nats.url, expected, 30_000, STREAM)).toBe(expected)
      const stored = await readRecords(nats.url, { stream: STREAM, filter: 'priobound.>' })
      const seen = new Map<string, number>()
      for (const r of stored) if (r.device !== undefined && r.seq !== undefined) seen.set(`${r.device}:${r.seq}`, (seen.get(`${r.device}:${r.seq}`) ?? 0) + 1)
      const missing = { high: 0, normal: 0, low: 0 }
      for (const e of ledger.ackedEntries()) {
        const cls = (Object.keys(CLASSES) as Cls[]).find((k) => CLASSES[k].device === e.device)!
        if (!seen.has(`${e.device}:${e.seq}`)) missing[cls]++
      }
      expect([...seen.values()].filter((n) => n > 1)).toEqual([]) // no duplicates
      expect(missing).toEqual(dropped)
      // The low records kept are the newest ones, in order.
      const lowSeqs = stored.filter((r) => r.device === CLASSES.low.device).map((r) => r.seq!)
      expect(lowSeqs).toEqual([...lowSeqs].sort((a, b) => a - b))
      expect(lowSeqs.at(-1)).toBe(sent.low)
      // After the drain, the counts did not move.
      expect(await metric(gw, 'ferry_drops_total', ['reason="discard_old"'])).toBe(dropped.low)
    } finally {
      for (const c of clients.values()) await endClient(c).catch(() => {})
      await gw.kill('SIGTERM')
      await nats.stop()
    }
  }, 60_000)
})
