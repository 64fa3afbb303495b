// What devices were told (PUBACKs), checked against what the JetStream stream holds: lost,
// duplicated (by Nats-Msg-Id and by payload) and out-of-order records, with examples.
//
// Every test payload carries `{device, seq}`: the device id and a per-device counter. The ledger
// stamps each publish and each PUBACK with a tick of one logical clock (this process sees every
// event of every device in one total order), which defines the two order rules checked:
// - per device: a record must not be stored after a record of the same device with a higher seq
//   (the device published them in seq order, one connection, so that is their log order too);
// - per topic: when X was acknowledged before Y was published, both on the same topic (whatever
//   device), X must be stored before Y. That is the order a subscriber of the topic on the gateway
//   itself would have seen, and the only one a device fleet can observe.
import { connect } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { CONTENT_TYPE_CBOR, decodeCbor, uplinkContentType } from '../../src/codec/index.js'

interface Entry {
  readonly device: string
  readonly seq: number
  readonly topic: string
  readonly sentAt: number
  /** Tick of the PUBACK; 0 while not acknowledged. */
  ackedAt: number
}

/** The PUBACK ledger of a test's devices. */
export class AckLedger {
  private tick = 0
  private readonly entries = new Map<string, Entry>()
  private ackedCount = 0

  /** Notes a publish handed to MQTT; returns its clock tick. */
  sent(device: string, seq: number, topic: string): number {
    const sentAt = ++this.tick
    this.entries.set(key(device, seq), { device, seq, topic, sentAt, ackedAt: 0 })
    return sentAt
  }

  /** Notes its PUBACK. */
  acked(device: string, seq: number): void {
    const e = this.entries.get(key(device, seq))
    if (!e || e.ackedAt !== 0) return
    e.ackedAt = ++this.tick
    this.ackedCount++
  }

  /** The clock now (to split acknowledgements into before / after a fault). */
  now(): number {
    return this.tick
  }

  get size(): number {
    return this.ackedCount
  }

  get(device: string, seq: number): Entry | undefined {
    return this.entries.get(key(device, seq))
  }

  /** Every acknowledged entry. */
  *ackedEntries(): Generator<Entry> {
    for (const e of this.entries.values()) if (e.ackedAt !== 0) yield e
  }
}

const key = (device: string, seq: number): string => `${device}\u0000${seq}`

/** One stored message, reduced to what the checks need. */
export interface StoredRecord {
  /** Stream sequence. */
  readonly streamSeq: number
  readonly subject: string
  readonly msgId: string
  /** From the payload; undefined when it carries no {device, seq} (e.g. Ferry's device events carry `event`). */
  readonly device: string | undefined
  readonly seq: number | undefined
  /** The `event` field of a device event (`connected`, `disconnected`, …). */
  readonly event: string | undefined
  /** A `tag` field, if the payload has one (free text the test chose). */
  readonly tag: string | undefined
}

function decodePayload(data: Uint8Array, contentType: string | undefined): Record<string, unknown> | undefined {
  try {
    const v = contentType === CONTENT_TYPE_CBOR ? decodeCbor(data) : JSON.parse(Buffer.from(data).toString('utf8'))
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

/**
 * Reads every message of `stream` matching `filter` (default `ferry.>`, data and events) in stream
 * order with an ordered consumer. Fails when nothing arrives for `stallMs` while messages are pending.
 */
export async function readRecords(url: string, opts: { stream?: string; filter?: string; stallMs?: number } = {}): Promise<StoredRecord[]> {
  const stream = opts.stream ?? 'FERRY'
  const filter = opts.filter ?? 'ferry.>'
  const stallMs = opts.stallMs ?? 15_000
  const nc = await connect({ servers: url, name: 'ack-ledger reader' })
  const out: StoredRecord[] = []
  try {
    const jsm = await jetstreamManager(nc)
    const info = await jsm.streams.info(stream, { subjects_filter: filter })
    const total = Object.values(info.state.subjects ?? {}).reduce((a, b) => a + b, 0)
    if (total === 0) return out
    const consumer = await jetstream(nc).consumers.get(stream, { filter_subjects: filter })
    const iter = await consumer.consume({ max_messages: 1000 })
    let lastAt = Date.now()
    let stalled = false
    const watchdog = setInterval(() => {
      if (Date.now() - lastAt > stallMs) {
        stalled = true
        void iter.close()
      }
    }, 250)
    try {
      for await (const m of iter) {
        lastAt = Date.now()
        const v = decodePayload(m.data, uplinkContentType(m.headers?.has('Content-Type') ? m.headers.get('Content-Type') : undefined))
        out.push({
          streamSeq: m.seq,
          subject: m.subject,
          msgId: m.headers?.get('Nats-Msg-Id') ?? '',
          device: typeof v?.device === 'string' ? v.device : undefined,
          seq: typeof v?.seq === 'number' ? v.seq : undefined,
          event: typeof v?.event === 'string' ? v.event : undefined,
          tag: typeof v?.tag === 'string' ? v.tag : undefined,
        })
        if (m.info.pending === 0) break
      }
    } finally {
      clearInterval(watchdog)
      await iter.close()
    }
    if (stalled) throw new Error(`stream ${stream} (${filter}): nothing for ${stallMs} ms after ${out.length} of ${total} messages`)
    return out
  } finally {
    await nc.close()
  }
}

/** What the stream holds compared with the ledger. */
export interface LedgerReport {
  /** Acknowledged (device, seq) pairs the check covered. */
  readonly acked: number
  /** Records read that carry a (device, seq) the ledger knows. */
  readonly stored: number
  /** Acknowledged and not stored. */
  readonly lost: number
  /** Extra copies by Nats-Msg-Id (a record stored three times counts 2). */
  readonly duplicateIds: number
  /** Extra copies by payload (device, seq). */
  readonly duplicatePayloads: number
  /** Records stored after a record of the same device with a higher seq. */
  readonly deviceOrder: number
  /** Records stored after a record of the same topic that was published after they were acknowledged. */
  readonly topicOrder: number
  /** Up to `examples` of each kind, readable. */
  readonly examples: { lost: string[]; duplicateIds: string[]; duplicatePayloads: string[]; deviceOrder: string[]; topicOrder: string[] }
}

export interface CheckOptions {
  /** Only acknowledged entries for which this holds must be stored (default: all). */
  readonly mustStore?: (e: { device: string; seq: number; ackedAt: number }) => boolean
  /** Examples kept per kind. Default 5. */
  readonly examples?: number
}

/** Checks `records` (in stream order) against the ledger. Records of devices the ledger does not know are ignored. */
export function checkRecords(ledger: AckLedger, records: readonly StoredRecord[], opts: CheckOptions = {}): LedgerReport {
  const max = opts.examples ?? 5
  const ex = { lost: [] as string[], duplicateIds: [] as string[], duplicatePayloads: [] as string[], deviceOrder: [] as string[], topicOrder: [] as string[] }
  const note = (list: string[], s: () => string): void => {
    if (list.length < max) list.push(s())
  }
  const ids = new Map<string, number>()
  const seen = new Map<string, number>()
  /** Per device: highest seq stored so far, and the stream seq that held it. */
  const top = new Map<string, { seq: number; at: number }>()
  /** Per topic: the latest-published record stored so far (highest sentAt). */
  const latest = new Map<string, { sentAt: number; device: string; seq: number; at: number }>()
  let stored = 0
  let duplicateIds = 0
  let duplicatePayloads = 0
  let deviceOrder = 0
  let topicOrder = 0
  for (const r of records) {
    if (r.device === undefined || r.seq === undefined) continue
    const e = ledger.get(r.device, r.seq)
    if (!e) continue
    stored++
    if (r.msgId !== '') {
      const firstAt = ids.get(r.msgId)
      if (firstAt !== undefined) {
        duplicateIds++
        note(ex.duplicateIds, () => `${r.msgId} (${r.device}#${r.seq}) at stream seq ${firstAt} and ${r.streamSeq}`)
      } else ids.set(r.msgId, r.streamSeq)
    }
    const k = key(r.device, r.seq)
    const firstAt = seen.get(k)
    if (firstAt !== undefined) {
      duplicatePayloads++
      note(ex.duplicatePayloads, () => `${r.device}#${r.seq} at stream seq ${firstAt} and ${r.streamSeq}`)
      continue // order is judged on first copies
    }
    seen.set(k, r.streamSeq)
    const t = top.get(r.device)
    if (t && t.seq > r.seq) {
      deviceOrder++
      note(ex.deviceOrder, () => `${r.device}#${r.seq} at stream seq ${r.streamSeq}, after ${r.device}#${t.seq} at ${t.at}`)
    } else top.set(r.device, { seq: r.seq, at: r.streamSeq })
    const l = latest.get(e.topic)
    if (l && e.ackedAt !== 0 && e.ackedAt < l.sentAt) {
      topicOrder++
      note(ex.topicOrder, () => `${e.topic}: ${r.device}#${r.seq} at stream seq ${r.streamSeq}, after ${l.device}#${l.seq} at ${l.at} which was published after this one's PUBACK`)
    }
    if (!l || e.sentAt > l.sentAt) latest.set(e.topic, { sentAt: e.sentAt, device: r.device, seq: r.seq, at: r.streamSeq })
  }
  let acked = 0
  let lost = 0
  for (const e of ledger.ackedEntries()) {
    if (opts.mustStore && !opts.mustStore(e)) continue
    acked++
    if (!seen.has(key(e.device, e.seq))) {
      lost++
      note(ex.lost, () => `${e.device}#${e.seq} (${e.topic})`)
    }
  }
  return { acked, stored, lost, duplicateIds, duplicatePayloads, deviceOrder, topicOrder, examples: ex }
}

/** One line per finding kind, for assertion messages. */
export function formatReport(r: LedgerReport): string {
  const lines = [
    `acked ${r.acked}, stored ${r.stored}: lost ${r.lost}, duplicates ${r.duplicateIds} by Nats-Msg-Id / ${r.duplicatePayloads} by payload, ` +
      `order violations ${r.deviceOrder} per device / ${r.topicOrder} per topic`,
  ]
  for (const [kind, list] of Object.entries(r.examples)) if (list.length > 0) lines.push(`  ${kind}: ${list.join('; ')}`)
  return lines.join('\n')
}

/** True when nothing was lost, doubled or reordered. */
export function clean(r: LedgerReport): boolean {
  return r.lost === 0 && r.duplicateIds === 0 && r.duplicatePayloads === 0 && r.deviceOrder === 0 && r.topicOrder === 0
}
