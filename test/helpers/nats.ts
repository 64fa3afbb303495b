// Starts a private nats-server -js on an ephemeral port with a temp store dir, for one test file.
import { spawn, execFileSync } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import { reapAtExit } from './reap.js'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { tempDir } from './log.js'

/** Path of the nats-server binary, or undefined when it is not installed. */
export function natsServerPath(): string | undefined {
  for (const p of [process.env.NATS_SERVER_BIN, '/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) {
    if (p && fs.existsSync(p)) return p
  }
  try {
    return execFileSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

/** A free TCP port on 127.0.0.1 (closed again before returning). */
export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const s = net.createServer()
    s.once('error', reject)
    s.listen(0, '127.0.0.1', () => {
      const port = (s.address() as net.AddressInfo).port
      s.close(() => resolve(port))
    })
  })
}

export interface NatsServer {
  readonly url: string
  readonly port: number
  readonly storeDir: string
  /** Stops the server (SIGTERM, then SIGKILL after 5 s). */
  stop(): Promise<void>
  /** Starts it again on the same port and store. */
  start(): Promise<void>
  /** Sends a signal to the running server (e.g. SIGSTOP/SIGCONT to simulate a stalled server). */
  signal(sig: NodeJS.Signals): void
  [Symbol.asyncDispose](): Promise<void>
}

/** Resolves once something accepts TCP connections on 127.0.0.1:`port`. */
export async function waitForPort(port: number, deadlineMs: number): Promise<void> {
  const until = Date.now() + deadlineMs
  for (;;) {
    const ok = await new Promise<boolean>((resolve) => {
      const s = net.connect(port, '127.0.0.1')
      s.once('connect', () => {
        s.destroy()
        resolve(true)
      })
      s.once('error', () => resolve(false))
    })
    if (ok) return
    if (Date.now() > until) throw new Error(`nothing listens on ${port} after ${deadlineMs} ms`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/** Starts nats-server with JetStream; `extraConfig` is appended to its config file. */
export async function startNats(extraConfig = ''): Promise<NatsServer> {
  const bin = natsServerPath()
  if (!bin) throw new Error('nats-server is not installed: apt-get update && apt-get install -y nats-server')
  const port = await freePort()
  const dir = tempDir('ferry-nats-')
  const storeDir = path.join(dir, 'js')
  const conf = path.join(dir, 'nats.conf')
  fs.writeFileSync(conf, `listen: 127.0.0.1:${port}\njetstream { store_dir: "${storeDir}" }\n${extraConfig}\n`)
  let child: ChildProcess | undefined
  const start = async (): Promise<void> => {
    const c = reapAtExit(spawn(bin, ['-c', conf], { stdio: ['ignore', 'ignore', 'pipe'] }))
    let err = ''
    c.stderr?.on('data', (d: Buffer) => {
      if (err.length < 10_000) err += d.toString()
    })
    child = c
    try {
      await waitForPort(port, 10_000)
      // The port answering is not enough after a restart: another process may have taken it while
      // the server was down (this server then exits with "address already in use"). Wait for its own word.
      const until = Date.now() + 10_000
      while (!err.includes('Server is ready')) {
        if (c.exitCode !== null || c.signalCode !== null) throw new Error(`nats-server exited (${c.exitCode ?? c.signalCode})`)
        if (Date.now() > until) throw new Error('nats-server did not say "Server is ready" within 10 s')
        await new Promise((r) => setTimeout(r, 20))
      }
    } catch (e) {
      c.kill('SIGKILL')
      throw new Error(`${(e as Error).message}\n${err}`)
    }
  }
  const stop = async (): Promise<void> => {
    const c = child
    child = undefined
    if (!c || c.exitCode !== null) return
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()))
    c.kill('SIGTERM')
    const t = setTimeout(() => c.kill('SIGKILL'), 5000)
    await exited
    clearTimeout(t)
  }
  await start()
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    storeDir,
    stop,
    start,
    signal: (sig) => {
      child?.kill(sig)
    },
    async [Symbol.asyncDispose]() {
      child?.kill('SIGCONT')
      await stop()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}
