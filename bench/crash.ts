// Benchmark: kill -9 of the gateway under load, several times, then an audit of every acknowledged message in the stream.
//
// Run: npx tsx bench/crash.ts [--rounds 5] [--devices 50] [--round-seconds 3] [--fsync always]   (needs nats-server and `npm run build`)
// Load: `devices` simulated devices (firmware-sim), QoS 1, as fast as acknowledged (10 in flight
//   each), firmware-sim's telemetry JSON (it carries "device" and "seq"); they reconnect with backoff (500 ms, doubling)
//   and mqtt.js resends unacknowledged publishes, as firmware would.
// Each round: after `round-seconds` of load (longer than the 1 s checkpoint interval, so restarts
// resume from a checkpoint rather than from the start of the log), the bundled gateway gets SIGKILL
// and is restarted at once on the same port and data directory. After the last round and one more
// round of load, the devices stop, every publish is acknowledged, and the gateway stops cleanly
// once JetStream holds everything.
// Reports: per restart, spawn → MQTT listening (polled every 2 ms), the recovery time the gateway
// logs, and kill → first acknowledgement after the restart (includes the devices' reconnect
// backoff); then the fleet's ledger of acknowledged (device, seq) against the stream (payloads
// decoded with decodeCbor): acknowledged but missing, duplicate copies, stored but never acknowledged.
import { connect } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import type { JetStreamManager } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import fs from 'node:fs'
import { parseArgs } from 'node:util'
import { startFleet } from '../firmware-sim/index.js'
import type { Fleet } from '../firmware-sim/index.js'
import { CONTENT_TYPE_CBOR, decodeCbor, uplinkContentType } from '../src/codec/index.js'
import { freePort, median, printTable, runIfMain, startFerryAt, startNatsServer, tempDir, until, writeResult } from './lib.js'

const { values } = parseArgs({
  options: { rounds: { type: 'string', default: '5' }, devices: { type: 'string', default: '50' }, 'round-seconds': { type: 'string', default: '3' }, fsync: { type: 'string', default: 'always' } },
})
const ROUNDS = Number(values.rounds)
const DEVICES = Number(values.devices)
const ROUND_MS = Number(values['round-seconds']) * 1000
const FSYNC = values.fsync

const int = (n: number): string => (Number.isFinite(n) ? n.toLocaleString('en-US') : '-')

interface Round {
  round: number
  /** Distinct (device, seq) acknowledged when the gateway was killed. */
  ackedAtKill: number
  /** Publishes handed to MQTT and not yet acknowledged at the kill (resent after reconnecting). */
  inFlightAtKill: number
  /** Device messages in JetStream right after the kill. */
  inStreamAtKill: number
  /** Spawn → the MQTT port accepts connections. */
  listeningMs: number
  /** Ring log recovery as the gateway logs it ("ring log recovered", ms). */
  recoveryLoggedMs: number
  /** Backlog the recovered log still had to forward. */
  backlogAtStart: number
  /** SIGKILL → the first new acknowledgement (gateway start plus the devices' reconnect backoff). */
  killToAckMs: number
}

/** Messages on `ferry.up.>` in the stream (presence events, if any, are not device messages). */
async function upCount(jsm: JetStreamManager): Promise<number> {
  try {
    const info = await jsm.streams.info('FERRY', { subjects_filter: 'ferry.up.>' })
    return Object.values(info.state.subjects ?? {}).reduce((s, n) => s + n, 0)
  } catch {
    return 0
  }
}

/**
 * How often each (device, seq) is in the stream, read once in order with an ordered consumer; each
 * message is reduced to its key at once, so a stream of a million messages is fine.
 */
async function storedKeys(nc: NatsConnection): Promise<{ seen: Map<string, number>; messages: number }> {
  const total = (await (await jetstreamManager(nc)).streams.info('FERRY')).state.messages
  const seen = new Map<string, number>()
  let read = 0
  let messages = 0
  if (total === 0) return { seen, messages }
  const iter = await (await jetstream(nc).consumers.get('FERRY')).consume()
  for await (const m of iter) {
    if (m.subject.startsWith('ferry.up.')) {
      const v = (uplinkContentType(m.headers?.has('Content-Type') ? m.headers.get('Content-Type') : undefined) === CONTENT_TYPE_CBOR ? decodeCbor(m.data) : JSON.parse(Buffer.from(m.data).toString('utf8'))) as { device: string; seq: number }
      const k = `${v.device}:${v.seq}`
      seen.set(k, (seen.get(k) ?? 0) + 1)
      messages++
    }
    if (++read >= total) break
  }
  return { seen, messages }
}

export async function main(): Promise<Record<string, unknown>> {
  const nats = await startNatsServer()
  const port = await freePort()
  const dataDir = tempDir('ferry-bench-crash-')
  const args = ['--nats-url', nats.url, '--data-dir', dataDir, '--gateway-id', 'crash-bench', '--fsync', FSYNC]
  let gw: Awaited<ReturnType<typeof startFerryAt>> | undefined
  let fleet: Fleet | undefined
  let nc: NatsConnection | undefined
  try {
    nc = await connect({ servers: nats.url })
    const jsm = await jetstreamManager(nc)
    gw = await startFerryAt(port, args)
    const f = startFleet({ url: `mqtt://127.0.0.1:${port}`, devices: DEVICES, ratePerDevice: 0, inflight: 10, qos: 1, rampMs: 500 })
    fleet = f
    const rounds: Round[] = []
    for (let r = 1; r <= ROUNDS; r++) {
      const from = f.ledger.size
      await new Promise((res) => setTimeout(res, ROUND_MS))
      if (f.ledger.size === from) throw new Error(`round ${r}: nothing acknowledged in ${ROUND_MS} ms\n${gw.proc.output().slice(-3000)}`)
      const inFlightAtKill = f.stats().pending
      const tKill = performance.now()
      await gw.proc.stop('SIGKILL')
      const ackedAtKill = f.ledger.size
      const inStreamAtKill = await upCount(jsm) // one request on an open connection: ~1 ms before the restart
      gw = await startFerryAt(port, args)
      const rec = /"msg":"ring log recovered".*?"ms":(\d+).*?"backlog":(\d+)/.exec(gw.proc.output())
      if (!(await until(() => f.ledger.size > ackedAtKill, 60_000, 2))) throw new Error(`round ${r}: no acknowledgement within 60 s of the restart\n${gw.proc.output().slice(-3000)}`)
      const round = { round: r, ackedAtKill, inFlightAtKill, inStreamAtKill, listeningMs: gw.startMs, recoveryLoggedMs: rec ? Number(rec[1]) : NaN, backlogAtStart: rec ? Number(rec[2]) : NaN, killToAckMs: performance.now() - tKill }
      rounds.push(round)
      process.stderr.write(`round ${r}/${ROUNDS}: killed at ${ackedAtKill} acknowledged (${inFlightAtKill} in flight); listening after ${round.listeningMs.toFixed(0)} ms, acking again after ${round.killToAckMs.toFixed(0)} ms\n`)
    }
    // Let the last restart carry load too, then stop producing and wait until every publish is acknowledged.
    await new Promise((res) => setTimeout(res, ROUND_MS))
    const drained = await f.drain(60_000)
    const fleetStats = f.stats()
    const ledger = f.ledger.toMap()
    const acked = f.ledger.size
    await f.close()
    const arrived = (await until(async () => (await upCount(jsm)) >= acked, 120_000, 200)) ? acked : await upCount(jsm)
    // A resend after the last PubAck would land now: give it a moment, then stop the gateway cleanly.
    await new Promise((r) => setTimeout(r, 1000))
    await gw.proc.stop('SIGTERM')
    const exitCode = gw.proc.child.exitCode
    const { seen, messages } = await storedKeys(nc)
    const lost: string[] = []
    const ackedKeys = new Set<string>()
    for (const [device, seqs] of ledger)
      for (const s of seqs) {
        const k = `${device}:${s}`
        ackedKeys.add(k)
        if (!seen.has(k)) lost.push(k)
      }
    const duplicated = [...seen].filter(([, n]) => n > 1)
    const duplicateCopies = duplicated.reduce((s, [, n]) => s + n - 1, 0)
    const neverAcked = [...seen.keys()].filter((k) => !ackedKeys.has(k))
    const summary = {
      acknowledged: acked,
      inStream: messages,
      arrivedBeforeStop: arrived,
      lost: lost.length,
      duplicateCopies,
      duplicatedMessages: duplicated.length,
      storedNeverAcked: neverAcked.length,
      fleetDrained: drained,
      fleetPendingAtEnd: fleetStats.pending,
      ledgerDuplicateAcks: f.ledger.duplicates,
      deviceReconnects: fleetStats.reconnects,
      devicePublishErrors: fleetStats.publishErrors,
      gatewayExitCode: exitCode,
      listeningMsMedian: median(rounds.map((r) => r.listeningMs)),
      killToAckMsMedian: median(rounds.map((r) => r.killToAckMs)),
    }
    process.stdout.write(`\nCrash: ${ROUNDS} × kill -9 under load, ${DEVICES} devices QoS 1, telemetry JSON, --fsync ${FSYNC}, restart on the same port and data directory\n\n`)
    printTable([
      ['restart', 'acked before kill', 'in flight at kill', 'in JetStream at kill', 'backlog at restart', 'spawn → listening ms', 'log recovery ms (logged)', 'kill → acking again ms'],
      ...rounds.map((r) => [String(r.round), int(r.ackedAtKill), int(r.inFlightAtKill), int(r.inStreamAtKill), int(r.backlogAtStart), r.listeningMs, r.recoveryLoggedMs, r.killToAckMs]),
    ])
    process.stdout.write('\n')
    printTable([
      ['acknowledged (device, seq)', 'in stream', 'acknowledged but missing', 'duplicate copies', 'stored, never acknowledged', 'spawn → listening median ms'],
      [int(summary.acknowledged), int(summary.inStream), int(summary.lost), int(summary.duplicateCopies), int(summary.storedNeverAcked), summary.listeningMsMedian],
    ])
    if (!drained) process.stdout.write(`note: ${fleetStats.pending} publishes were still unacknowledged when the devices stopped\n`)
    if (exitCode !== 0) process.stdout.write(`note: the final SIGTERM stop exited with ${exitCode}\n`)
    const file = writeResult('crash', { rounds: ROUNDS, devices: DEVICES, roundMs: ROUND_MS, fsync: FSYNC, restarts: rounds, summary, lostSample: lost.slice(0, 20), duplicatedSample: duplicated.slice(0, 20), neverAckedSample: neverAcked.slice(0, 20) })
    process.stdout.write(`wrote ${file}\n`)
    return { rounds, summary }
  } finally {
    await nc?.close()
    await fleet?.close()
    await gw?.proc.stop('SIGKILL')
    await nats.proc.stop()
    fs.rmSync(dataDir, { recursive: true, force: true })
    fs.rmSync(nats.dir, { recursive: true, force: true })
  }
}

runIfMain(import.meta.url, main)
