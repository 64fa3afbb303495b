// Benchmark: how long the bundled gateway takes to start on a 1 GiB ring log, clean and after crashes.
//
// Run: npx tsx bench/startup.ts [--gib 1] [--runs 3]   (needs `npm run build`; writes ~1 GiB under the OS temp dir)
// Builds a log of ~250-byte records, then times `node dist/ferry.cjs run` from spawn until it accepts
// MQTT connections, in three states: every segment sealed (clean stop); the last full segment
// unsealed (kill -9 while it was active: one 64 MiB segment is scanned); no segment sealed (worst
// case: everything is scanned). Also reports the recovery time the gateway logs and its RSS.
import fs from 'node:fs'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { encodeEntry } from '../src/codec/index.js'
import { RingLog } from '../src/log/index.js'
import { SEAL_FRAME_BYTES } from '../src/log/format.js'
import { silentLogger } from '../src/logger.js'
import { createMetrics } from '../src/metrics/index.js'
import { freePort, median, printTable, rssMiB, startFerry, tempDir, writeResult, runIfMain } from './lib.js'

const { values } = parseArgs({ options: { gib: { type: 'string', default: '1' }, runs: { type: 'string', default: '3' } } })
const BYTES = Number(values.gib) * 2 ** 30
const RUNS = Number(values.runs)
const SEGMENT = 64 * 2 ** 20

async function buildLog(dir: string): Promise<number> {
  const log = await RingLog.open({
    dir,
    segmentBytes: SEGMENT,
    maxBytes: BYTES * 2,
    discard: 'old',
    fsync: 'none',
    fsyncIntervalMs: 100,
    maxRecordBytes: 1 << 20,
    checkpointIntervalMs: 1000,
    logger: silentLogger,
    metrics: createMetrics(),
  })
  let n = 0
  while (log.sizeBytes < BYTES) {
    const batch: Promise<number>[] = []
    for (let i = 0; i < 10_000; i++, n++) {
      const payload = Buffer.from(JSON.stringify({ device: `sim-${String(n % 1000).padStart(5, '0')}`, seq: n, ts: Date.now(), temp: 21.5, hum: 40.2, bat: 3.71, rssi: -67, status: 'ok', pad: 'x'.repeat(60) }))
      batch.push(log.append(encodeEntry({ clientId: `sim-${n % 1000}`, topic: `devices/sim-${n % 1000}/telemetry`, qos: 1, retain: false, packetId: (n % 65535) + 1, payload })))
    }
    await Promise.all(batch)
  }
  await log.close()
  return n
}

function segments(dir: string): string[] {
  const d = path.join(dir, 'segments')
  return fs.readdirSync(d).sort().map((f) => path.join(d, f))
}

function unseal(file: string): void {
  const size = fs.statSync(file).size
  if (size > 64 + SEAL_FRAME_BYTES) fs.truncateSync(file, size - SEAL_FRAME_BYTES)
}

async function timeStart(dir: string): Promise<{ startMs: number; recoveryMs: number; rss: number }> {
  // Upstream is a closed port: startup must not depend on NATS.
  const natsPort = await freePort()
  const g = await startFerry(['--data-dir', dir, '--log-max-bytes', `${Math.ceil((BYTES * 2) / 2 ** 20)}MiB`, '--nats-url', `nats://127.0.0.1:${natsPort}`])
  const m = /"msg":"ring log recovered".*?"ms":(\d+)/.exec(g.proc.output())
  const rss = rssMiB(g.proc.pid)
  await g.proc.stop('SIGTERM')
  return { startMs: g.startMs, recoveryMs: m ? Number(m[1]) : NaN, rss }
}

export async function main(): Promise<void> {
  const dir = tempDir('ferry-bench-startup-')
  try {
    const t0 = performance.now()
    const records = await buildLog(dir)
    const size = segments(dir).reduce((s, f) => s + fs.statSync(f).size, 0)
    process.stderr.write(`built a log of ${records} records, ${(size / 2 ** 20).toFixed(0)} MiB in ${((performance.now() - t0) / 1000).toFixed(1)} s\n`)
    const rows: Record<string, { startMs: number[]; recoveryMs: number[]; rss: number[] }> = {}
    const record = (name: string, r: { startMs: number; recoveryMs: number; rss: number }): void => {
      const x = (rows[name] ??= { startMs: [], recoveryMs: [], rss: [] })
      x.startMs.push(r.startMs)
      x.recoveryMs.push(r.recoveryMs)
      x.rss.push(r.rss)
    }
    for (let i = 0; i < RUNS; i++) record('sealed (clean stop)', await timeStart(dir))
    for (let i = 0; i < RUNS; i++) {
      // The newest full data segment, as if the gateway was killed while it was active.
      const full = segments(dir).filter((f) => fs.statSync(f).size > SEGMENT / 2)
      unseal(full.at(-1)!)
      record('last segment unsealed (kill -9)', await timeStart(dir))
    }
    for (let i = 0; i < RUNS; i++) {
      for (const f of segments(dir)) unseal(f)
      record('no segment sealed (worst case)', await timeStart(dir))
    }
    process.stdout.write(`\nStartup on a ${(size / 2 ** 30).toFixed(2)} GiB log (${records.toLocaleString('en-US')} records, 64 MiB segments); medians of ${RUNS} runs\n\n`)
    const table = Object.entries(rows).map(([k, v]) => ({ state: k, startMs: median(v.startMs), recoveryMs: median(v.recoveryMs), rssMiB: median(v.rss) }))
    printTable([['log state', 'spawn → MQTT listening (ms)', 'recovery (ms, logged)', 'RSS after start (MiB)'], ...table.map((r) => [r.state, r.startMs, r.recoveryMs, r.rssMiB])])
    const file = writeResult('startup', { logBytes: size, records, runs: RUNS, medians: table, all: rows })
    process.stdout.write(`wrote ${file}\n`)
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

runIfMain(import.meta.url, main)
