// A start that fails at any stage leaves nothing running: every port it bound can be bound again,
// the data directory's lock is free (another gateway opens the directory), and the process exits on
// its own (no timer, socket or connection keeps it alive). Each start runs in a child process
// (test/helpers/start-failure.ts) so that "exits on its own" can be observed; the checks run while
// that child is still alive, after its start failed.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { STAGES } from '../../src/gateway.js'
import type { Stage } from '../../src/gateway.js'
import { DirLock } from '../../src/log/index.js'
import { makeCertificates } from '../helpers/certs.js'
import { openLog, tempDir } from '../helpers/log.js'
import { freePort, startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { reapAtExit } from '../helpers/reap.js'

/** How long the child may take to exit once its stdin ended. */
const EXIT_WITHIN_MS = 5000

let nats: NatsServer
let certs: string

beforeAll(async () => {
  nats = await startNats()
  certs = tempDir('ferry-lifecycle-certs-')
  makeCertificates(certs, [])
})

afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

/** Whether `port` on 127.0.0.1 can be bound (nothing listens on it). */
async function bindable(port: number): Promise<boolean> {
  const s = net.createServer()
  const ok = await new Promise<boolean>((resolve) => {
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => resolve(true))
  })
  if (ok) await new Promise<void>((resolve) => s.close(() => resolve()))
  return ok
}

/** Holds `port` on 127.0.0.1 until disposed. */
async function occupy(port: number): Promise<net.Server & AsyncDisposable> {
  const s = net.createServer((c) => c.destroy())
  await new Promise<void>((resolve, reject) => {
    s.once('error', reject)
    s.listen(port, '127.0.0.1', () => resolve())
  })
  return Object.assign(s, { [Symbol.asyncDispose]: () => new Promise<void>((resolve) => s.close(() => resolve())) })
}

interface Setup {
  readonly dataDir: string
  readonly mqttPort: number
  readonly mqttsPort: number
  readonly httpPort: number
  readonly values: Record<string, unknown>
}

/** A gateway configuration on fresh ports (plain MQTT, MQTTS and HTTP) and a fresh data directory. */
async function setup(): Promise<Setup> {
  const dataDir = tempDir('ferry-lifecycle-')
  const [mqttPort, mqttsPort, httpPort] = [await freePort(), await freePort(), await freePort()]
  return {
    dataDir,
    mqttPort,
    mqttsPort,
    httpPort,
    values: {
      gatewayId: 'lifecycle',
      'log.dataDir': dataDir,
      'mqtt.listen': `127.0.0.1:${mqttPort}`,
      'mqtts.listen': `127.0.0.1:${mqttsPort}`,
      'tls.cert': path.join(certs, 'server.pem'),
      'tls.key': path.join(certs, 'server.key'),
      'http.listen': `127.0.0.1:${httpPort}`,
      'nats.url': nats.url,
      'auth.allowAnonymous': true,
      shutdownTimeoutMs: 2000,
    },
  }
}

/**
 * Starts a gateway in a child process, expects its start to fail with `expected`, runs `check`
 * while the child is alive, then ends its stdin and expects it to exit by itself.
 */
async function failedStart(values: Record<string, unknown>, expected: RegExp, check: () => Promise<void>, failAfter?: Stage): Promise<void> {
  const child = reapAtExit(spawn(process.execPath, ['--import', 'tsx', 'test/helpers/start-failure.ts', JSON.stringify({ values, failAfter })], { stdio: ['pipe', 'pipe', 'pipe'] }))
  let out = ''
  let err = ''
  child.stdout!.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr!.on('data', (d: Buffer) => (err += d.toString()))
  const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
  try {
    const line = await new Promise<string>((resolve, reject) => {
      const t = setTimeout(() => reject(new Error(`no report from the child within 30 s:\n${out}\n${err}`)), 30_000)
      const look = (): void => {
        const nl = out.indexOf('\n')
        if (nl >= 0) {
          clearTimeout(t)
          resolve(out.slice(0, nl))
        }
      }
      child.stdout!.on('data', look)
      void exited.then((code) => reject(new Error(`child exited with ${code} before reporting:\n${out}\n${err}`)))
    })
    const report = JSON.parse(line) as { started?: boolean; failed?: string; unrefTimers?: string[] }
    expect(report.started, 'the start was expected to fail').toBeUndefined()
    expect(report.failed).toMatch(expected)
    // Ferry's timers are unref'd: "exits on its own" below cannot see one left running, this can.
    expect(report.unrefTimers, 'unref\'d timers still scheduled after the failed start (where each was created)').toEqual([])
    await check()
    child.stdin!.end()
    const code = await Promise.race([exited, new Promise<'alive'>((r) => setTimeout(() => r('alive'), EXIT_WITHIN_MS))])
    if (code === 'alive') await new Promise((r) => setTimeout(r, 100)) // the child's own diagnosis is due at 3 s
    expect(code, `the child did not exit on its own within ${EXIT_WITHIN_MS} ms after its failed start (${report.failed}):\n${err}`).toBe(0)
  } finally {
    if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
  }
}

/** Nothing left of `s`: its ports can be bound again and another gateway can open its data directory. */
async function nothingLeft(s: Setup, ports: readonly number[] = [s.mqttPort, s.mqttsPort, s.httpPort]): Promise<void> {
  for (const port of ports) expect(await bindable(port), `port ${port} is still bound`).toBe(true)
  expect(DirLock.holder(s.dataDir), 'the data directory is still locked').toBeUndefined()
  const log = await openLog(s.dataDir) // what the next gateway on this directory does first
  await log.close()
}

describe('lifecycle', () => {
  it('lifecycle - log: data directory locked by another process; nothing started is left running', async () => {
    const s = await setup()
    const lock = DirLock.acquire(s.dataDir) // this process stands for the other gateway
    await failedStart(s.values, /in use by another Ferry/, async () => {
      for (const port of [s.mqttPort, s.mqttsPort, s.httpPort]) expect(await bindable(port)).toBe(true)
      expect(DirLock.holder(s.dataDir)).toBe(process.pid) // still ours, not taken over
    })
    lock.release()
  })

  it('lifecycle - log: data directory cannot be created (a file is in the way)', async () => {
    const s = await setup()
    const file = path.join(s.dataDir, 'not-a-directory')
    fs.writeFileSync(file, '')
    await failedStart({ ...s.values, 'log.dataDir': path.join(file, 'data') }, /ENOTDIR/, async () => {
      for (const port of [s.mqttPort, s.mqttsPort, s.httpPort]) expect(await bindable(port)).toBe(true)
    })
  })

  it('lifecycle - ingress: MQTT port taken; the log is closed and its lock released', async () => {
    const s = await setup()
    await using _taken = await occupy(s.mqttPort)
    await failedStart(s.values, /cannot listen for MQTT on/, () => nothingLeft(s, [s.mqttsPort, s.httpPort]))
  })

  it('lifecycle - ingress: MQTTS (TLS) port taken; the plain MQTT listener and the log are closed', async () => {
    const s = await setup()
    await using _taken = await occupy(s.mqttsPort)
    await failedStart(s.values, /cannot listen for MQTTS on/, () => nothingLeft(s, [s.mqttPort, s.httpPort]))
  })

  it('lifecycle - http: HTTP port taken; MQTT listeners, health and the log are closed', async () => {
    const s = await setup()
    await using _taken = await occupy(s.httpPort)
    await failedStart(s.values, /cannot listen for HTTP on/, () => nothingLeft(s, [s.mqttPort, s.mqttsPort]))
  })

  // Stages that cannot be made to fail from outside during a start (the forwarder and the downlink
  // connect in the background) fail through the test seam: a throw right after the stage started.
  for (const stage of STAGES) {
    it(`lifecycle - a failure right after the ${stage} stage started (test seam) leaves nothing running`, async () => {
      const s = await setup()
      await failedStart(s.values, new RegExp(`after the ${stage} stage`), () => nothingLeft(s), stage)
    })
  }
})
