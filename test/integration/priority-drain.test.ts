// Priority classes while a backlog drains (issue 16, tests 1 and 6), on the bundled gateway:
// - a day-long outage compressed: 100,000 telemetry records (class low) in the backlog, then normal
//   records, then alarms (class high); when upstream returns every alarm is in the stream before every
//   normal record of the backlog, and those before every telemetry record; every topic in order,
//   nothing lost or doubled (ledger of PUBACKed messages);
// - kill -9 during a prioritised drain, restart: 0 lost, 0 duplicates, order per topic (and class) kept.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import type { MqttClient } from 'mqtt'
import { AckLedger, checkRecords, clean, formatReport, readRecords } from '../helpers/ack-ledger.js'
import type { StoredRecord } from '../helpers/ack-ledger.js'
import { startGateway as startInProcess, spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { publishTracked, until } from '../helpers/load.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, streamCount } from '../helpers/stream.js'

const PRIORITY = 'alarms/#=high,+/+/telemetry=low'

let nats: NatsServer
/** nats-server stopped by a test (the outage) and not started again yet. */
let natsDown = false
beforeAll(async () => {
  nats = await startNats()
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

async function natsUp(): Promise<void> {
  await nats.start()
  natsDown = false
}

/** The class of a stored record of these tests, by its subject (ferry.up.<topic levels>). */
function classOf(r: StoredRecord): 'high' | 'normal' | 'low' {
  if (r.subject.startsWith('ferry.up.alarms.')) return 'high'
  if (r.subject.endsWith('.telemetry')) return 'low'
  return 'normal'
}

/** The highest and lowest stream seqs of the records of each class (of the ledger's devices). */
function spans(records: readonly StoredRecord[]): Record<'high' | 'normal' | 'low', { min: number; max: number; n: number }> {
  const s = { high: { min: Infinity, max: -Infinity, n: 0 }, normal: { min: Infinity, max: -Infinity, n: 0 }, low: { min: Infinity, max: -Infinity, n: 0 } }
  for (const r of records) {
    if (r.device === undefined) continue
    const c = s[classOf(r)]
    c.min = Math.min(c.min, r.streamSeq)
    c.max = Math.max(c.max, r.streamSeq)
    c.n++
  }
  return s
}

/** Publishes `count` records per device (each device its own client and ledger name), all in parallel. */
async function publishAll(clients: readonly MqttClient[], ledger: AckLedger, opts: { device: (i: number) => string; topic: (i: number) => string; count: number; window?: number }): Promise<void> {
  await Promise.all(clients.map((c, i) => publishTracked(c, ledger, { device: opts.device(i), topic: opts.topic(i), count: opts.count, window: opts.window ?? 200 })))
}

async function startGateway(dir: string, id: string): Promise<GatewayProcess> {
  return spawnGateway(['--mqtt-listen', '127.0.0.1:0', '--data-dir', dir, '--nats-url', nats.url, '--gateway-id', id, '--priority', PRIORITY, '--presence', 'off'])
}

/** Brings the stream up through the gateway (one normal record stored), then stops nats-server: the outage. */
async function upThenDown(gw: GatewayProcess, ledger: AckLedger, tag: string): Promise<void> {
  const c = await connectClient(gw.port, `${tag}-warmup`)
  await publishTracked(c, ledger, { device: `${tag}-warmup`, topic: `status/${tag}-warmup`, count: 1 })
  await endClient(c)
  await until(async () => (await streamCount(nats.url)) >= 1, 20_000, 'the warm-up record in the stream')
  natsDown = true
  await nats.stop()
}

describe('priority drain', () => {
  it('priority drain - after a long outage, alarms published after 100,000 telemetry records are stored before them; every topic in order, nothing lost or doubled', async () => {
    const t0 = Date.now()
    const ledger = new AckLedger()
    const base = await streamCount(nats.url)
    const gw = await startGateway(tempDir('ferry-prio-'), 'prio')
    const clients: MqttClient[] = []
    try {
      await upThenDown(gw, ledger, 'p1')
      // The backlog, in publish order: telemetry (low), then status (normal), then alarms (high).
      const DEVICES = 10
      for (let i = 0; i < DEVICES; i++) clients.push(await connectClient(gw.port, `p1-dev-${i}`))
      await publishAll(clients, ledger, { device: (i) => `p1-dev-${i}`, topic: (i) => `site/p1-dev-${i}/telemetry`, count: 10_000 })
      await publishAll(clients.slice(0, 4), ledger, { device: (i) => `p1-dev-${i}.status`, topic: (i) => `status/p1-dev-${i}`, count: 250, window: 50 })
      await publishAll(clients.slice(0, 5), ledger, { device: (i) => `p1-dev-${i}.alarm`, topic: (i) => `alarms/p1-dev-${i}/fire`, count: 100, window: 20 })
      const published = Date.now()
      expect(ledger.size).toBe(1 + 100_000 + 1000 + 500)
      await natsUp()
      const expected = base + ledger.size
      await until(async () => (await streamCount(nats.url)) >= expected, 60_000, async () => `${expected} records in the stream (has ${await streamCount(nats.url)})`, 250)
      const drained = Date.now()
      const records = (await readRecords(nats.url)).filter((r) => r.device?.startsWith('p1-') === true)
      const report = checkRecords(ledger, records)
      expect(clean(report), formatReport(report)).toBe(true)
      expect(records.length).toBe(ledger.size)
      const s = spans(records.filter((r) => r.device !== 'p1-warmup'))
      expect(s.high.n).toBe(500)
      expect(s.normal.n).toBe(1000)
      expect(s.low.n).toBe(100_000)
      // Strict priority: every alarm before every status record, and those before every telemetry record of the backlog.
      expect(s.high.max, `alarms stored at ${s.high.min}..${s.high.max}, status from ${s.normal.min}`).toBeLessThan(s.normal.min)
      expect(s.normal.max, `status stored at ${s.normal.min}..${s.normal.max}, telemetry from ${s.low.min}`).toBeLessThan(s.low.min)
      // Message ids name the class of the log (normal keeps the id without a class).
      const ids = (c: 'high' | 'normal' | 'low'): string[] => records.filter((r) => r.device !== 'p1-warmup' && classOf(r) === c).map((r) => r.msgId)
      expect(ids('high').every((id) => id.startsWith('prio.high:'))).toBe(true)
      expect(ids('low').every((id) => id.startsWith('prio.low:'))).toBe(true)
      expect(ids('normal').every((id) => /^prio:\d+:\d+$/.test(id))).toBe(true)
      console.log(`priority drain: backlog published in ${((published - t0) / 1000).toFixed(1)} s, drained in ${((drained - published) / 1000).toFixed(1)} s`)
      expect(await gw.kill('SIGTERM')).toBe(0)
    } finally {
      await Promise.all(clients.map((c) => endClient(c)))
      await gw.kill('SIGKILL')
      if (natsDown) await natsUp()
    }
  })

  it('priority drain - kill -9 during a prioritised drain: after the restart 0 lost, 0 duplicates, every topic and class in order', async () => {
    const ledger = new AckLedger()
    const dir = tempDir('ferry-prio-kill-')
    const base = await streamCount(nats.url)
    let gw = await startGateway(dir, 'pkill')
    const clients: MqttClient[] = []
    try {
      await upThenDown(gw, ledger, 'p6')
      const DEVICES = 6
      for (let i = 0; i < DEVICES; i++) clients.push(await connectClient(gw.port, `p6-dev-${i}`))
      await publishAll(clients, ledger, { device: (i) => `p6-dev-${i}`, topic: (i) => `site/p6-dev-${i}/telemetry`, count: 4000 })
      await publishAll(clients.slice(0, 3), ledger, { device: (i) => `p6-dev-${i}.status`, topic: (i) => `status/p6-dev-${i}`, count: 1000 })
      await publishAll(clients, ledger, { device: (i) => `p6-dev-${i}.alarm`, topic: (i) => `alarms/p6-dev-${i}/fire`, count: 1000 })
      await Promise.all(clients.splice(0).map((c) => endClient(c)))
      await natsUp()
      // Kill while the drain is under way: some alarms stored, the rest and all the others not yet.
      const killAt = base + 1 + 1500
      await until(async () => (await streamCount(nats.url)) >= killAt, 30_000, `${killAt} records stored before the kill`, 20)
      await gw.kill('SIGKILL')
      const atKill = await streamCount(nats.url)
      expect(atKill, 'the kill came after the drain had finished: nothing tested').toBeLessThan(base + ledger.size)
      gw = await startGateway(dir, 'pkill')
      const expected = base + ledger.size
      await until(async () => (await streamCount(nats.url)) >= expected, 60_000, async () => `${expected} records in the stream (has ${await streamCount(nats.url)})`, 250)
      // A late resend would show up as a duplicate: give it a moment.
      await new Promise((r) => setTimeout(r, 500))
      const records = (await readRecords(nats.url)).filter((r) => r.device?.startsWith('p6-') === true)
      const report = checkRecords(ledger, records)
      expect(clean(report), formatReport(report)).toBe(true)
      expect(records.length).toBe(ledger.size)
      const s = spans(records.filter((r) => r.device !== 'p6-warmup'))
      expect([s.high.n, s.normal.n, s.low.n]).toEqual([6000, 3000, 24_000])
      // Still strictly prioritised across the crash.
      expect(s.high.max).toBeLessThan(s.normal.min)
      expect(s.normal.max).toBeLessThan(s.low.min)
      console.log(`priority drain kill: ${atKill - base} of ${ledger.size} stored at the kill`)
      expect(await gw.kill('SIGTERM')).toBe(0)
    } finally {
      await Promise.all(clients.map((c) => endClient(c)))
      await gw.kill('SIGKILL')
      if (natsDown) await natsUp()
    }
  })

  it('priority drain - a high class whose records JetStream refuses keeps moving (dead letters naming the class), then the others go', async () => {
    const nc = await connect({ servers: nats.url })
    try {
      await (await jetstreamManager(nc)).streams.add({ name: 'PDL', subjects: ['pdl.up.>'], max_msg_size: 300 })
    } finally {
      await nc.close()
    }
    const dir = tempDir('ferry-prio-dl-')
    const gw = await startInProcess({ 'log.dataDir': dir, 'nats.url': nats.url, 'nats.stream': 'PDL', 'nats.subjectPrefix': 'pdl', presence: 'off', 'log.priority': 'alarms/#=high', gatewayId: 'pdl' })
    try {
      const c = await connectClient(gw.ingress.address.port, 'pdl-dev')
      // In the log of class high: two alarms too large for the stream, then one that fits; in normal: three records.
      await c.publishAsync('alarms/big', Buffer.alloc(1000, 1), { qos: 1 })
      await c.publishAsync('alarms/big', Buffer.alloc(1000, 2), { qos: 1 })
      await c.publishAsync('alarms/ok', 'alarm', { qos: 1 })
      for (const n of ['n1', 'n2', 'n3']) await c.publishAsync('status/x', n, { qos: 1 })
      await endClient(c)
      await until(async () => (await streamCount(nats.url, 'PDL')) >= 4, 30_000, 'the fitting alarm and the three normal records')
      const stored = (await readStream(nats.url, 'PDL')).map((m) => ({ data: Buffer.from(m.data).toString(), id: m.headers['Nats-Msg-Id'] }))
      // The alarm that fits went first (after the two in front of it were dead-lettered), then the normal records.
      expect(stored.map((m) => m.data)).toEqual(['alarm', 'n1', 'n2', 'n3'])
      expect(stored[0]!.id).toMatch(/^pdl\.high:\d+:3$/)
      expect(stored[1]!.id).toMatch(/^pdl:\d+:1$/)
      await until(() => fs.existsSync(path.join(dir, 'dead-letter.jsonl')) && fs.readFileSync(path.join(dir, 'dead-letter.jsonl'), 'utf8').trim().split('\n').length === 2, 10_000, 'two dead letters')
      const dead = fs.readFileSync(path.join(dir, 'dead-letter.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { seq: number; class?: string })
      expect(dead.map((d) => [d.seq, d.class])).toEqual([
        [1, 'high'],
        [2, 'high'],
      ])
    } finally {
      await gw.close()
    }
  })
})
