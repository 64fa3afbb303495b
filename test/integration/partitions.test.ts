// Partitions (issue 15, test 6): the bundled gateway with `--partitions 4` under QoS 1 load from many devices;
// four JetStream consumers, each filtered to one partition (`ferry.up.<p>.>`), together see every acknowledged
// message exactly once, each device's messages all in its one partition and in order; its events land under
// `ferry.events.<p>.>` in the same partition. Then firmware-sim verify --partitions 4 on the same stream.
import fs from 'node:fs'
import path from 'node:path'
import { AckPolicy, DeliverPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import type { ConsumerMessages } from '@nats-io/jetstream'
import { connect, headers as natsHeaders, nanos } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { readLedgerFile, startFleet, verifyStream } from '../../firmware-sim/index.js'
import { CONTENT_TYPE_CBOR, decodeCbor, eventSubjectDevice, partitionOf, subjectPartition, subjectToTopic, tokenToDevice, uplinkClientId, uplinkContentType } from '../../src/codec/index.js'
import { AckLedger, readRecords } from '../helpers/ack-ledger.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { startLoad, until } from '../helpers/load.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

const N = 4
const DEVICES = 40
/** Acknowledged messages to reach before the load stops (bounded: at most LOAD_MS of load). */
const TARGET = DEVICES * 40
const LOAD_MS = 25_000

/** Device ids: plain ones, and some whose id needs escaping in a subject token or is not ASCII. */
const ids = Array.from({ length: DEVICES }, (_, i) => (i % 10 === 3 ? `dev.${i}` : i % 10 === 7 ? `gerät ${i}` : `dev-${String(i).padStart(3, '0')}`))
/** Topics: mostly `devices/<id>/telemetry` (compact headers leave Ferry-Client out), some starting with a number. */
const topicOf = (d: string): string => (ids.indexOf(d) % 5 === 4 ? `7/${d}/x` : `devices/${d}/telemetry`)

let nats: NatsServer
let gw: GatewayProcess
let dir: string

beforeAll(async () => {
  nats = await startNats()
  dir = tempDir('ferry-partitions-')
  gw = await spawnGateway(['--data-dir', path.join(dir, 'data'), '--nats-url', nats.url, '--partitions', String(N), '--uplink-headers', 'compact', '--gateway-id', 'part-gw'])
})
afterAll(async () => {
  await gw?.kill('SIGTERM')
  await nats?.[Symbol.asyncDispose]()
  if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
})

interface Seen {
  readonly partition: number
  readonly subject: string
  readonly device: string
  readonly seq: number
  readonly client: string
}

/** A durable pull consumer on `ferry.up.<p>.>` that acks everything it gets, in delivery order. */
async function partitionConsumer(nc: NatsConnection, p: number): Promise<{ seen: Seen[]; stop: () => Promise<void> }> {
  const jsm = await jetstreamManager(nc)
  const name = `part_${p}`
  await jsm.consumers.add('FERRY', { durable_name: name, filter_subject: `ferry.up.${p}.>`, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, ack_wait: nanos(60_000), max_ack_pending: 1000 })
  const consumer = await jetstream(nc).consumers.get('FERRY', name)
  const seen: Seen[] = []
  const iter: ConsumerMessages = await consumer.consume({ max_messages: 200 })
  const done = (async () => {
    for await (const m of iter) {
      const ct = uplinkContentType(m.headers?.has('Content-Type') ? m.headers.get('Content-Type') : undefined)
      const v = (ct === CONTENT_TYPE_CBOR ? decodeCbor(m.data) : JSON.parse(Buffer.from(m.data).toString('utf8'))) as { device: string; seq: number }
      const header = m.headers?.has('Ferry-Client') ? m.headers.get('Ferry-Client') : undefined
      seen.push({ partition: p, subject: m.subject, device: v.device, seq: v.seq, client: uplinkClientId('ferry', m.subject, header, N) })
      m.ack()
    }
  })()
  return {
    seen,
    stop: async () => {
      await iter.close()
      await done
    },
  }
}

describe('partitions', () => {
  it(`partitions - --partitions ${N}: ${N} consumers, one per partition, see every acknowledged message once, each device in one partition and in order; events in the device's partition`, async () => {
    const nc = await connect({ servers: nats.url })
    const consumers: Awaited<ReturnType<typeof partitionConsumer>>[] = []
    try {
      const jsm = await jetstreamManager(nc)
      await until(async () => jsm.streams.info('FERRY').then(() => true, () => false), 20_000, 'the gateway to create stream FERRY')
      for (let p = 0; p < N; p++) consumers.push(await partitionConsumer(nc, p))

      const ledger = new AckLedger()
      const load = await startLoad(gw.port, ledger, { devices: ids, topicOf, ratePerSec: 40, window: 10 })
      try {
        await until(() => load.acked() >= TARGET, LOAD_MS, () => `${TARGET} PUBACKs (got ${load.acked()})`)
      } finally {
        await load.stop()
      }
      const acked = [...ledger.ackedEntries()]
      expect(acked.length).toBeGreaterThanOrEqual(TARGET)
      const all = (): Seen[] => consumers.flatMap((c) => c.seen)
      const wanted = new Set(acked.map((e) => `${e.device}\u0000${e.seq}`))
      await until(
        () => {
          const got = new Set(all().map((s) => `${s.device}\u0000${s.seq}`))
          for (const k of wanted) if (!got.has(k)) return false
          return true
        },
        30_000,
        () => `every acknowledged message at a partition consumer (${all().length} of ${wanted.size})`,
      )
      // Nothing more pending or unacknowledged at any consumer: what they saw is all they will see.
      await until(
        async () => {
          for (let p = 0; p < N; p++) {
            const i = await jsm.consumers.info('FERRY', `part_${p}`)
            if (i.num_pending > 0 || i.num_ack_pending > 0) return false
          }
          return true
        },
        20_000,
        'the partition consumers to drain',
      )
      for (const c of consumers) await c.stop()

      const seen = all()
      // Exactly once: no (device, seq) twice across the four consumers, and nothing unknown beyond the
      // messages in flight when the load stopped (QoS 1 sent, PUBACK not back yet: stored, not in the ledger).
      const keys = seen.map((s) => `${s.device}\u0000${s.seq}`)
      expect(new Set(keys).size, 'duplicates across partition consumers').toBe(keys.length)
      for (const k of wanted) expect(keys.includes(k)).toBe(true)
      // Each device: one partition, the one its client id gives; subject, topic and client id read back.
      const partitionsOf = new Map<string, Set<number>>()
      for (const s of seen) {
        expect(ids).toContain(s.device)
        expect(s.partition).toBe(partitionOf(s.device, N))
        expect(subjectPartition('ferry', s.subject, N)).toBe(s.partition)
        expect(subjectToTopic('ferry', s.subject, N)).toBe(topicOf(s.device))
        expect(s.client).toBe(s.device)
        let set = partitionsOf.get(s.device)
        if (set === undefined) partitionsOf.set(s.device, (set = new Set()))
        set.add(s.partition)
      }
      expect(partitionsOf.size).toBe(DEVICES)
      for (const [d, set] of partitionsOf) expect([...set], d).toEqual([partitionOf(d, N)])
      // Every partition has devices (fixed ids: 40 over 4).
      for (let p = 0; p < N; p++) expect(seen.some((s) => s.partition === p), `partition ${p}`).toBe(true)
      // In order: each consumer delivered each device's messages in seq order.
      for (const c of consumers) {
        const last = new Map<string, number>()
        for (const s of c.seen) {
          expect(s.seq, `${s.device} in partition ${s.partition}`).toBeGreaterThan(last.get(s.device) ?? 0)
          last.set(s.device, s.seq)
        }
      }

      // Events (connected, disconnected) of every device, under ferry.events.<its partition>.>.
      await until(
        async () => {
          const evs = await readRecords(nats.url, { filter: 'ferry.events.>' })
          return ids.every((d) => evs.some((e) => e.device === d && e.event === 'disconnected'))
        },
        20_000,
        'a disconnected event of every device',
      )
      const eventDevices = new Set<string>()
      for (let p = 0; p < N; p++) {
        for (const e of await readRecords(nats.url, { filter: `ferry.events.${p}.>` })) {
          expect(e.device).toBeDefined()
          expect(partitionOf(e.device!, N), e.subject).toBe(p)
          expect(tokenToDevice(eventSubjectDevice('ferry', e.subject, N)!)).toBe(e.device)
          expect(uplinkClientId('ferry', e.subject, undefined, N)).toBe(e.device)
          if (e.event === 'connected') eventDevices.add(e.device!)
        }
      }
      expect([...eventDevices].sort()).toEqual([...ids].sort())
    } finally {
      for (const c of consumers) await c.stop().catch(() => {})
      await nc.close()
    }
  }, 120_000)

  it('partitions - firmware-sim verify --partitions: 0 lost, 0 duplicates, every message in its partition; a copy in another partition is found', async () => {
    const fleet = startFleet({ url: `mqtt://127.0.0.1:${gw.port}`, devices: 12, ratePerDevice: 20, count: 20, idPrefix: 'psim', rampMs: 100, seed: 15 })
    const ledgerPath = path.join(dir, 'ledger.fsl')
    try {
      await fleet.done()
      await fleet.writeLedger(ledgerPath)
    } finally {
      await fleet.close()
    }
    const ledger = await readLedgerFile(ledgerPath)
    let report = await verifyStream({ natsUrl: nats.url, ledger, partitions: N })
    const deadline = Date.now() + 15_000
    while (report.totals.lost > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 200))
      report = await verifyStream({ natsUrl: nats.url, ledger, partitions: N })
    }
    expect(report.totals).toMatchObject({ devices: 12, acked: 240, stored: 240, lost: 0, duplicates: 0, outOfOrder: 0 })
    expect(report.partitions).toBe(N)
    expect(report.partitionMismatch).toBe(0)
    expect(report.clientMismatch).toBe(0)
    expect(report.ok).toBe(true)

    // One stored message copied into the partition after its own: verify counts it as outside its partition.
    const nc = await connect({ servers: nats.url })
    try {
      const original = (await readRecords(nats.url, { filter: 'ferry.up.>' })).find((r) => r.device === 'psim-00001')
      expect(original).toBeDefined()
      const p = subjectPartition('ferry', original!.subject, N)
      const wrong = original!.subject.replace(`ferry.up.${p}.`, `ferry.up.${(p + 1) % N}.`)
      const msg = await (await jetstreamManager(nc)).streams.getMessage('FERRY', { seq: original!.streamSeq })
      const h = natsHeaders()
      for (const [k, v] of msg!.header) if (k !== 'Nats-Msg-Id') h.set(k, v[0]!)
      await jetstream(nc).publish(wrong, msg!.data, { msgID: 'partitions-test:copy', headers: h })
    } finally {
      await nc.close()
    }
    const bad = await verifyStream({ natsUrl: nats.url, ledger, partitions: N })
    expect(bad.partitionMismatch).toBe(1)
    expect(bad.totals.duplicates).toBe(1)
    expect(bad.ok).toBe(false)
  }, 90_000)
})
