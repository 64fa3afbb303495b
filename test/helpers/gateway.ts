// Starts a Ferry gateway for tests: in process (Gateway class) or as the bundled program (node dist/ferry.cjs).
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { tempDir } from './log.js'
import { startNats } from './nats.js'
import type { NatsServer } from './nats.js'
import { reapAtExit } from './reap.js'
import { parseConfig } from '../../src/config/index.js'
import type { RawValues } from '../../src/config/index.js'
import { Gateway } from '../../src/gateway.js'
import { createLogger, silentLogger } from '../../src/logger.js'
import type { Logger } from '../../src/logger.js'

/** Starts a gateway in this process with config keys (e.g. {'log.dataDir': dir}); MQTT on a free port. */
export async function startGateway(values: Record<string, unknown>, logger: Logger = silentLogger): Promise<Gateway> {
  const raw: RawValues = new Map(Object.entries({ 'mqtt.listen': '127.0.0.1:0', 'http.listen': '127.0.0.1:0', gatewayId: 'test', ...values }).map(([k, v]) => [k, { value: v, source: 'flag' as const }]))
  return Gateway.start(parseConfig(raw, 'test'), logger)
}

/** Starts a nats-server and an in-process gateway on it (a fresh data dir, config keys `values` on top). */
export async function startWithNats(values: Record<string, unknown> = {}): Promise<{ nats: NatsServer; gw: Gateway }> {
  const nats = await startNats()
  try {
    return { nats, gw: await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, ...values }) }
  } catch (err) {
    await nats[Symbol.asyncDispose]()
    throw err
  }
}

/** Closes what startWithNats started (either may be missing when it failed). */
export async function stopWithNats(gw: Gateway | undefined, nats: NatsServer | undefined): Promise<void> {
  await gw?.close()
  await nats?.[Symbol.asyncDispose]()
}

/** A logger that keeps lines in memory (for assertions on what was logged). */
export function memoryLogger(lines: string[]): Logger {
  return createLogger({ level: 'debug', format: 'json', write: (l) => lines.push(l) })
}

export interface GatewayProcess {
  readonly child: ChildProcess
  /** MQTT port, parsed from the "MQTT listening" log line. */
  readonly port: number
  /** HTTP port (/metrics, /readyz), parsed from the "HTTP listening" log line. */
  readonly httpPort: number
  /** stderr so far (JSON log lines). */
  output(): string
  /** Resolves with the exit code once the process exited. */
  exited: Promise<number | null>
  kill(signal: NodeJS.Signals): Promise<number | null>
}

/**
 * Spawns `node dist/ferry.cjs run <args>` (with `env` added to this process's) and waits until it listens for MQTT.
 * `openFiles` runs it under `ulimit -n <openFiles>` (through sh, which execs node: the pid is the gateway's).
 */
export async function spawnGateway(args: string[], timeoutMs = 20_000, env: Record<string, string> = {}, openFiles?: number): Promise<GatewayProcess> {
  const argv = ['dist/ferry.cjs', 'run', '--log-format', 'json', '--http-listen', '127.0.0.1:0', ...args]
  const [cmd, cmdArgs] = openFiles === undefined ? [process.execPath, argv] : ['sh', ['-c', `ulimit -n ${openFiles} && exec "$0" "$@"`, process.execPath, ...argv]]
  const child = reapAtExit(spawn(cmd, cmdArgs, { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }))
  let out = ''
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  const port = await new Promise<number>((resolve, reject) => {
    const t = setTimeout(() => reject(new Error(`gateway did not start within ${timeoutMs} ms:\n${out}`)), timeoutMs)
    const check = (): void => {
      const m = /"msg":"MQTT listening","address":"[^"]*:(\d+)"/.exec(out)
      if (m) {
        clearTimeout(t)
        resolve(Number(m[1]))
      }
    }
    child.stderr?.on('data', check)
    void exited.then((code) => {
      clearTimeout(t)
      reject(new Error(`gateway exited with ${code} before listening:\n${out}`))
    })
  })
  const http = /"msg":"HTTP listening","address":"[^"]*:(\d+)"/.exec(out)
  return {
    child,
    port,
    httpPort: http ? Number(http[1]) : 0,
    output: () => out,
    exited,
    async kill(signal) {
      if (child.exitCode === null && child.signalCode === null) child.kill(signal)
      return exited
    },
  }
}

/** Runs `node dist/ferry.cjs <args>` to completion; resolves with exit code and output. */
export async function runFerry(args: string[], env: Record<string, string> = {}): Promise<{ code: number | null; stdout: string; stderr: string }> {
  const child = reapAtExit(spawn(process.execPath, ['dist/ferry.cjs', ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } }))
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)))
  return { code, stdout, stderr }
}
