// Benchmark: bytes JetStream stores per device message, Ferry (CBOR, and --cbor off; --uplink-headers full and
// compact) vs NATS's native MQTT listener.
//
// Run: npx tsx bench/compactness.ts [--devices 10] [--count 1000]   (needs nats-server and `npm run build`)
// Load: `devices` simulated devices (firmware-sim's own JSON telemetry, no padding; the table shows
//   its mean size) publish `count` QoS 1 messages each to NATS's MQTT listener; a stream on
//   `devices.>` stores them as sent. Those exact messages (same client ids,
//   topics and payload bytes) are then read back and replayed, in order, into the bundled gateway
//   four times: CBOR (default) and `--cbor off`, each with `--uplink-headers full` (default) and
//   `compact`, each against a fresh nats-server.
//   `--gateway-id edge-gw-01` is fixed because the default (the host name) is part of every
//   Nats-Msg-Id header and would make the figure machine-dependent.
// Reports, per target, per message: bytes the stream accounts (state.bytes / state.messages), and,
// from the messages read back, subject, header block (as encoded on the wire) and payload bytes,
// the store's own per-record overhead (the rest), and the JSON text each payload stands for; then
// Ferry / NATS-MQTT ratios.
import { connectAsync } from 'mqtt'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { startFleet } from '../firmware-sim/index.js'
import { CONTENT_TYPE_CBOR, decodeCbor, uplinkContentType } from '../src/codec/index.js'
import { printTable, runIfMain, startFerry, startNatsServer, tempDir, until, writeResult } from './lib.js'

const { values } = parseArgs({ options: { devices: { type: 'string', default: '10' }, count: { type: 'string', default: '1000' } } })
const DEVICES = Number(values.devices)
const COUNT = Number(values.count)
const TOTAL = DEVICES * COUNT
const GATEWAY_ID = 'edge-gw-01'

/** One device message as sent: who, where, what. */
interface Sent {
  clientId: string
  topic: string
  payload: Uint8Array
}

interface Row {
  target: string
  messages: number
  /** state.bytes / state.messages of the stream. */
  storedBytesPerMsg: number
  subjectBytes: number
  headerBytes: number
  payloadBytes: number
  /** storedBytesPerMsg minus subject, headers and payload: the store's record framing. */
  storeOverheadBytes: number
  /** Length of the JSON text each payload stands for (decoded back from CBOR where needed). */
  inputJsonBytes: number
  exampleHeaders: Record<string, string>
}

/** A message read back from the stream, with the size of its header block as it came over the wire. */
interface ReadBack {
  subject: string
  headers: Record<string, string>
  headerBytes: number
  data: Uint8Array
}

/**
 * Every message of `stream`, in order (ordered consumer). The header block's size is the message's
 * wire size minus subject, reply subject and payload (nats.js' Msg.size()); if that is unavailable,
 * the block is re-encoded as `NATS/1.0\r\nKey: value\r\n...\r\n`.
 */
async function readBack(nc: NatsConnection, stream: string): Promise<ReadBack[]> {
  const total = (await (await jetstreamManager(nc)).streams.info(stream)).state.messages
  const out: ReadBack[] = []
  if (total === 0) return out
  const iter = await (await jetstream(nc).consumers.get(stream)).consume()
  for await (const m of iter) {
    const headers: Record<string, string> = {}
    if (m.headers) for (const [k, v] of m.headers) headers[k] = v[0] ?? ''
    // JsMsg keeps the core message it wraps in `msg` (not in its public type).
    const wire = (m as unknown as { msg?: { size?: () => number; reply?: string } }).msg
    const headerBytes =
      typeof wire?.size === 'function'
        ? wire.size() - Buffer.byteLength(m.subject) - Buffer.byteLength(wire.reply ?? '') - m.data.length
        : Object.keys(headers).length === 0
          ? 0
          : 12 + Object.entries(headers).reduce((s, [k, v]) => s + Buffer.byteLength(`${k}: ${v}\r\n`), 0)
    out.push({ subject: m.subject, headers, headerBytes, data: m.data })
    if (out.length >= total) break
  }
  return out
}

async function measure(target: string, url: string, stream: string, subjectPrefix: string): Promise<{ row: Row; msgs: ReadBack[] }> {
  const nc = await connect({ servers: url })
  try {
    const jsm = await jetstreamManager(nc)
    const info = await jsm.streams.info(stream)
    const msgs = (await readBack(nc, stream)).filter((m) => m.subject.startsWith(subjectPrefix))
    if (msgs.length !== info.state.messages) throw new Error(`${target}: stream ${stream} holds ${info.state.messages} messages, ${msgs.length} of them device messages`)
    const avg = (f: (m: ReadBack) => number): number => msgs.reduce((s, m) => s + f(m), 0) / msgs.length
    const storedBytesPerMsg = info.state.bytes / info.state.messages
    const subjectBytes = avg((m) => Buffer.byteLength(m.subject))
    const headerBytes = avg((m) => m.headerBytes)
    const payloadBytes = avg((m) => m.data.length)
    // A Ferry message without Content-Type is CBOR (--uplink-headers compact); NATS MQTT's never are.
    const isCbor = (m: ReadBack): boolean => (subjectPrefix === 'ferry.up.' ? uplinkContentType(m.headers['Content-Type']) : m.headers['Content-Type']) === CONTENT_TYPE_CBOR
    const inputJsonBytes = avg((m) => (isCbor(m) ? Buffer.byteLength(JSON.stringify(decodeCbor(m.data))) : m.data.length))
    const row: Row = {
      target,
      messages: msgs.length,
      storedBytesPerMsg,
      subjectBytes,
      headerBytes,
      payloadBytes,
      storeOverheadBytes: storedBytesPerMsg - subjectBytes - headerBytes - payloadBytes,
      inputJsonBytes,
      exampleHeaders: msgs[0]?.headers ?? {},
    }
    return { row, msgs }
  } finally {
    await nc.close()
  }
}

/** Publishes `msgs` QoS 1, one MQTT client per client id (in order, 10 in flight each), like the devices did. */
async function replay(mqttUrl: string, msgs: Sent[]): Promise<void> {
  const byClient = new Map<string, Sent[]>()
  for (const m of msgs) (byClient.get(m.clientId) ?? byClient.set(m.clientId, []).get(m.clientId)!).push(m)
  await Promise.all(
    [...byClient].map(async ([clientId, list]) => {
      const client = await connectAsync(mqttUrl, { clientId, clean: true, protocolVersion: 4, reconnectPeriod: 0 })
      try {
        let next = 0
        const worker = async (): Promise<void> => {
          while (next < list.length) {
            const m = list[next++]!
            await client.publishAsync(m.topic, Buffer.from(m.payload), { qos: 1 })
          }
        }
        await Promise.all(Array.from({ length: 10 }, worker))
      } finally {
        await client.endAsync()
      }
    }),
  )
}

/** The fleet against NATS's MQTT listener; returns the row and the messages exactly as devices sent them. */
async function runNatsMqtt(): Promise<{ row: Row; sent: Sent[] }> {
  const nats = await startNatsServer({ mqtt: true })
  try {
    const nc = await connect({ servers: nats.url })
    try {
      await (await jetstreamManager(nc)).streams.add({ name: 'DEVICES', subjects: ['devices.>'] })
    } finally {
      await nc.close()
    }
    const fleet = startFleet({ url: `mqtt://127.0.0.1:${nats.mqttPort}`, devices: DEVICES, ratePerDevice: 0, inflight: 10, qos: 1, count: COUNT, rampMs: 200 })
    try {
      await fleet.done()
    } finally {
      await fleet.close()
    }
    const { row, msgs } = await measure('NATS MQTT listener', nats.url, 'DEVICES', 'devices.')
    if (msgs.length !== TOTAL) throw new Error(`NATS MQTT: ${msgs.length} of ${TOTAL} messages stored`)
    // Subject devices.<id>.telemetry came from topic devices/<id>/telemetry; device ids hold no dots.
    const sent = msgs.map((m) => ({ clientId: m.subject.split('.')[1]!, topic: m.subject.replaceAll('.', '/'), payload: m.data }))
    return { row, sent }
  } finally {
    await nats.proc.stop()
    fs.rmSync(nats.dir, { recursive: true, force: true })
  }
}

async function runFerry(target: string, sent: Sent[], extraArgs: string[]): Promise<Row> {
  const nats = await startNatsServer()
  const dataDir = tempDir('ferry-bench-compact-')
  let ferry: Awaited<ReturnType<typeof startFerry>> | undefined
  try {
    // No presence events: the stream holds exactly the telemetry, as NATS MQTT's does.
    ferry = await startFerry(['--nats-url', nats.url, '--data-dir', dataDir, '--gateway-id', GATEWAY_ID, '--presence', 'off', ...extraArgs])
    await replay(`mqtt://127.0.0.1:${ferry.mqttPort}`, sent)
    const nc = await connect({ servers: nats.url })
    try {
      const jsm = await jetstreamManager(nc)
      const stored = async (): Promise<number> => (await jsm.streams.info('FERRY').catch(() => undefined))?.state.messages ?? 0
      if (!(await until(async () => (await stored()) >= sent.length, 60_000))) throw new Error(`${target}: only ${await stored()} of ${sent.length} messages in JetStream\n${ferry.proc.output().slice(-3000)}`)
      // Only device messages count: drop presence events, if any were published.
      await jsm.streams.purge('FERRY', { filter: 'ferry.events.>' })
    } finally {
      await nc.close()
    }
    return (await measure(target, nats.url, 'FERRY', 'ferry.up.')).row
  } finally {
    await ferry?.proc.stop()
    await nats.proc.stop()
    fs.rmSync(dataDir, { recursive: true, force: true })
    fs.rmSync(nats.dir, { recursive: true, force: true })
  }
}

export async function main(): Promise<Record<string, unknown>> {
  const nm = await runNatsMqtt()
  process.stderr.write(`NATS MQTT: ${nm.sent.length} messages recorded, replaying into Ferry\n`)
  const cbor = await runFerry('Ferry, CBOR (default)', nm.sent, [])
  const cborCompact = await runFerry('Ferry, CBOR, --uplink-headers compact', nm.sent, ['--uplink-headers', 'compact'])
  const json = await runFerry('Ferry, --cbor off', nm.sent, ['--cbor', 'off'])
  const jsonCompact = await runFerry('Ferry, --cbor off, --uplink-headers compact', nm.sent, ['--cbor', 'off', '--uplink-headers', 'compact'])
  const rows = [nm.row, cbor, cborCompact, json, jsonCompact]
  for (const r of rows) if (Math.abs(r.inputJsonBytes - nm.row.inputJsonBytes) > 1e-9) throw new Error(`${r.target}: payloads stand for ${r.inputJsonBytes} JSON bytes per message, NATS MQTT for ${nm.row.inputJsonBytes}: not the same messages`)
  process.stdout.write(`\nBytes per message in JetStream: ${TOTAL.toLocaleString('en-US')} identical telemetry messages (${DEVICES} devices, ~${Math.round(nm.row.inputJsonBytes)}-byte JSON), file store\n\n`)
  printTable([
    ['target', 'stored B/msg (stream state)', 'subject B', 'headers B', 'payload B', 'payload+headers B', 'store framing B', 'JSON input B', 'stored / JSON input'],
    ...rows.map((r) => [r.target, r.storedBytesPerMsg, r.subjectBytes, r.headerBytes, r.payloadBytes, r.payloadBytes + r.headerBytes, r.storeOverheadBytes, r.inputJsonBytes, `${(r.storedBytesPerMsg / r.inputJsonBytes).toFixed(2)}x`]),
  ])
  const ratio = (r: Row): Record<string, number> => ({
    stored: r.storedBytesPerMsg / nm.row.storedBytesPerMsg,
    payloadPlusHeaders: (r.payloadBytes + r.headerBytes) / (nm.row.payloadBytes + nm.row.headerBytes),
    payload: r.payloadBytes / nm.row.payloadBytes,
  })
  const ratios = { cbor: ratio(cbor), cborCompact: ratio(cborCompact), json: ratio(json), jsonCompact: ratio(jsonCompact) }
  const ferryRows: [string, Row][] = [
    ['cbor', cbor],
    ['cborCompact', cborCompact],
    ['json', json],
    ['jsonCompact', jsonCompact],
  ]
  process.stdout.write('\n')
  printTable([
    ['Ferry / NATS MQTT', 'stored B/msg', 'payload+headers', 'payload', 'headers B'],
    ...ferryRows.map(([k, r]) => {
      const x = ratios[k as keyof typeof ratios]
      return [r.target, `${x.stored!.toFixed(2)}x`, `${x.payloadPlusHeaders!.toFixed(2)}x`, `${x.payload!.toFixed(2)}x`, `${r.headerBytes.toFixed(1)} vs ${nm.row.headerBytes.toFixed(1)}`]
    }),
  ])
  for (const r of rows) process.stdout.write(`headers, ${r.target}: ${JSON.stringify(r.exampleHeaders)}\n`)
  const file = writeResult('compactness', { devices: DEVICES, countPerDevice: COUNT, gatewayId: GATEWAY_ID, rows, ratios })
  process.stdout.write(`wrote ${file}\n`)
  return { rows, ratios }
}

runIfMain(import.meta.url, main)
