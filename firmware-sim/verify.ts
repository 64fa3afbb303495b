// `firmware-sim verify`: reads the JetStream stream back and checks it against an ack ledger: lost, duplicated,
// out-of-order and unknown messages, per device and in total.
//
// The stream is read once, in stream order, with an ordered consumer filtered to `<prefix>.up.>`; each message is
// reduced to its (device, seq) and dropped, so memory grows with one bit per message (per-device bitsets), not with
// the payloads. A stream of 1M+ messages is fine. With Ferry's --partitions N (option `partitions`), subjects carry
// a partition token (`<prefix>.up.<p>.…`): the client id is read past it, and every message of a device must be in
// the device's partition (partitionOf(device, N)), else it is counted in partitionMismatch (and fails).
import { connect } from '@nats-io/transport-node'
import { jetstream, jetstreamManager, type JsMsg } from '@nats-io/jetstream'
import { CONTENT_TYPE_CBOR, CONTENT_TYPE_JSON, decodeCbor, partitionOf, subjectPartition, uplinkClientId, uplinkContentType } from '../src/codec/index.js'
import { SeqSet, type Ledger } from './ledger.js'
import { decodeFsim } from './payloads.js'

/** Options of {@link verifyStream}. */
export interface VerifyOptions {
  /** NATS server URL(s), comma separated. */
  natsUrl: string
  /** The ledger to check against (see `readLedgerFile`). */
  ledger: Ledger
  /** JetStream stream. Default `FERRY`. */
  stream?: string
  /** Ferry's `--subject-prefix`; device messages are read from `<prefix>.up.>`. Default `ferry`. */
  subjectPrefix?: string
  /**
   * Ferry's `--partitions`: 0 (default) reads subjects without a partition token; N > 0 reads `<prefix>.up.<p>.…`
   * and checks that p is the device's partition (CRC-32 of its id mod N). The two layouts cannot be told apart
   * from a subject alone (a topic may start with a number), so say which the gateway writes.
   */
  partitions?: number
  /** Messages requested per pull. Default 1000. */
  batch?: number
  /** Fail when no message arrives for this long while more are pending, ms. Default 30000 ms. */
  stallTimeoutMs?: number
  /** Called about once a second while reading, with messages read and messages to read in total. */
  onProgress?: (read: number, total: number) => void
}

/** Findings for one device. */
export interface DeviceReport {
  device: string
  /** Last topic level of its messages (the simulator's profile), when any arrived. */
  profile: string | undefined
  /** Distinct seqs acknowledged to the device (in the ledger). */
  acked: number
  /** Distinct seqs found in the stream. */
  stored: number
  /** Acknowledged, not in the stream. */
  lost: number
  /** Extra copies in the stream (a seq stored three times counts 2). */
  duplicates: number
  /** Acknowledged messages stored after an acknowledged message with a higher seq of the same device. */
  outOfOrder: number
  /** Distinct seqs in the stream that are not in the ledger (QoS 0, or unacknowledged when the run ended). */
  unknown: number
  /** The part of `unknown` above the highest seq the device handed to MQTT (e.g. from an earlier run). */
  neverSent: number
  /** Up to 20 lost seqs, ascending. */
  lostSeqs: number[]
  /** Up to 20 duplicated seqs, in stream order. */
  duplicateSeqs: number[]
}

/** What `verify` found. */
export interface VerifyReport {
  stream: string
  /** Subject filter the stream was read with. */
  filter: string
  /** When the ledger file was written, ms since the epoch (0 for a live ledger). */
  ledgerWrittenAtMs: number
  /** Messages read (all of `filter` present when reading started, or until nothing was pending). */
  read: number
  /** Messages reduced to a (device, seq). */
  identified: number
  /** Messages with no recognisable device and seq (not from the simulator, or unreadable). */
  unidentified: number
  /** Binary payloads whose FSIM body checksum does not match: changed on the way. */
  corrupt: number
  /** Messages whose `Ferry-Client` header names another device than the payload. */
  clientMismatch: number
  /** The `partitions` read with (0 = subjects without a partition token). */
  partitions: number
  /** With partitions: identified messages not in their device's partition (or without a partition token). */
  partitionMismatch: number
  /** Up to 5 subjects of those. */
  partitionMismatchSubjects: string[]
  /** Messages of devices the ledger does not know (other runs, other fleets): not checked. */
  foreign: number
  /** Distinct devices among `foreign`. */
  foreignDevices: number
  /** Messages read per Content-Type header. */
  contentTypes: Record<string, number>
  /** Up to 5 subjects of unidentified messages. */
  unidentifiedSubjects: string[]
  totals: Omit<DeviceReport, 'device' | 'profile' | 'lostSeqs' | 'duplicateSeqs'> & { devices: number }
  /** Every device in the ledger, sorted by id. */
  devices: DeviceReport[]
  /** Reading time, ms. */
  elapsedMs: number
  /** lost, duplicates, corrupt and partitionMismatch are all 0. */
  ok: boolean
}

/** The stream could not be read to the end. */
export class VerifyError extends Error {
  override readonly name = 'VerifyError'
}

interface DeviceState {
  seen: SeqSet
  profile: string | undefined
  duplicates: number
  duplicateSeqs: number[]
  lastAckedSeq: number
  outOfOrder: number
  unknown: number
  neverSent: number
}

/** A payload's identity. */
interface Identity {
  device: string
  seq: number
  intact: boolean
}

function fromValue(v: unknown): Identity | undefined {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return undefined
  const o = v as Record<string, unknown>
  const { device, seq } = o
  if (typeof device !== 'string' || typeof seq !== 'number' || !Number.isSafeInteger(seq) || seq < 0) return undefined
  return { device, seq, intact: true }
}

/** Reduces a stored payload to (device, seq) by its Content-Type; undefined when it carries none. */
export function identifyPayload(data: Uint8Array, contentType: string | undefined): Identity | undefined {
  try {
    if (contentType === CONTENT_TYPE_CBOR) return fromValue(decodeCbor(data))
    if (contentType === CONTENT_TYPE_JSON) return fromValue(JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8')))
    // application/octet-stream (or none): binary with the FSIM header, or JSON text forwarded unchanged
    // (--cbor off, --raw-topics).
    const fsim = decodeFsim(data)
    if (fsim !== undefined) return fsim
    if (data.length > 0 && (data[0] === 0x7b || data[0] === 0x20 || data[0] === 0x0a)) {
      return fromValue(JSON.parse(Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('utf8')))
    }
  } catch {
    return undefined
  }
  return undefined
}

function lastToken(subject: string): string {
  const i = subject.lastIndexOf('.')
  return i < 0 ? subject : subject.slice(i + 1)
}

/** Reads the stream and checks it against the ledger. */
export async function verifyStream(opts: VerifyOptions): Promise<VerifyReport> {
  const streamName = opts.stream ?? 'FERRY'
  const prefix = opts.subjectPrefix ?? 'ferry'
  const filter = `${prefix}.up.>`
  const partitions = opts.partitions ?? 0
  if (!Number.isSafeInteger(partitions) || partitions < 0) throw new VerifyError(`partitions must be an integer >= 0, got ${partitions}`)
  const batch = opts.batch ?? 1000
  const stallTimeoutMs = opts.stallTimeoutMs ?? 30_000
  const ledger = opts.ledger
  const states = new Map<string, DeviceState>()
  const contentTypes: Record<string, number> = {}
  const unidentifiedSubjects: string[] = []
  let read = 0
  let identified = 0
  let unidentified = 0
  let corrupt = 0
  let clientMismatch = 0
  let partitionMismatch = 0
  const partitionMismatchSubjects: string[] = []
  let foreign = 0
  const foreignDevices = new Set<string>()
  const t0 = performance.now()

  const stateOf = (device: string): DeviceState => {
    let s = states.get(device)
    if (s === undefined) {
      s = { seen: new SeqSet(), profile: undefined, duplicates: 0, duplicateSeqs: [], lastAckedSeq: 0, outOfOrder: 0, unknown: 0, neverSent: 0 }
      states.set(device, s)
    }
    return s
  }

  function handle(m: JsMsg): void {
    read++
    // Both --uplink-headers forms: absent = application/cbor (compact).
    const ct = uplinkContentType(m.headers?.has('Content-Type') ? m.headers.get('Content-Type') : undefined)
    const ctKey = ct ?? '(none)'
    contentTypes[ctKey] = (contentTypes[ctKey] ?? 0) + 1
    const id = identifyPayload(m.data, ct)
    if (id === undefined) {
      unidentified++
      if (unidentifiedSubjects.length < 5) unidentifiedSubjects.push(m.subject)
      return
    }
    identified++
    if (!id.intact) corrupt++
    // Ferry-Client, or (compact, header absent) the client id the subject carries.
    let client: string | undefined
    try {
      client = uplinkClientId(prefix, m.subject, m.headers?.get('Ferry-Client') || undefined, partitions)
    } catch {
      client = undefined
    }
    if (client !== undefined && client !== '' && client !== id.device) clientMismatch++
    if (partitions > 0) {
      let p: number | undefined
      try {
        p = subjectPartition(prefix, m.subject, partitions)
      } catch {
        p = undefined
      }
      if (p !== partitionOf(id.device, partitions)) {
        partitionMismatch++
        if (partitionMismatchSubjects.length < 5) partitionMismatchSubjects.push(m.subject)
      }
    }
    const entry = ledger.get(id.device)
    if (entry === undefined) {
      foreign++
      foreignDevices.add(id.device)
      return
    }
    const s = stateOf(id.device)
    s.profile ??= lastToken(m.subject)
    if (!s.seen.add(id.seq)) {
      s.duplicates++
      if (s.duplicateSeqs.length < 20) s.duplicateSeqs.push(id.seq)
      return
    }
    if (entry.acked.has(id.seq)) {
      if (id.seq < s.lastAckedSeq) s.outOfOrder++
      else s.lastAckedSeq = id.seq
    } else {
      s.unknown++
      if (id.seq > entry.sentMax) s.neverSent++
    }
  }

  const nc = await connect({ servers: opts.natsUrl.split(','), name: 'firmware-sim verify' })
  try {
    const jsm = await jetstreamManager(nc)
    try {
      await jsm.streams.info(streamName)
    } catch (err) {
      throw new VerifyError(`stream "${streamName}" not readable on ${opts.natsUrl}: ${(err as Error).message}`, { cause: err })
    }
    const js = jetstream(nc)
    const consumer = await js.consumers.get(streamName, { filter_subjects: filter }).catch((err: unknown) => {
      throw new VerifyError(`cannot read ${filter} from stream "${streamName}": ${(err as Error).message}`, { cause: err })
    })
    const total = (await consumer.info(true)).num_pending
    if (total > 0) {
      const iter = await consumer.consume({ max_messages: batch })
      let lastAt = performance.now()
      let lastProgressAt = lastAt
      let stalled = false
      const watchdog = setInterval(() => {
        if (performance.now() - lastAt > stallTimeoutMs) {
          stalled = true
          void iter.close()
        }
      }, 1000)
      try {
        for await (const m of iter) {
          handle(m)
          const now = performance.now()
          lastAt = now
          if (opts.onProgress !== undefined && now - lastProgressAt >= 1000) {
            lastProgressAt = now
            opts.onProgress(read, total)
          }
          // pending: messages matching the filter after this one; 0 = the end of what the stream holds now.
          if (m.info.pending === 0) break
        }
      } finally {
        clearInterval(watchdog)
        await iter.close()
      }
      if (stalled) throw new VerifyError(`no message from stream "${streamName}" for ${stallTimeoutMs} ms after ${read} of ${total}`)
    }
    await consumer.delete().catch(() => false)
  } finally {
    await nc.close()
  }

  const devices: DeviceReport[] = []
  const ids = [...ledger.allDevices()].map(([device]) => device)
  const totals = { devices: 0, acked: 0, stored: 0, lost: 0, duplicates: 0, outOfOrder: 0, unknown: 0, neverSent: 0 }
  for (const device of ids.sort()) {
    const s = states.get(device)
    const acked = ledger.get(device)?.acked
    let lost = 0
    const lostSeqs: number[] = []
    acked?.forEach((seq) => {
      if (s?.seen.has(seq) === true) return
      lost++
      if (lostSeqs.length < 20) lostSeqs.push(seq)
    })
    const r: DeviceReport = {
      device,
      profile: s?.profile,
      acked: acked?.size ?? 0,
      stored: s?.seen.size ?? 0,
      lost,
      duplicates: s?.duplicates ?? 0,
      outOfOrder: s?.outOfOrder ?? 0,
      unknown: s?.unknown ?? 0,
      neverSent: s?.neverSent ?? 0,
      lostSeqs,
      duplicateSeqs: s?.duplicateSeqs ?? [],
    }
    devices.push(r)
    totals.devices++
    totals.acked += r.acked
    totals.stored += r.stored
    totals.lost += r.lost
    totals.duplicates += r.duplicates
    totals.outOfOrder += r.outOfOrder
    totals.unknown += r.unknown
    totals.neverSent += r.neverSent
  }
  return {
    stream: streamName,
    filter,
    ledgerWrittenAtMs: ledger.writtenAtMs,
    read,
    identified,
    unidentified,
    corrupt,
    clientMismatch,
    partitions,
    partitionMismatch,
    partitionMismatchSubjects,
    foreign,
    foreignDevices: foreignDevices.size,
    contentTypes,
    unidentifiedSubjects,
    totals,
    devices,
    elapsedMs: performance.now() - t0,
    ok: totals.lost === 0 && totals.duplicates === 0 && corrupt === 0 && partitionMismatch === 0,
  }
}

const n = (v: number): string => v.toLocaleString('en-US')

function ranges(seqs: number[]): string {
  const out: string[] = []
  for (let i = 0; i < seqs.length; ) {
    let j = i
    while (j + 1 < seqs.length && seqs[j + 1] === (seqs[j] ?? 0) + 1) j++
    out.push(i === j ? String(seqs[i]) : `${seqs[i]}-${seqs[j]}`)
    i = j + 1
  }
  return out.join(',')
}

/** Human-readable report: totals, then the devices with findings (at most `maxDevices` rows). */
export function formatReport(r: VerifyReport, maxDevices = 20): string {
  const lines: string[] = []
  const secs = r.elapsedMs / 1000
  lines.push(
    `stream ${r.stream} (${r.filter}): read ${n(r.read)} messages in ${secs.toFixed(1)} s` +
      (secs > 0 ? ` (${n(Math.round(r.read / secs))}/s)` : ''),
  )
  lines.push(
    `  identified ${n(r.identified)}, unidentified ${n(r.unidentified)}, corrupt ${n(r.corrupt)}, ` +
      `Ferry-Client mismatch ${n(r.clientMismatch)}`,
  )
  if (r.partitions > 0) {
    lines.push(
      `  partitions ${r.partitions}: ${n(r.partitionMismatch)} messages outside their device's partition` +
        (r.partitionMismatchSubjects.length > 0 ? `, e.g. on ${r.partitionMismatchSubjects.join(', ')}` : ''),
    )
  }
  if (r.foreign > 0) lines.push(`  ${n(r.foreign)} messages of ${n(r.foreignDevices)} devices not in the ledger (other runs or fleets): not checked`)
  if (r.unidentifiedSubjects.length > 0) lines.push(`  unidentified e.g. on ${r.unidentifiedSubjects.join(', ')}`)
  const cts = Object.entries(r.contentTypes)
    .map(([k, v]) => `${k} ${n(v)}`)
    .join(', ')
  if (cts !== '') lines.push(`  content types: ${cts}`)
  if (r.ledgerWrittenAtMs > 0) lines.push(`  ledger written ${new Date(r.ledgerWrittenAtMs).toISOString()}`)
  const t = r.totals
  lines.push(
    `total over ${n(t.devices)} devices: acked ${n(t.acked)}, stored ${n(t.stored)}, lost ${n(t.lost)}, ` +
      `duplicates ${n(t.duplicates)}, out-of-order ${n(t.outOfOrder)}, unknown ${n(t.unknown)} ` +
      `(${n(t.unknown - t.neverSent)} sent but not acked: QoS 0 or in flight at exit; ${n(t.neverSent)} above the highest seq sent)`,
  )
  const bad = r.devices.filter((d) => d.lost > 0 || d.duplicates > 0 || d.outOfOrder > 0)
  if (bad.length > 0) {
    lines.push(`devices with findings: ${n(bad.length)}`)
    const w = Math.max(6, ...bad.slice(0, maxDevices).map((d) => d.device.length))
    lines.push(`  ${'device'.padEnd(w)}  profile    acked  stored   lost    dup    ooo  lost seqs / duplicated seqs`)
    for (const d of bad.slice(0, maxDevices)) {
      lines.push(
        `  ${d.device.padEnd(w)}  ${(d.profile ?? '-').padEnd(9)} ${String(d.acked).padStart(6)} ${String(d.stored).padStart(7)} ` +
          `${String(d.lost).padStart(6)} ${String(d.duplicates).padStart(6)} ${String(d.outOfOrder).padStart(6)}  ` +
          `${d.lostSeqs.length > 0 ? `lost ${ranges(d.lostSeqs)}${d.lost > d.lostSeqs.length ? ',…' : ''}` : ''}` +
          `${d.duplicateSeqs.length > 0 ? ` dup ${d.duplicateSeqs.join(',')}${d.duplicates > d.duplicateSeqs.length ? ',…' : ''}` : ''}`,
      )
    }
    if (bad.length > maxDevices) lines.push(`  … ${n(bad.length - maxDevices)} more (--json lists every device)`)
  }
  lines.push(
    r.ok
      ? 'OK: 0 lost, 0 duplicates, 0 corrupt'
      : `FAIL: ${n(t.lost)} lost, ${n(t.duplicates)} duplicates, ${n(r.corrupt)} corrupt` +
          (r.partitionMismatch > 0 ? `, ${n(r.partitionMismatch)} outside their partition` : ''),
  )
  return lines.join('\n')
}
