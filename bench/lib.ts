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

/** The bundled gateway (`node dist/ferry.cjs run ...`); resolves once it listens for MQTT. */
export async function startFerry(args: string[]): Promise<{ proc: Proc; mqttPort: number; startMs: number }> {
  const mqttPort = await freePort()
  const t0 = performance.now()
  const proc = startProc(process.execPath, [path.join(ROOT, 'dist/ferry.cjs'), 'run', '--log-format', 'json', '--mqtt-listen', `127.0.0.1:${mqttPort}`, ...args])
  await waitPort(mqttPort, 120_000)
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
  return { gitSha: sha, node: process.version, natsServer: nats, cpu: os.cpus()[0]?.model, cores: os.cpus().length, memGiB: Math.round(os.totalmem() / 2 ** 30), date: new Date().toISOString() }
}

export function writeResult(name: string, data: unknown): string {
  const dir = path.join(ROOT, 'bench', 'results')
  fs.mkdirSync(dir, { recursive: true })
  const file = path.join(dir, `${name}.json`)
  fs.writeFileSync(file, JSON.stringify({ environment: environment(), ...((data as object) ?? {}) }, null, 2) + '\n')
  return file
}
