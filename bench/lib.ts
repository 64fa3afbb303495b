// Shared benchmark plumbing: servers on loopback, /proc CPU and RSS readings, medians, tables, JSON results.
import { execFileSync, spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { freePort, natsServerPath, waitForPort } from '../test/helpers/nats.js'

export const ROOT = path.resolve(import.meta.dirname, '..')

export function tempDir(prefix: string): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

export { freePort }

export function waitPort(port: number, ms = 15_000): Promise<void> {
  return waitForPort(port, ms)
}

export function natsBin(): string {
  const bin = natsServerPath()
  if (!bin) throw new Error('nats-server is not installed: apt-get update && apt-get install -y nats-server')
  return bin
}

/** Runs a benchmark's main() when its file is the entry point; exit code 1 with the stack on failure. */
export function runIfMain(url: string, main: () => Promise<unknown>): void {
  if (url !== `file://${process.argv[1]}`) return
  main().then(
    () => process.exit(0),
    (err: unknown) => {
      process.stderr.write(`${String((err as Error).stack ?? err)}\n`)
      process.exit(1)
    },
  )
}

export interface Proc {
  readonly child: ChildProcess
  readonly pid: number
  output(): string
  stop(signal?: NodeJS.Signals): Promise<void>
}

export function startProc(cmd: string, args: string[], env: Record<string, string> = {}): Proc {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } })
  let out = ''
  const keep = (d: Buffer): void => {
    out += d.toString()
    if (out.length > 200_000) out = out.slice(-100_000)
  }
  child.stdout?.on('data', keep)
  child.stderr?.on('data', keep)
  const exited = new Promise<void>((resolve) => child.once('exit', () => resolve()))
  return {
    child,
    pid: child.pid ?? -1,
    output: () => out,
    async stop(signal = 'SIGTERM') {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      const t = setTimeout(() => child.kill('SIGKILL'), 15_000)
      await exited
      clearTimeout(t)
    },
  }
}

/** A nats-server with JetStream (and optionally its MQTT listener) on free loopback ports. */
export async function startNatsServer(opts: { mqtt?: boolean } = {}): Promise<{ proc: Proc; url: string; port: number; mqttPort?: number; dir: string }> {
  const port = await freePort()
  const dir = tempDir('ferry-bench-nats-')
  const mqttPort = opts.mqtt ? await freePort() : undefined
  const conf = path.join(dir, 'nats.conf')
  fs.writeFileSync(
    conf,
    [
      'server_name: bench',
      `listen: 127.0.0.1:${port}`,
      `jetstream { store_dir: "${path.join(dir, 'js')}" }`,
      mqttPort ? `mqtt { listen: 127.0.0.1:${mqttPort} }` : '',
    ].join('\n'),
  )
  const proc = startProc(natsBin(), ['-c', conf])
  await waitPort(port)
  if (mqttPort) await waitPort(mqttPort)
  return { proc, url: `nats://127.0.0.1:${port}`, port, ...(mqttPort ? { mqttPort } : {}), dir }
}

/** The V8 flags Ferry's single executables are built with (`node scripts/runtime.mjs v8-flags`), read once. */
let shipped: string[] | undefined
export function shippedV8Flags(): string[] {
  shipped ??= execFileSync(process.execPath, [path.join(ROOT, 'scripts', 'runtime.mjs'), 'v8-flags'], { encoding: 'utf8' }).trim().split(' ').filter(Boolean)
  return shipped
}

/**
 * The command that runs the gateway: `node <V8 flags> dist/ferry.cjs`, by default with the V8 flags the single
 * executables ship with (scripts/runtime.mjs), so that the bench measures what ships. BENCH_FERRY_BUNDLE picks another
 * bundle, BENCH_FERRY_NODE another Node binary for the gateway alone (the load generator stays on the Node running
 * the benchmark), BENCH_FERRY_NODE_ARGS other space-separated V8 flags before the bundle (set but empty: none).
 */
export function ferryCommand(): string[] {
  const env = process.env.BENCH_FERRY_NODE_ARGS
  const nodeArgs = env === undefined ? shippedV8Flags() : env.split(' ').filter(Boolean)
  return [process.env.BENCH_FERRY_NODE ?? process.execPath, ...nodeArgs, process.env.BENCH_FERRY_BUNDLE ?? path.join(ROOT, 'dist/ferry.cjs')]
}

/** The bundled gateway (see {@link ferryCommand}); resolves once it listens for MQTT. */
export async function startFerry(args: string[]): Promise<{ proc: Proc; mqttPort: number; startMs: number }> {
  const mqttPort = await freePort()
  const t0 = performance.now()
  const [cmd, ...pre] = ferryCommand()
  const proc = startProc(cmd!, [...pre, 'run', '--log-format', 'json', '--http-listen', '127.0.0.1:0', '--mqtt-listen', `127.0.0.1:${mqttPort}`, ...args])
  await waitPort(mqttPort, 120_000).catch((err: unknown) => {
    throw new Error(`the gateway did not listen: ${(err as Error).message}\n${proc.output().slice(-3000)}`)
  })
  return { proc, mqttPort, startMs: performance.now() - t0 }
}

const CLK_TCK = 100

/** CPU seconds (user + system) a process has used so far, from /proc/<pid>/stat. */
export function cpuSeconds(pid: number): number {
  const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ')
  return (Number(fields[11]) + Number(fields[12])) / CLK_TCK
}

/** Resident set size in MiB from /proc/<pid>/status. */
export function rssMiB(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return m ? Number(m[1]) / 1024 : NaN
}

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b)
  const mid = s.length >> 1
  return s.length === 0 ? NaN : s.length % 2 ? s[mid]! : (s[mid - 1]! + s[mid]!) / 2
}

/** Median of every numeric leaf over equally shaped objects (other leaves: the first's). */
export function medianOf<T>(xs: T[]): T {
  const first = xs[0]
  if (typeof first === 'number') return median(xs as number[]) as T
  if (typeof first !== 'object' || first === null) return first as T
  return Object.fromEntries(Object.keys(first).map((k) => [k, medianOf(xs.map((x) => (x as Record<string, unknown>)[k]))])) as T
}

export function percentile(xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const s = [...xs].sort((a, b) => a - b)
  return s[Math.min(s.length - 1, Math.floor((p / 100) * s.length))]!
}

/** Prints rows as an aligned table (first row = header). */
export function printTable(rows: (string | number)[][]): string {
  const cells = rows.map((r) => r.map((c) => (typeof c === 'number' ? fmt(c) : c)))
  const widths = cells[0]!.map((_, i) => Math.max(...cells.map((r) => (r[i] ?? '').length)))
  const line = (r: string[]): string => '| ' + r.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |'
  const out = [line(cells[0]!), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...cells.slice(1).map(line)].join('\n')
  process.stdout.write(out + '\n')
  return out
}

export function fmt(n: number): string {
  if (!Number.isFinite(n)) return '-'
  if (Math.abs(n) >= 1000) return Math.round(n).toLocaleString('en-US')
  if (Math.abs(n) >= 10) return n.toFixed(1)
  if (Math.abs(n) >= 0.01) return n.toFixed(2)
  return n.toPrecision(2)
}

/** Machine and version facts attached to every result file. */
export function environment(): Record<string, unknown> {
  let sha = 'unknown'
  let nats = 'unknown'
  try {
    sha = execFileSync('git', ['rev-parse', '--short', 'HEAD'], { cwd: ROOT, encoding: 'utf8' }).trim()
  } catch {}
  try {
    nats = execFileSync(natsBin(), ['--version'], { encoding: 'utf8' }).trim()
  } catch {}
  // The gateway's V8 flags as bench runs start it (footprint.ts records its own in `gateway`).
  let gatewayNodeArgs: string[] = []
  try {
    gatewayNodeArgs = ferryCommand().slice(1, -1)
  } catch {}
  return { gitSha: sha, node: process.version, gatewayNodeArgs, natsServer: nats, cpu: os.cpus()[0]?.model, cores: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), date: new Date().toISOString() }
}

export function writeResult(name: string, data: unknown): string {
  const dir = path.join(ROOT, 'bench', 'results')
  fs.mkdirSync(dir, { recursive: true })
  const file = path.join(dir, `${name}.json`)
  fs.writeFileSync(file, JSON.stringify({ environment: environment(), ...(data as object) }, null, 2) + '\n')
  return file
}

// ---- Helpers for footprint.ts, compactness.ts and crash.ts ----
// (Imports are hoisted; this one sits here so the helpers above stay untouched.)
import { connect as netConnect } from 'node:net'
import { decode as decodeCbor } from 'cbor-x'

/** This process's limit on open files (`ulimit -n`), soft and hard, from /proc/self/limits (Infinity when unlimited). */
export function openFilesLimit(): { soft: number; hard: number } {
  const m = /^Max open files\s+(\S+)\s+(\S+)/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))
  const n = (s: string | undefined): number => (s === undefined || s === 'unlimited' ? Infinity : Number(s))
  return { soft: n(m?.[1]), hard: n(m?.[2]) }
}

/**
 * Spawns the gateway with MQTT on a given port (restarts reuse it) and resolves once the port accepts
 * TCP. `startMs` is spawn → accepting, polled every 2 ms (waitPort polls every 50 ms). `command`
 * replaces `node dist/ferry.cjs` (e.g. the single executable `[dist/ferry]`). Rejects with the
 * gateway's output if it exits first.
 */
export async function startFerryAt(mqttPort: number, args: string[], opts: { command?: string[]; deadlineMs?: number } = {}): Promise<{ proc: Proc; mqttPort: number; startMs: number }> {
  const [cmd, ...pre] = opts.command ?? ferryCommand()
  const t0 = performance.now()
  const proc = startProc(cmd!, [...pre, 'run', '--log-format', 'json', '--http-listen', '127.0.0.1:0', '--mqtt-listen', `127.0.0.1:${mqttPort}`, ...args])
  const startMs = await whenAccepting(mqttPort, proc, t0, opts.deadlineMs)
  return { proc, mqttPort, startMs }
}

/**
 * Resolves with the milliseconds since `t0` once 127.0.0.1:`port` accepts TCP, polling every 2 ms.
 * Rejects with the process's output if `proc` exits first; kills it and rejects after `deadlineMs`.
 */
export async function whenAccepting(port: number, proc: Proc, t0: number, deadlineMs = 120_000): Promise<number> {
  for (;;) {
    if (await acceptsTcp(port)) return performance.now() - t0
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`process exited (${proc.child.exitCode ?? proc.child.signalCode}) before listening on ${port}:\n${proc.output().slice(-3000)}`)
    if (performance.now() - t0 > deadlineMs) {
      await proc.stop('SIGKILL')
      throw new Error(`nothing listens on ${port} after ${deadlineMs} ms:\n${proc.output().slice(-3000)}`)
    }
    await new Promise((r) => setTimeout(r, 2))
  }
}

function acceptsTcp(port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = netConnect(port, '127.0.0.1')
    s.once('connect', () => {
      s.destroy()
      resolve(true)
    })
    s.once('error', () => resolve(false))
  })
}

/** Samples a process's RSS (MiB) every `everyMs` until stop(), which returns the samples. */
export function sampleRss(pid: number, everyMs = 250): { samples: number[]; stop(): number[] } {
  const samples: number[] = []
  const take = (): void => {
    const v = rssMiB(pid)
    if (Number.isFinite(v)) samples.push(v)
  }
  take()
  const t = setInterval(take, everyMs)
  return {
    samples,
    stop() {
      clearInterval(t)
      take()
      return samples
    },
  }
}

/** Min, median and max of samples (NaN when empty). */
export function spread(xs: number[]): { min: number; median: number; max: number; n: number } {
  return { min: xs.length ? Math.min(...xs) : NaN, median: median(xs), max: xs.length ? Math.max(...xs) : NaN, n: xs.length }
}

/** Polls `cond` every `everyMs` until it holds or `deadlineMs` passes; resolves whether it held. */
export async function until(cond: () => boolean | Promise<boolean>, deadlineMs: number, everyMs = 50): Promise<boolean> {
  const end = performance.now() + deadlineMs
  for (;;) {
    if (await cond()) return true
    if (performance.now() > end) return false
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

// ---- Added for peers and the report (issue 3): histograms, PUBACK timing, stream audit, time series. ----

/** Latency histogram: `counts[i]` samples below `edgesMs[i]` (and at or above `edgesMs[i-1]`); the last count is at or above the last edge. */
export interface Histogram {
  readonly edgesMs: number[]
  readonly counts: number[]
  readonly n: number
}

/** Bucket edges for latency histograms: 0.01 ms to 100 s, ten per decade (R10 series: 1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8). */
export const LATENCY_EDGES_MS: readonly number[] = [...Array.from({ length: 70 }, (_, k) => Number(([1, 1.25, 1.6, 2, 2.5, 3.15, 4, 5, 6.3, 8][k % 10]! * 10 ** (Math.floor(k / 10) - 2)).toPrecision(3))), 100_000]

/** Incremental latency histogram over {@link LATENCY_EDGES_MS}. */
export class HistogramRecorder {
  private counts = new Array<number>(LATENCY_EDGES_MS.length + 1).fill(0)
  private n = 0

  add(ms: number): void {
    if (!Number.isFinite(ms)) return
    let lo = 0
    let hi = LATENCY_EDGES_MS.length
    while (lo < hi) {
      const mid = (lo + hi) >> 1
      if (ms < LATENCY_EDGES_MS[mid]!) hi = mid
      else lo = mid + 1
    }
    this.counts[lo] = (this.counts[lo] ?? 0) + 1
    this.n++
  }

  reset(): void {
    this.counts.fill(0)
    this.n = 0
  }

  snapshot(): Histogram {
    return { edgesMs: [...LATENCY_EDGES_MS], counts: [...this.counts], n: this.n }
  }
}

export function latencyHistogram(samplesMs: Iterable<number>): Histogram {
  const h = new HistogramRecorder()
  for (const s of samplesMs) h.add(s)
  return h.snapshot()
}

/** Merges histograms with the same edges (e.g. the runs of one target). */
export function mergeHistograms(hs: Histogram[]): Histogram | undefined {
  const first = hs[0]
  if (!first) return undefined
  const counts = first.counts.map((_, i) => hs.reduce((a, h) => a + (h.counts[i] ?? 0), 0))
  return { edgesMs: [...first.edgesMs], counts, n: hs.reduce((a, h) => a + h.n, 0) }
}

/**
 * Times every QoS ≥ 1 `MqttClient.publish` in this process from the call to its callback (PUBACK /
 * PUBCOMP), the same span firmware-sim reports as ack latency, into a histogram. It wraps
 * `MqttClient.prototype.publish` until `stop()`; firmware-sim keeps only percentiles, not samples.
 */
export async function recordPubackLatency(): Promise<{ recorder: HistogramRecorder; stop(): void }> {
  const { MqttClient } = await import('mqtt')
  const proto = MqttClient.prototype as unknown as { publish: (...args: unknown[]) => unknown }
  const original = proto.publish
  const recorder = new HistogramRecorder()
  proto.publish = function (this: unknown, ...args: unknown[]): unknown {
    const cb = args[args.length - 1]
    const opts = args[2]
    const qos = typeof opts === 'object' && opts !== null ? (opts as { qos?: number }).qos ?? 0 : 0
    if (typeof cb === 'function' && qos > 0) {
      const t0 = performance.now()
      args[args.length - 1] = function (this: unknown, err: unknown, ...rest: unknown[]): unknown {
        if (!err) recorder.add(performance.now() - t0)
        return (cb as (...a: unknown[]) => unknown).call(this, err, ...rest)
      }
    }
    return original.apply(this, args)
  }
  return {
    recorder,
    stop() {
      proto.publish = original
    },
  }
}

/** A stored message's payload as the device's object: CBOR (Ferry's default for JSON payloads) or JSON. */
export function decodePayload(data: Uint8Array, contentType: string | undefined): unknown {
  return contentType === 'application/cbor' ? decodeCbor(data) : JSON.parse(new TextDecoder().decode(data))
}

/** Result of comparing what devices had acknowledged with what a stream holds. */
export interface StreamAudit {
  /** Messages in the stream that carry a (device, seq) of the audited devices. */
  stored: number
  /** Distinct (device, seq) among them. */
  unique: number
  /** Stored more than once. */
  duplicates: number
  /** Acknowledged to a device and not in the stream. */
  lost: number
  /** Acknowledged to devices, in total. */
  acked: number
}

/**
 * Reads a whole stream (ordered consumer) and checks it against the acknowledgement ledgers of
 * the fleets that published into it. `decode` turns a payload into the telemetry object
 * (`{device, seq}`); messages from other publishers (e.g. probes) are ignored.
 */
export async function auditStream(
  url: string,
  stream: string,
  ledgers: { toMap(): Map<string, number[]> }[],
  decode: (data: Uint8Array, contentType: string | undefined) => unknown,
  timeoutMs = 300_000,
): Promise<StreamAudit & { perLedger: StreamAudit[] }> {
  const { connect } = await import('@nats-io/transport-node')
  const { jetstream, jetstreamManager } = await import('@nats-io/jetstream')
  // Device id → acknowledged seqs, which ledger it belongs to, and what the stream holds of it.
  const devices = new Map<string, { seqs: number[]; ledger: number; seen: Set<number>; stored: number; duplicates: number }>()
  ledgers.forEach((l, i) => {
    for (const [d, seqs] of l.toMap()) {
      const prev = devices.get(d)
      devices.set(d, { seqs: [...(prev?.seqs ?? []), ...seqs], ledger: i, seen: new Set(), stored: 0, duplicates: 0 })
    }
  })
  const nc = await connect({ servers: url })
  try {
    const total = (await (await jetstreamManager(nc)).streams.info(stream)).state.messages
    if (total > 0) {
      const consumer = await jetstream(nc).consumers.get(stream)
      const iter = await consumer.consume({ max_messages: 10_000 })
      const deadline = setTimeout(() => iter.stop(), timeoutMs)
      let read = 0
      for await (const m of iter) {
        read++
        try {
          const v = decode(m.data, m.headers?.get('Content-Type')) as { device?: unknown; seq?: unknown }
          const dev = typeof v.device === 'string' ? devices.get(v.device) : undefined
          if (dev && typeof v.seq === 'number') {
            dev.stored++
            if (dev.seen.has(v.seq)) dev.duplicates++
            else dev.seen.add(v.seq)
          }
        } catch {}
        if (read >= total) break
      }
      clearTimeout(deadline)
    }
  } finally {
    await nc.close()
  }
  const zero = (): StreamAudit => ({ stored: 0, unique: 0, duplicates: 0, lost: 0, acked: 0 })
  const total = zero()
  const perLedger = ledgers.map(zero)
  for (const dev of devices.values()) {
    let lost = 0
    for (const seq of dev.seqs) if (!dev.seen.has(seq)) lost++
    for (const a of [total, perLedger[dev.ledger]!]) {
      a.stored += dev.stored
      a.unique += dev.seen.size
      a.duplicates += dev.duplicates
      a.acked += dev.seqs.length
      a.lost += lost
    }
  }
  return { ...total, perLedger }
}

/** One reading of a time series: cumulative counters at `tS` seconds after the series started. */
export interface SeriesReading {
  acked: number
  stored: number
  rssMiB: number
}

/**
 * Samples `read()` every `intervalMs` (never two reads at once) and returns per-interval rates:
 * `[tS, ackedPerS, arrivedPerS, rssMiB]` rows, plus labelled marks (e.g. "upstream down").
 */
export function startSeries(intervalMs: number, read: () => Promise<SeriesReading> | SeriesReading): {
  mark(label: string): void
  stop(): Promise<{ intervalMs: number; columns: string[]; rows: number[][]; marks: { tS: number; label: string }[] }>
} {
  const t0 = performance.now()
  const rows: number[][] = []
  const marks: { tS: number; label: string }[] = []
  let prev: (SeriesReading & { t: number }) | undefined
  let stopped = false
  let timer: NodeJS.Timeout | undefined
  let inflight: Promise<void> = Promise.resolve()
  const round = (x: number, d: number): number => Math.round(x * 10 ** d) / 10 ** d
  const tick = async (): Promise<void> => {
    let r: SeriesReading
    try {
      r = await read()
    } catch {
      return
    }
    const t = performance.now()
    if (prev) {
      const dt = (t - prev.t) / 1000
      rows.push([round((t - t0) / 1000, 3), Math.round((r.acked - prev.acked) / dt), Math.round((r.stored - prev.stored) / dt), round(r.rssMiB, 1)])
    }
    prev = { ...r, t }
  }
  const schedule = (): void => {
    timer = setTimeout(() => {
      inflight = tick().finally(() => {
        if (!stopped) schedule()
      })
    }, intervalMs)
  }
  inflight = tick().finally(() => {
    if (!stopped) schedule()
  })
  return {
    mark(label) {
      marks.push({ tS: round((performance.now() - t0) / 1000, 3), label })
    },
    async stop() {
      stopped = true
      clearTimeout(timer)
      await inflight
      return { intervalMs, columns: ['tS', 'ackedPerS', 'arrivedPerS', 'rssMiB'], rows, marks }
    },
  }
}

/** The command line that ran this benchmark, as someone would type it (`npx tsx bench/x.ts --a 1`). */
export function commandLine(): string {
  const script = path.relative(ROOT, process.argv[1] ?? '')
  return ['npx tsx', script, ...process.argv.slice(2)].join(' ')
}
