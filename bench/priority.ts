// Benchmark: prioritised drain. A backlog with 1 % alarms spread through it builds while upstream is down; once it is
// back, how long until the LAST alarm is in JetStream, and until the last message is?
//
// Run: npm run bench -- --only priority, or
//      npx tsx bench/priority.ts [--messages 1000000] [--devices 50] [--alarm-every 100] [--runs 3] [--peer-runs 1]
//                                [--max-seconds 330] [--audit] [--quick] [--only ferry-classes,ferry,mosquitto-tuned,nats-mqtt]
//   --quick: 100,000 messages, 1 run of everything (development). --audit: also read every stream back (order per
//   topic, duplicates; about 5–10 s per million messages, so off by default: per-subject counts are always checked).
//   No further round of runs starts when, from the average round so far, it would end after --max-seconds (the
//   default keeps `npm run bench -- --only priority` under 6 minutes on the 2-core machine).
//   (needs nats-server, mosquitto and `npm run build`)
// Load (the same for every subject): `--devices` MQTT 3.1.1 clients, QoS 1, closed loop with 10 in flight each,
// ~200-byte JSON `{device, seq, ts, pad}`; each device's every `--alarm-every`-th message (phase staggered across
// devices, so alarms are spread evenly through the backlog) goes to `alarms/<device>`, the rest to
// `sites/<device>/telemetry`.
// Subjects (fresh servers each; interleaved run by run; Ferry's two --runs times, the peers --peer-runs times):
//   ferry-classes    the bundled gateway with --priority 'alarms/#=high' (one log per class, high drained first);
//                    nats-server stopped while the backlog is buffered, then started again (same store).
//   ferry            the same gateway without --priority (one FIFO log): the "without classes" drain rate.
//   mosquitto-tuned  Mosquitto (bench/peers.ts, tuned: unlimited in-memory queue) bridging alarms/# and sites/# at
//                    QoS 1 to nats-server's MQTT listener; the same outage. No priority: its queue is FIFO.
//   nats-mqtt        NATS's MQTT listener cannot buffer while its own server is down, so, as in drain.ts, the same
//                    messages are published straight to it with no outage; times count from the first publish
//                    (its ingest, for scale). Mosquitto with its default max_queued_messages 1000 is left out: it
//                    keeps 1,000 of an outage's messages (drain.ts measures that).
// Measured, from upstream's return (nats-server accepting connections again: its "Server is ready" log line): time until the last alarm is in
// JetStream and until the last message is, from the stream's own timestamps read after the drain (the last message
// of each subject, `last_by_subj`), so nothing reads the stream while it drains; completion is detected by polling the
// stream's per-subject counts every 250 ms. Drain rate = messages stored ÷ time to the last one (as drain.ts); once
// flowing = the same from the first message stored; steady = messages/s between the stream's messages at 10 % and
// 90 % of its sequence range (stream timestamps), free of reconnect delays (each class's forwarder reconnects on its
// own jittered backoff) and of the tail. Ratio ferry-classes ÷ ferry, steady (target ≥ 0.90: classes at most 10 %
// slower), also once flowing and from upstream's return. Medians of the runs.
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import type { JetStreamManager, MsgRequest } from '@nats-io/jetstream'
import { connectAsync } from 'mqtt'
import type { MqttClient } from 'mqtt'
import { parseArgs } from 'node:util'
import { commandLine, decodePayload, ferryCommand, median, medianOf, printTable, runIfMain, writeResult } from './lib.js'
import { DEVICES_STREAM, MOSQUITTO_VARIANT_CONFIG, addDevicesStream, mosquittoVersion, startFerryEdge, startMosquittoEdge, startRestartableNats } from './peers.js'
import type { Edge } from './peers.js'

const { values } = parseArgs({
  options: {
    messages: { type: 'string' },
    devices: { type: 'string', default: '50' },
    'alarm-every': { type: 'string', default: '100' },
    runs: { type: 'string' },
    'peer-runs': { type: 'string', default: '1' },
    'max-seconds': { type: 'string', default: '330' },
    audit: { type: 'boolean', default: false },
    quick: { type: 'boolean', default: false },
    only: { type: 'string' },
  },
})
const QUICK = values.quick
const MESSAGES = Number(values.messages ?? (QUICK ? 100_000 : 1_000_000))
const DEVICES = Number(values.devices)
const ALARM_EVERY = Number(values['alarm-every'])
const RUNS = Number(values.runs ?? (QUICK ? 1 : 3))
const PEER_RUNS = Math.min(RUNS, Number(values['peer-runs']))
const AUDIT = values.audit
/** No further round of runs starts when, from the average round so far, it would end after this. */
const MAX_SECONDS = Number(values['max-seconds'])
const ONLY = values.only?.split(',').filter(Boolean)
const PAYLOAD = 200
const INFLIGHT = 10
const POLL_MS = 250
/** Priority rule of the ferry-classes subject. */
const PRIORITY = 'alarms/#=high'
const TOPICS = ['alarms/#', 'sites/#']
const SUBJECTS = ['ferry-classes', 'ferry', 'mosquitto-tuned', 'nats-mqtt'] as const
type Subject = (typeof SUBJECTS)[number]

for (const [k, v] of Object.entries({ messages: MESSAGES, devices: DEVICES, 'alarm-every': ALARM_EVERY, runs: RUNS })) if (!Number.isInteger(v) || v < 1) throw new Error(`--${k} must be an integer ≥ 1, got ${String(v)}`)
const unknown = ONLY?.filter((o) => !(SUBJECTS as readonly string[]).includes(o)) ?? []
if (unknown.length) throw new Error(`--only: no subject named ${unknown.join(', ')} (subjects: ${SUBJECTS.join(', ')})`)

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

// ---------- load: devices publishing telemetry with alarms interleaved ----------

const deviceId = (i: number): string => `prio-${String(i + 1).padStart(5, '0')}`
/** Device i's alarms are its seqs ≡ phase (mod ALARM_EVERY); phases spread over [0, ALARM_EVERY) across the devices. */
const alarmPhase = (i: number): number => Math.floor((i * ALARM_EVERY) / DEVICES) % ALARM_EVERY
const isAlarm = (i: number, seq: number): boolean => seq % ALARM_EVERY === alarmPhase(i)
const topicOf = (i: number, seq: number): string => (isAlarm(i, seq) ? `alarms/${deviceId(i)}` : `sites/${deviceId(i)}/telemetry`)

/** Acknowledged messages of one load. */
interface LoadResult {
  acked: number
  alarmsAcked: number
  /** Acknowledged seqs per device (ascending as acknowledged per device is not guaranteed; a Set). */
  ackedSeqs: Set<number>[]
  /** Wall clock (ms) when the first message was handed to the clients (every device connected). */
  startedAtMs: number
  seconds: number
}

/**
 * `DEVICES` clients each publish `perDevice` QoS 1 messages, closed loop (INFLIGHT unacknowledged at most), and
 * disconnect; resolves once every message is acknowledged. A failed publish is re-sent with the same seq.
 */
async function publishLoad(port: number, perDevice: number, deadlineMs = 600_000): Promise<LoadResult> {
  const clients: MqttClient[] = []
  try {
    for (let i = 0; i < DEVICES; i++) clients.push(await connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: deviceId(i), clean: true, reconnectPeriod: 0, keepalive: 30, protocolVersion: 4 }))
    const ackedSeqs = clients.map(() => new Set<number>())
    let acked = 0
    let alarmsAcked = 0
    const padTo = (o: Record<string, unknown>): string => {
      const base = JSON.stringify({ ...o, pad: '' })
      return JSON.stringify({ ...o, pad: 'x'.repeat(Math.max(0, PAYLOAD - base.length)) })
    }
    const startedAtMs = Date.now()
    const t0 = performance.now()
    await new Promise<void>((resolve, reject) => {
      let finished = 0
      const timer = setTimeout(() => reject(new Error(`load: ${acked} of ${perDevice * DEVICES} acknowledged after ${deadlineMs} ms`)), deadlineMs)
      clients.forEach((client, i) => {
        let next = 1
        let inflight = 0
        const retry: number[] = []
        const device = deviceId(i)
        client.on('close', () => {
          if (ackedSeqs[i]!.size < perDevice) {
            clearTimeout(timer)
            reject(new Error(`load: ${device} lost its connection with ${perDevice - ackedSeqs[i]!.size} messages unacknowledged`))
          }
        })
        const send = (seq: number): void => {
          inflight++
          client.publish(topicOf(i, seq), padTo({ device, seq, ts: Date.now() }), { qos: 1 }, (err) => {
            inflight--
            if (err) retry.push(seq)
            else if (!ackedSeqs[i]!.has(seq)) {
              ackedSeqs[i]!.add(seq)
              acked++
              if (isAlarm(i, seq)) alarmsAcked++
              if (ackedSeqs[i]!.size === perDevice) {
                if (++finished === clients.length) {
                  clearTimeout(timer)
                  resolve()
                }
                return
              }
            }
            pump()
          })
        }
        const pump = (): void => {
          while (inflight < INFLIGHT && (retry.length || next <= perDevice)) send(retry.shift() ?? next++)
        }
        pump()
      })
    })
    return { acked, alarmsAcked, ackedSeqs, startedAtMs, seconds: (performance.now() - t0) / 1000 }
  } finally {
    await Promise.all(clients.map((c) => c.endAsync().catch(() => undefined)))
  }
}

// ---------- reading the stream ----------

/** Messages per stored subject under `prefix` (the topics' subjects), or undefined while the server does not answer. */
async function subjectCounts(jsm: JetStreamManager, stream: string, prefix: string): Promise<Map<string, number> | undefined> {
  try {
    const info = await jsm.streams.info(stream, { subjects_filter: `${prefix}>` })
    return new Map(Object.entries(info.state.subjects ?? {}))
  } catch {
    return undefined
  }
}

const sum = (xs: Iterable<number>): number => {
  let n = 0
  for (const x of xs) n += x
  return n
}

/** Per subject of the run: results of one subject's run. Times in seconds from `fromMs` (upstream back, or first publish). */
interface RunResult {
  acked: number
  alarmsAcked: number
  /** Messages/s acknowledged to the devices while the backlog built (nats-mqtt: while publishing). */
  fillPerS: number
  stored: number
  alarmsStored: number
  /** Acknowledged (per topic count) and not in the stream. */
  missing: number
  /** Stored beyond what was acknowledged, per topic (copies). */
  extra: number
  /** First message of the run in JetStream (reconnect delay). */
  firstS: number
  firstAlarmS: number
  firstTelemetryS: number
  lastTelemetryS: number
  lastAlarmS: number
  lastMessageS: number
  /** lastAlarmS ÷ lastMessageS. */
  lastAlarmShare: number
  /** lastAlarmS − firstS: how long the alarms took once anything reached the stream (without the reconnect delay). */
  alarmsAfterFirstS: number
  /** stored ÷ lastMessageS. */
  drainPerS: number
  /** stored ÷ (lastMessageS − firstS): the rate once messages flow, without the reconnect delay. */
  flowingPerS: number
  /** Messages/s between the stream's messages at 10 % and 90 % of its sequence range (the target's figure). */
  steadyPerS: number
  /** --audit: read back in stream order. */
  audit?: { read: number; duplicates: number; outOfOrder: number; lost: number; alarmsBeforeLastTelemetryPct: number }
}

/**
 * Waits until the stream holds `load.acked` messages of the topics (or they stop growing for 5 s, an edge that lost
 * some; none after 60 s; or 10 minutes), then reads the last message of every subject to time the last alarm and the last message.
 */
async function measure(nc: NatsConnection, stream: string, prefix: string, load: LoadResult, fromMs: number): Promise<RunResult> {
  const jsm = await jetstreamManager(nc, { timeout: 2000 })
  const t0 = performance.now()
  let counts = new Map<string, number>()
  let total = 0
  let lastGrowth = t0
  for (;;) {
    const c = await subjectCounts(jsm, stream, prefix)
    const now = performance.now()
    if (c) {
      const n = sum(c.values())
      if (n > total) lastGrowth = now
      counts = c
      total = n
      if (total >= load.acked) break
    }
    // Stalled for 5 s once messages arrive (an edge that lost some), nothing at all after 60 s, or 10 minutes.
    if (now - lastGrowth > (total > 0 ? 5000 : 60_000) || now - t0 > 600_000) break
    await sleep(POLL_MS)
  }
  const alarmPrefix = `${prefix}alarms.`
  // First and last stored message of each subject: alarms and telemetry apart.
  const first = { alarm: Infinity, telemetry: Infinity }
  const last = { alarm: -Infinity, telemetry: -Infinity }
  for (const subject of counts.keys()) {
    const kind = subject.startsWith(alarmPrefix) ? 'alarm' : 'telemetry'
    const m = await jsm.streams.getMessage(stream, { last_by_subj: subject })
    if (m) last[kind] = Math.max(last[kind], m.time.getTime())
    // nats-server ≥ 2.9 answers next_by_subj on the (non-direct) MSG.GET API; nats.js types it only for direct gets.
    const f = await jsm.streams.getMessage(stream, { seq: 0, next_by_subj: subject } as unknown as MsgRequest)
    if (f) first[kind] = Math.min(first[kind], f.time.getTime())
  }
  const lastAlarmMs = last.alarm
  const lastMs = Math.max(last.alarm, last.telemetry)
  const firstAlarmMs = first.alarm
  const info = await jsm.streams.info(stream)
  const firstMs = info.state.messages ? new Date(info.state.first_ts).getTime() : NaN
  // Steady rate: stream sequences are given in the order messages are stored, so the time between the messages at
  // 10 % and 90 % of the stream is that of 80 % of the drain, free of the reconnect delays and of the tail.
  const span = info.state.last_seq - info.state.first_seq
  const at = async (share: number): Promise<{ seq: number; ms: number } | undefined> => {
    const seq = info.state.first_seq + Math.floor(share * span)
    const m = span > 10 ? await jsm.streams.getMessage(stream, { seq }) : null
    return m ? { seq, ms: m.time.getTime() } : undefined
  }
  const p10 = await at(0.1)
  const p90 = await at(0.9)
  const steadyPerS = p10 && p90 && p90.ms > p10.ms ? (p90.seq - p10.seq) / ((p90.ms - p10.ms) / 1000) : NaN
  // Per topic: what devices had acknowledged against what the stream holds.
  let missing = 0
  let extra = 0
  load.ackedSeqs.forEach((seqs, i) => {
    let alarms = 0
    for (const s of seqs) if (isAlarm(i, s)) alarms++
    const d = deviceId(i)
    for (const [subject, want] of [[`${alarmPrefix}${d}`, alarms], [`${prefix}sites.${d}.telemetry`, seqs.size - alarms]] as const) {
      const have = counts.get(subject) ?? 0
      missing += Math.max(0, want - have)
      extra += Math.max(0, have - want)
    }
  })
  const alarmsStored = sum([...counts].filter(([s]) => s.startsWith(alarmPrefix)).map(([, n]) => n))
  const lastMessageS = (lastMs - fromMs) / 1000
  const lastAlarmS = (lastAlarmMs - fromMs) / 1000
  return {
    acked: load.acked,
    alarmsAcked: load.alarmsAcked,
    fillPerS: load.acked / load.seconds,
    stored: total,
    alarmsStored,
    missing,
    extra,
    firstS: (firstMs - fromMs) / 1000,
    firstAlarmS: (firstAlarmMs - fromMs) / 1000,
    firstTelemetryS: (first.telemetry - fromMs) / 1000,
    lastTelemetryS: (last.telemetry - fromMs) / 1000,
    lastAlarmS,
    lastMessageS,
    lastAlarmShare: lastAlarmS / lastMessageS,
    alarmsAfterFirstS: lastAlarmS - (firstMs - fromMs) / 1000,
    drainPerS: total / lastMessageS,
    flowingPerS: total / (lastMessageS - (firstMs - fromMs) / 1000),
    steadyPerS,
    ...(AUDIT ? { audit: await readBack(nc, stream, prefix, load) } : {}),
  }
}

/**
 * Reads the whole stream in order: per topic, seqs must ascend (a topic keeps its order); copies and acknowledged
 * messages never read are counted; and the share of alarms stored before the last telemetry message.
 */
async function readBack(nc: NatsConnection, stream: string, prefix: string, load: LoadResult): Promise<NonNullable<RunResult['audit']>> {
  const total = (await (await jetstreamManager(nc)).streams.info(stream)).state.messages
  const lastSeq = new Map<string, number>()
  const seen = load.ackedSeqs.map(() => new Set<number>())
  const index = new Map(load.ackedSeqs.map((_, i) => [deviceId(i), i]))
  let read = 0
  let duplicates = 0
  let outOfOrder = 0
  let alarmsSeen = 0
  let alarmsAtLastTelemetry = 0
  if (total > 0) {
    const iter = await (await jetstream(nc).consumers.get(stream)).consume({ max_messages: 10_000 })
    const deadline = setTimeout(() => iter.stop(), 300_000)
    for await (const m of iter) {
      read++
      if (m.subject.startsWith(prefix)) {
        try {
          const v = decodePayload(m.data, m.headers?.get('Content-Type')) as { device?: unknown; seq?: unknown }
          const i = typeof v.device === 'string' ? index.get(v.device) : undefined
          if (i !== undefined && typeof v.seq === 'number') {
            const alarm = m.subject.startsWith(`${prefix}alarms.`)
            if (alarm) alarmsSeen++
            else alarmsAtLastTelemetry = alarmsSeen
            if (seen[i]!.has(v.seq)) duplicates++
            else seen[i]!.add(v.seq)
            if ((lastSeq.get(m.subject) ?? 0) >= v.seq) outOfOrder++
            lastSeq.set(m.subject, v.seq)
          }
        } catch {}
      }
      if (read >= total) break
    }
    clearTimeout(deadline)
  }
  let lost = 0
  load.ackedSeqs.forEach((seqs, i) => {
    for (const s of seqs) if (!seen[i]!.has(s)) lost++
  })
  return { read, duplicates, outOfOrder, lost, alarmsBeforeLastTelemetryPct: alarmsSeen ? (100 * alarmsAtLastTelemetry) / alarmsSeen : NaN }
}

// ---------- subjects ----------

const perDevice = (): number => Math.ceil(MESSAGES / DEVICES)

/**
 * When nats-server logged "Server is ready" (its listeners accept from then on; its log's clock is this machine's),
 * in ms since the epoch; undefined if the line is not there. Polling its port would notice up to 50 ms late, after
 * an edge may already have reconnected.
 */
function readyAtMs(output: string): number | undefined {
  const m = /(\d{4})\/(\d\d)\/(\d\d) (\d\d):(\d\d):(\d\d)\.(\d{3})\d* \[INF\] Server is ready/.exec(output)
  if (!m) return undefined
  const [y, mo, d, h, mi, sec, ms] = m.slice(1).map(Number) as [number, number, number, number, number, number, number]
  return new Date(y, mo - 1, d, h, mi, sec, ms).getTime()
}

/** Upstream down, the load buffered at the edge, upstream up: the drain measured from the stream. */
async function runOutage(edge: Edge): Promise<RunResult> {
  await edge.nats.stop()
  const load = await publishLoad(edge.mqttPort, perDevice())
  await edge.nats.start()
  const upAtMs = readyAtMs(edge.nats.proc()?.output() ?? '') ?? Date.now()
  const nc = await connect({ servers: edge.nats.url })
  try {
    return await measure(nc, edge.stream, edge.subjectPrefix, load, upAtMs)
  } finally {
    await nc.close()
  }
}

async function runEdge(start: () => Promise<Edge>): Promise<RunResult> {
  const edge = await start()
  try {
    return await runOutage(edge)
  } finally {
    await edge.close()
  }
}

/** The same messages straight to NATS's MQTT listener, no outage; times from the first publish. */
async function runNatsMqtt(): Promise<RunResult> {
  const nats = await startRestartableNats({ mqtt: true })
  let nc: NatsConnection | undefined
  try {
    await addDevicesStream(nats.url, TOPICS)
    nc = await connect({ servers: nats.url })
    const load = await publishLoad(nats.mqttPort, perDevice())
    return await measure(nc, DEVICES_STREAM, '', load, load.startedAtMs)
  } finally {
    await nc?.close()
    await nats.close()
  }
}

const PLAN: Record<Subject, () => Promise<RunResult>> = {
  'ferry-classes': () => runEdge(() => startFerryEdge(['--priority', PRIORITY])),
  ferry: () => runEdge(() => startFerryEdge()),
  'mosquitto-tuned': () => runEdge(() => startMosquittoEdge('tuned', TOPICS)),
  'nats-mqtt': runNatsMqtt,
}

export async function main(): Promise<Record<string, unknown>> {
  const all: Partial<Record<Subject, RunResult[]>> = {}
  const t0 = performance.now()
  let rounds = 0
  for (let r = 0; r < RUNS; r++) {
    const elapsedS = (performance.now() - t0) / 1000
    if (r > 0 && elapsedS + elapsedS / r > MAX_SECONDS) {
      process.stderr.write(`priority: stopping after ${r} of ${RUNS} rounds (another would end past --max-seconds ${MAX_SECONDS})\n`)
      break
    }
    rounds++
    for (const name of SUBJECTS) {
      if (ONLY && !ONLY.includes(name)) continue
      if (!name.startsWith('ferry') && r >= PEER_RUNS) continue
      const res = await PLAN[name]()
      ;(all[name] ??= []).push(res)
      process.stderr.write(
        `run ${r + 1}/${RUNS} ${name}: last alarm ${res.lastAlarmS.toFixed(2)} s, last message ${res.lastMessageS.toFixed(2)} s, ${Math.round(res.drainPerS)} msg/s, ${res.stored} of ${res.acked} stored (${res.missing} missing, ${res.extra} extra)${res.audit ? `, audit: ${res.audit.outOfOrder} out of order, ${res.audit.duplicates} dup, ${res.audit.lost} lost` : ''} [${((performance.now() - t0) / 1000).toFixed(0)} s]\n`,
      )
    }
  }
  const medians = Object.fromEntries(Object.entries(all).map(([k, xs]) => [k, medianOf(xs)])) as Partial<Record<Subject, RunResult>>
  const withClasses = medians['ferry-classes']
  const without = medians.ferry
  // Ratio of the medians, and the median of the run-by-run ratios (runs interleaved: run r of each is a pair).
  const pairs = (all['ferry-classes'] ?? []).map((c, i) => c.drainPerS / (all.ferry?.[i]?.drainPerS ?? NaN)).filter(Number.isFinite)
  const flowingPairs = (all['ferry-classes'] ?? []).map((c, i) => c.flowingPerS / (all.ferry?.[i]?.flowingPerS ?? NaN)).filter(Number.isFinite)
  const steadyPairs = (all['ferry-classes'] ?? []).map((c, i) => c.steadyPerS / (all.ferry?.[i]?.steadyPerS ?? NaN)).filter(Number.isFinite)
  const ratio =
    withClasses && without
      ? {
          /**
           * Steady drain, 10 %→90 % of the stream (the target's figure): each class's forwarder has its own NATS
           * connection whose reconnect backoff is jittered, which at the start dominates drains of a few seconds.
           */
          steadyClassesVsWithout: withClasses.steadyPerS / without.steadyPerS,
          steadyClassesVsWithoutPairedMedian: median(steadyPairs),
          /** From the first message stored to the last. */
          flowingClassesVsWithout: withClasses.flowingPerS / without.flowingPerS,
          flowingClassesVsWithoutPairedMedian: median(flowingPairs),
          /** From upstream's return (drain.ts's definition, reconnect delay included). */
          drainClassesVsWithout: withClasses.drainPerS / without.drainPerS,
          drainClassesVsWithoutPairedMedian: median(pairs),
          target: 0.9,
        }
      : undefined

  const mode = (k: string): string => (k === 'nats-mqtt' ? 'no outage: from first publish' : 'from upstream back')
  process.stdout.write(
    `\nPrioritised drain: ${(perDevice() * DEVICES).toLocaleString('en-US')} QoS 1 messages (${DEVICES} devices, ~${PAYLOAD}-byte JSON), 1 in ${ALARM_EVERY} to alarms/<device>, the rest to sites/<device>/telemetry; medians of ${rounds} run(s) of Ferry, ${Math.min(rounds, PEER_RUNS)} of the peers\n\n`,
  )
  printTable([
    ['subject', 'timed', 'acked', 'fill msg/s', 'first msg s', 'first alarm s', 'first telemetry s', 'last alarm s', 'last message s', 'last alarm / last message', 'last alarm − first msg s', 'drain msg/s', 'msg/s once flowing', 'steady msg/s (10→90 %)', 'missing', 'extra', ...(AUDIT ? ['out of order', 'dup (read back)'] : [])],
    ...Object.entries(medians).map(([k, d]) => [
      k === 'ferry-classes' ? `ferry --priority '${PRIORITY}'` : k,
      mode(k),
      d.acked.toLocaleString('en-US'),
      d.fillPerS,
      d.firstS,
      d.firstAlarmS,
      d.firstTelemetryS,
      d.lastAlarmS,
      d.lastMessageS,
      `${(100 * d.lastAlarmShare).toFixed(1)} %`,
      d.alarmsAfterFirstS,
      d.drainPerS,
      d.flowingPerS,
      d.steadyPerS,
      d.missing.toLocaleString('en-US'),
      d.extra.toLocaleString('en-US'),
      ...(AUDIT ? [String(d.audit?.outOfOrder ?? '-'), String(d.audit?.duplicates ?? '-')] : []),
    ]),
  ])
  if (ratio)
    process.stdout.write(
      `\nFerry with classes ÷ without, steady drain msg/s (10 %→90 % of the stream): ${ratio.steadyClassesVsWithout.toFixed(3)} (median of run pairs ${ratio.steadyClassesVsWithoutPairedMedian.toFixed(3)}; target ≥ ${ratio.target}: ${ratio.steadyClassesVsWithout >= ratio.target ? 'met' : 'missed'}); once flowing: ${ratio.flowingClassesVsWithout.toFixed(3)} (run pairs ${ratio.flowingClassesVsWithoutPairedMedian.toFixed(3)}); from upstream's return: ${ratio.drainClassesVsWithout.toFixed(3)} (run pairs ${ratio.drainClassesVsWithoutPairedMedian.toFixed(3)})\n`,
    )
  for (const [k, d] of Object.entries(medians)) if (d.missing > 0) process.stdout.write(`${k}: ${d.missing.toLocaleString('en-US')} of ${d.acked.toLocaleString('en-US')} acknowledged messages not in JetStream\n`)
  const file = writeResult('priority', {
    command: commandLine(),
    /** The gateway as started (BENCH_FERRY_BUNDLE / BENCH_FERRY_NODE / BENCH_FERRY_NODE_ARGS change it). */
    ferryCommand: ferryCommand(),
    peers: { mosquitto: mosquittoVersion(), mosquittoVariants: { tuned: MOSQUITTO_VARIANT_CONFIG.tuned } },
    priority: PRIORITY,
    messagesRequested: MESSAGES,
    messages: perDevice() * DEVICES,
    devices: DEVICES,
    alarmEvery: ALARM_EVERY,
    payloadBytes: PAYLOAD,
    runsRequested: RUNS,
    runs: rounds,
    peerRuns: Math.min(rounds, PEER_RUNS),
    maxSeconds: MAX_SECONDS,
    medians,
    ratio,
    all,
    seconds: (performance.now() - t0) / 1000,
  })
  process.stdout.write(`wrote ${file}\n`)
  return { medians, ratio }
}

runIfMain(import.meta.url, main)
