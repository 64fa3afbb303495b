// A component that stops on its own failure ends the process (src/main.ts waits on gateway.closed()):
// a ring log whose write fails at run time makes `ferry run` log why and exit 1, so that a supervisor
// restarts it and recovery runs from what is on disk. The write is made to fail for real: the gateway
// runs under a file-size limit (ulimit -f; Node ignores SIGXFSZ, so the write fails with EFBIG).
import { spawn } from 'node:child_process'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { reapAtExit } from '../helpers/reap.js'

let nats: NatsServer

beforeAll(async () => {
  nats = await startNats()
})

afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

describe('lifecycle - a component failing at run time', () => {
  it('lifecycle - a ring log write that fails (EFBIG) ends ferry run with exit 1 and says why', async () => {
    const dataDir = tempDir('ferry-log-failure-')
    const argv = ['dist/ferry.cjs', 'run', '--log-format', 'json', '--gateway-id', 'efbig', '--mqtt-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--data-dir', dataDir, '--log-segment-bytes', '4194304', '--nats-url', nats.url, '--allow-anonymous']
    // 1024 blocks is 512 KiB (sh counts 512-byte blocks) or 1 MiB (1 KiB blocks): either is below one segment.
    const child = reapAtExit(spawn('sh', ['-c', 'ulimit -f 1024 && exec "$0" "$@"', process.execPath, ...argv], { stdio: ['ignore', 'pipe', 'pipe'] }))
    let out = ''
    child.stderr!.on('data', (d: Buffer) => (out += d.toString()))
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    try {
      const port = await new Promise<number>((resolve, reject) => {
        const t = setTimeout(() => reject(new Error(`no "MQTT listening" within 20 s:\n${out}`)), 20_000)
        child.stderr!.on('data', () => {
          const m = /"msg":"MQTT listening","address":"[^"]*:(\d+)"/.exec(out)
          if (m) {
            clearTimeout(t)
            resolve(Number(m[1]))
          }
        })
        void exited.then((code) => reject(new Error(`exited with ${code} before listening:\n${out}`)))
      })
      const device = await mqtt.connectAsync(`mqtt://127.0.0.1:${port}`, { clientId: 'efbig-dev', reconnectPeriod: 0 })
      device.on('error', () => {})
      const payload = Buffer.alloc(32 * 1024, 7)
      // 2 MiB in all: past either limit. Publishes after the failure are refused (the connection may close).
      for (let i = 0; i < 64 && child.exitCode === null; i++) device.publish('devices/efbig-dev/blob', payload, { qos: 1 })
      const code = await Promise.race([exited, new Promise<'alive'>((r) => setTimeout(() => r('alive'), 15_000))])
      device.end(true)
      expect(code, `ferry run did not exit after its log failed:\n${out.slice(-3000)}`).toBe(1)
      expect(out).toContain('ring log I/O failed; no more appends are accepted')
      expect(out).toContain('ring log failed; exiting so a supervisor restarts Ferry and recovery runs')
    } finally {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL')
    }
  })
})
