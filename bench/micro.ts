// Micro-benchmarks of each hot step of the uplink, in process, so that a regression shows where it happens:
//   ingress:  MQTT PUBLISH parse → payload JSON→CBOR → encodeEntry → RingLog append (durable) → PUBACK encode
//   forward:  LogReader read → decodeEntry → uplinkMessage (subject + headers) → classifyPubAck; the forwarder's
//             subject memo (UplinkSubjects) without and with --partitions, 1,000 devices in rotation
// and the two paths end to end through an in-process gateway (src/gateway.ts) against a real nats-server:
//   parse → append → PUBACK   raw MQTT 3.1.1 PUBLISHes (QoS 1) from one socket, 200 in flight, NATS down (nothing
//                             forwarded meanwhile): wall time per acknowledged message
//   read → publish → PubAck   then nats-server starts and the backlog drains: wall time per message acknowledged
//                             by JetStream (nothing arriving meanwhile)
// Each figure is the median of `--rounds` rounds (ns per operation, wall clock; CPU time too for the end-to-end
// paths); a round is timed after one untimed warm-up round. Uses only the public signatures of src/ (run by tsx).
//
// Run: npm run bench:micro   (or npx tsx bench/micro.ts [--rounds 7] [--only parse,append] [--json])
//   needs nats-server for the end-to-end paths (skipped and said so without it)
import mqttPacket from 'mqtt-packet'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { PayloadPolicy, UplinkSubjects, decodeEntry, encodeEntry, encodePayload, encodingOf, uplinkMessage } from '../src/codec/index.js'
import type { Entry } from '../src/codec/index.js'
import { classifyPubAck, expectStream } from '../src/forward/index.js'
import { LogReader, NO_LOG_METRICS, RingLog } from '../src/log/index.js'
import type { FsyncPolicy } from '../src/log/index.js'
import { silentLogger } from '../src/logger.js'
import { startGateway } from '../test/helpers/gateway.js'
import { freePort, natsServerPath, startNats } from '../test/helpers/nats.js'
import { commandLine, median, printTable, runIfMain, writeResult } from './lib.js'

const { values } = parseArgs({ options: { rounds: { type: 'string', default: '7' }, only: { type: 'string' }, json: { type: 'boolean', default: false } } })
const ROUNDS = Number(values.rounds)
const ONLY = values.only?.split(',').filter(Boolean)

/** The telemetry every benchmark uses: firmware-sim's JSON padded to ~200 bytes, as bench/throughput.ts sends. */
const PAYLOAD = Buffer.from(JSON.stringify({ device: 'sim-00001', seq: 12345, ts: 1_765_000_000_000, temp: 21.5, hum: 40.1, bat: 3.7, rssi: -60, status: 'ok', pad: 'x'.repeat(70) }))
const TOPIC = 'devices/sim-00001/telemetry'
const CLIENT_ID = 'sim-00001'

interface Result {
  step: string
  nsPerOp: number
  /** CPU ns per op of this process (end-to-end paths only). */
  cpuNsPerOp?: number
  opsPerRound: number
  rounds: number
  note?: string
}

/** Times `round()` (which does `ops` operations) `ROUNDS` times after one warm-up round; median ns/op. */
async function measure(step: string, ops: number, round: () => void | Promise<void>, note?: string): Promise<Result> {
  await round()
  const ns: number[] = []
  for (let r = 0; r < ROUNDS; r++) {
    const t0 = process.hrtime.bigint()
    await round()
    ns.push(Number(process.hrtime.bigint() - t0) / ops)
  }
  return { step, nsPerOp: median(ns), opsPerRound: ops, rounds: ROUNDS, ...(note ? { note } : {}) }
}

const sink: unknown[] = [undefined]
function keep(v: unknown): void {
  sink[0] = v
}

function entryOf(): Entry {
  const enc = encodePayload(PAYLOAD, true)
  return { clientId: CLIENT_ID, topic: TOPIC, qos: 1, retain: false, packetId: 4711, encoding: encodingOf(enc.contentType), payload: enc.data }
}

async function openLog(dir: string, fsync: FsyncPolicy): Promise<RingLog> {
  return RingLog.open({
    dir,
    segmentBytes: 64 * 1024 * 1024 - 4096,
    maxBytes: 1024 * 1024 * 1024,
    discard: 'old',
    fsync,
    fsyncIntervalMs: 100,
    maxRecordBytes: 1023 * 1024,
    checkpointIntervalMs: 1000,
    logger: silentLogger,
    metrics: NO_LOG_METRICS,
  })
}

function tmp(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

const steps: [string, () => Promise<Result>][] = [
  [
    'parse',
    async () => {
      const pkt = mqttPacket.generate({ cmd: 'publish', topic: TOPIC, payload: PAYLOAD, qos: 1, messageId: 4711, retain: false, dup: false })
      const parser = mqttPacket.parser({ protocolVersion: 4 })
      parser.on('packet', keep)
      const n = 100_000
      return measure('MQTT PUBLISH parse (mqtt-packet, QoS 1, ~200 B)', n, () => {
        for (let i = 0; i < n; i++) parser.parse(pkt)
      })
    },
  ],
  [
    'payload',
    async () => {
      const n = 100_000
      return measure('payload JSON → CBOR (encodePayload)', n, () => {
        for (let i = 0; i < n; i++) keep(encodePayload(PAYLOAD, true))
      })
    },
  ],
  [
    'entry',
    async () => {
      const e = entryOf()
      const n = 200_000
      return measure('encodeEntry', n, () => {
        for (let i = 0; i < n; i++) keep(encodeEntry(e))
      })
    },
  ],
  ...(['always', 'batch'] as const).map(
    (fsync): [string, () => Promise<Result>] => [
      `append-${fsync}`,
      async () => {
        const dir = tmp('ferry-micro-log-')
        const log = await openLog(dir, fsync)
        const body = encodeEntry(entryOf())
        // 500 appends in flight (50 devices × 10 in flight, as bench/throughput.ts), awaited until durable.
        const n = 20_000
        try {
          return await measure(`RingLog append → stored per --fsync ${fsync} (500 in flight)`, n, async () => {
            for (let i = 0; i < n; i += 500) await Promise.all(Array.from({ length: 500 }, () => log.append(body)))
          })
        } finally {
          await log.close()
          fs.rmSync(dir, { recursive: true, force: true })
        }
      },
    ],
  ),
  [
    'read',
    async () => {
      const dir = tmp('ferry-micro-read-')
      const log = await openLog(dir, 'batch')
      const body = encodeEntry(entryOf())
      const n = 100_000
      try {
        const first = log.next
        for (let i = 0; i < n; i += 1000) await Promise.all(Array.from({ length: 1000 }, () => log.append(body)))
        await log.drain()
        // A reader never reads past the durable seq (under fsync batch: the next timed sync).
        while (log.durableSeq < log.next - 1) await new Promise((r) => setTimeout(r, 5))
        return await measure(`LogReader read (1,000 records / 1 MiB per read, ${n.toLocaleString('en-US')} records)`, n, async () => {
          const reader = new LogReader(log, first)
          let got = 0
          const deadline = performance.now() + 60_000
          while (got < n) {
            if (performance.now() > deadline) throw new Error(`LogReader read ${got} of ${n} records in 60 s`)
            const recs = await reader.read(1000, 1024 * 1024)
            got += recs.length
            keep(recs)
            // Nothing readable yet: yield to the event loop (a resolved read in a loop would starve the log's timers).
            if (recs.length === 0) await new Promise((r) => setTimeout(r, 1))
          }
          await reader.close()
        })
      } finally {
        await log.close()
        fs.rmSync(dir, { recursive: true, force: true })
      }
    },
  ],
  [
    'decode',
    async () => {
      const body = encodeEntry(entryOf())
      const n = 200_000
      return measure('decodeEntry', n, () => {
        for (let i = 0; i < n; i++) keep(decodeEntry(body))
      })
    },
  ],
  [
    'uplink',
    async () => {
      const e = entryOf()
      const ctx = { gatewayId: 'edge-01', stream: 'FERRY', subjectPrefix: 'ferry', payloads: new PayloadPolicy(true, []) }
      const n = 200_000
      return measure('uplinkMessage (subject + header block)', n, () => {
        for (let i = 0; i < n; i++) keep(uplinkMessage(e, 329156140, 1_000_000 + i, ctx))
      })
    },
  ],
  ...[0, 4].map((partitions): [string, () => Promise<Result>] => [
    partitions === 0 ? 'subjects' : 'subjects-partitioned',
    async () => {
      // Entries decoded one by one (fresh strings, as the forwarder reads them), 1,000 devices each on its own topic.
      const n = 200_000
      const bodies = Array.from({ length: 1000 }, (_, i) => encodeEntry({ ...entryOf(), clientId: `sim-${String(i).padStart(5, '0')}`, topic: `devices/sim-${String(i).padStart(5, '0')}/telemetry` }))
      const entries = Array.from({ length: n }, (_, i) => decodeEntry(bodies[i % bodies.length]!))
      const subjects = new UplinkSubjects('ferry', partitions)
      return measure(`uplink subject, forwarder memo (UplinkSubjects), --partitions ${partitions}, 1,000 devices`, n, () => {
        for (const e of entries) keep(subjects.of(e.topic, e.clientId))
      })
    },
  ]),
  [
    'puback',
    async () => {
      const expected = expectStream('FERRY')
      const body = Buffer.from('{"stream":"FERRY","seq":1234567}')
      const n = 500_000
      return measure('classifyPubAck (stored)', n, () => {
        for (let i = 0; i < n; i++) keep(classifyPubAck(body, expected))
      })
    },
  ],
  [
    'mqtt-puback',
    async () => {
      const n = 200_000
      return measure('MQTT PUBACK encode (mqtt-packet generate)', n, () => {
        for (let i = 0; i < n; i++) keep(mqttPacket.generate({ cmd: 'puback', messageId: (i & 0xffff) || 1 }))
      })
    },
  ],
]

/** The two paths end to end through an in-process gateway (see the top); two results. */
async function endToEnd(): Promise<Result[]> {
  if (!natsServerPath()) return [{ step: 'end to end', nsPerOp: NaN, opsPerRound: 0, rounds: 0, note: 'skipped: nats-server is not installed' }]
  const nats = await startNats()
  await nats.stop()
  const dataDir = tmp('ferry-micro-gw-')
  const mqttPort = await freePort()
  const gw = await startGateway({ 'mqtt.listen': `127.0.0.1:${mqttPort}`, 'log.dataDir': dataDir, 'nats.url': nats.url, 'log.fsync': 'always', 'auth.allowAnonymous': true })
  const ingestNs: number[] = []
  const ingestCpu: number[] = []
  const drainNs: number[] = []
  const drainCpu: number[] = []
  const n = 20_000
  try {
    const sock = net.connect(mqttPort, '127.0.0.1')
    sock.setNoDelay(true)
    await new Promise<void>((resolve, reject) => {
      sock.once('connect', () => resolve())
      sock.once('error', reject)
    })
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    let acked = 0
    let onAck = (): void => {}
    parser.on('packet', (p: { cmd: string }) => {
      if (p.cmd === 'puback') {
        acked++
        onAck()
      } else if (p.cmd === 'connack') onAck()
    })
    sock.on('data', (d: Buffer) => parser.parse(d))
    await new Promise<void>((resolve) => {
      onAck = resolve
      sock.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: CLIENT_ID, keepalive: 0 }))
    })
    const packets = Array.from({ length: 0xffff }, (_, i) => mqttPacket.generate({ cmd: 'publish', topic: TOPIC, payload: PAYLOAD, qos: 1, messageId: i + 1, retain: false, dup: false }))
    let next = 0
    /** Sends `count` PUBLISHes, 200 in flight, and resolves when all are acknowledged. */
    const ingest = (count: number): Promise<void> => {
      const target = acked + count
      let sent = acked
      return new Promise<void>((resolve) => {
        const pump = (): void => {
          const bufs: Buffer[] = []
          while (sent - acked < 200 && sent < target) {
            bufs.push(packets[next]!)
            next = (next + 1) % packets.length
            sent++
          }
          if (bufs.length) sock.write(Buffer.concat(bufs))
        }
        onAck = () => {
          if (acked >= target) resolve()
          else if (sent - acked < 100) pump()
        }
        pump()
      })
    }
    const log = gw.log
    const drained = async (): Promise<void> => {
      while (log.acked < log.next - 1) await new Promise((r) => setTimeout(r, 1))
    }
    await ingest(n) // warm-up of the ingress path
    for (let r = 0; r <= ROUNDS; r++) {
      const c0 = process.cpuUsage()
      const t0 = process.hrtime.bigint()
      await ingest(n)
      const t1 = process.hrtime.bigint()
      const c1 = process.cpuUsage(c0)
      // The backlog (2 × n on the first round: the warm-up's too) drains once NATS is back; the clock starts at
      // the first PubAck (NATS start-up and the forwarder's reconnect are not the path being measured).
      const acked0 = log.acked
      await nats.start()
      while (log.acked === acked0) await new Promise((r) => setTimeout(r, 1))
      const backlog = log.next - 1 - log.acked
      const c2 = process.cpuUsage()
      const t2 = process.hrtime.bigint()
      await drained()
      const t3 = process.hrtime.bigint()
      const c3 = process.cpuUsage(c2)
      await nats.stop()
      if (r === 0) continue // warm-up round of the forward path
      ingestNs.push(Number(t1 - t0) / n)
      ingestCpu.push(((c1.user + c1.system) * 1000) / n)
      drainNs.push(Number(t3 - t2) / backlog)
      drainCpu.push(((c3.user + c3.system) * 1000) / backlog)
    }
    sock.destroy()
  } finally {
    await gw.close()
    await nats[Symbol.asyncDispose]()
    fs.rmSync(dataDir, { recursive: true, force: true })
  }
  return [
    { step: 'end to end: parse → append → PUBACK (in-process gateway, --fsync always, 200 in flight, NATS down)', nsPerOp: median(ingestNs), cpuNsPerOp: median(ingestCpu), opsPerRound: n, rounds: ingestNs.length, note: 'CPU includes the test client in the same process' },
    { step: 'end to end: read → publish → PubAck (a backlog drained to a real nats-server, from its first PubAck)', nsPerOp: median(drainNs), cpuNsPerOp: median(drainCpu), opsPerRound: n, rounds: drainNs.length, note: 'CPU: this process (the gateway), not nats-server' },
  ]
}

export async function main(): Promise<Result[]> {
  const results: Result[] = []
  for (const [name, fn] of steps) {
    if (ONLY && !ONLY.some((o) => name.includes(o))) continue
    results.push(await fn())
  }
  if (!ONLY || ONLY.some((o) => 'e2e end-to-end'.includes(o))) results.push(...(await endToEnd()))
  process.stdout.write(`\nMicro-benchmarks (Node ${process.version}; medians of ${ROUNDS} rounds, wall clock)\n\n`)
  printTable([['step', 'ns/op', 'CPU ns/op', 'ops/round', 'note'], ...results.map((r) => [r.step, r.nsPerOp, r.cpuNsPerOp ?? NaN, r.opsPerRound, r.note ?? ''])])
  const file = writeResult('micro', { command: commandLine(), rounds: ROUNDS, payloadBytes: PAYLOAD.length, results })
  process.stdout.write(`wrote ${file}\n`)
  if (values.json) process.stdout.write(JSON.stringify(results) + '\n')
  return results
}

runIfMain(import.meta.url, main)
