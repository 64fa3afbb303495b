// Graceful stop: SIGTERM closes every connection (also sockets that never sent CONNECT), checkpoints, and exits 0.
import { spawn } from 'node:child_process'
import net from 'node:net'
import { describe, expect, it } from 'vitest'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { freePort, startNats } from '../helpers/nats.js'

describe('shutdown', () => {
  it('shutdown - SIGTERM with a connected device and a silent socket exits 0 well before the CONNECT timeout', async () => {
    const natsPort = await freePort() // nothing listens: upstream down must not block the stop
    const gw = await spawnGateway(['--data-dir', tempDir(), '--mqtt-listen', '127.0.0.1:0', '--nats-url', `nats://127.0.0.1:${natsPort}`])
    const silent = net.connect(gw.port, '127.0.0.1')
    silent.on('error', () => {})
    await new Promise<void>((resolve) => silent.once('connect', () => resolve()))
    const device = await connectClient(gw.port, 'stopping-dev')
    await device.publishAsync('devices/stopping/t', 'x', { qos: 1 })
    const started = Date.now()
    const code = await gw.kill('SIGTERM')
    expect(code).toBe(0)
    expect(Date.now() - started).toBeLessThan(8000) // aedes alone would wait 30 s for the silent socket
    expect(gw.output()).toContain('"msg":"stopped"')
    await endClient(device)
    silent.destroy()
  })

  it('shutdown - SIGTERM while starting stops gracefully once started (exit 0, not killed)', async () => {
    const child = spawn(process.execPath, ['dist/ferry.cjs', 'run', '--log-format', 'json', '--http-listen', '127.0.0.1:0', '--data-dir', tempDir(), '--mqtt-listen', '127.0.0.1:0', '--nats-url', `nats://127.0.0.1:${await freePort()}`], { stdio: ['ignore', 'ignore', 'pipe'] })
    let out = ''
    const exited = new Promise<number | null>((resolve) => child.once('exit', (code) => resolve(code)))
    await new Promise<void>((resolve) =>
      child.stderr.on('data', (d: Buffer) => {
        out += d.toString()
        if (out.includes('"msg":"starting"')) resolve()
      }),
    )
    child.kill('SIGTERM')
    expect(await exited).toBe(0)
    expect(out).toContain('"msg":"stopped"')
  })

  it('shutdown - with NATS stalled (SIGSTOP) the stop still finishes in time, seals the log and exits 0', async () => {
    await using nats = await startNats()
    const gw = await spawnGateway(['--data-dir', tempDir(), '--mqtt-listen', '127.0.0.1:0', '--nats-url', nats.url, '--shutdown-timeout', '1.5s'])
    const device = await connectClient(gw.port, 'stall-dev')
    await device.publishAsync('devices/stall/t', 'before', { qos: 1 })
    nats.signal('SIGSTOP')
    await device.publishAsync('devices/stall/t', 'during', { qos: 1 }) // acknowledged by the log
    const code = await gw.kill('SIGTERM')
    nats.signal('SIGCONT')
    expect(code).toBe(0)
    expect(gw.output()).toContain('"msg":"stopped"')
    await endClient(device)
  })

  it('lock - a second gateway on the same data directory fails fast; a lock left by kill -9 is taken over', async () => {
    const dir = tempDir()
    const upstream = `nats://127.0.0.1:${await freePort()}`
    const first = await spawnGateway(['--data-dir', dir, '--mqtt-listen', '127.0.0.1:0', '--nats-url', upstream])
    const second = await runFerry(['run', '--data-dir', dir, '--mqtt-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--nats-url', upstream])
    expect(second.code).toBe(1)
    expect(second.stderr).toContain('FERRY_ERR_LOG_LOCKED')
    expect(second.stderr).toContain(`is in use by another Ferry (pid ${first.child.pid})`)
    await first.kill('SIGKILL')
    const third = await spawnGateway(['--data-dir', dir, '--mqtt-listen', '127.0.0.1:0', '--nats-url', upstream])
    expect(await third.kill('SIGTERM')).toBe(0)
  })
})
