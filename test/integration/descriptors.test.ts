// Descriptors are a budgeted resource: under a low `ulimit -n`, idle HTTP connections and MQTT sockets that never send
// CONNECT do not end the process, and a device publishes again once they close. Plus the HTTP endpoint's Host check.
import fs from 'node:fs'
import http from 'node:http'
import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream } from '../helpers/stream.js'

const OPEN_FILES = 200

/** Open descriptors of a process (Linux). */
const openFds = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length

/** Opens `n` TCP connections to `port` that send nothing; resolves once each is connected or refused. */
async function idleSockets(port: number, n: number): Promise<net.Socket[]> {
  const socks: net.Socket[] = []
  await Promise.all(
    Array.from({ length: n }, () => new Promise<void>((resolve) => {
      const s = net.connect(port, '127.0.0.1')
      s.on('error', () => resolve())
      s.on('close', () => resolve())
      s.on('connect', () => resolve())
      socks.push(s)
    })),
  )
  return socks
}

/** GET `path` with a given Host header; resolves with the status code. */
function get(port: number, path: string, host: string): Promise<number> {
  return new Promise((resolve, reject) => {
    const req = http.request({ host: '127.0.0.1', port, path, headers: { host }, agent: false }, (res) => {
      res.resume()
      res.on('end', () => resolve(res.statusCode ?? 0))
    })
    req.on('error', reject)
    req.end()
  })
}

describe('descriptors', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  const socks: net.Socket[] = []

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(
      ['--data-dir', tempDir('ferry-fds-'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--stream', 'FDS', '--subject-prefix', 'fds', '--presence', 'off',
        '--max-connections', '1000', '--connect-timeout-ms', '60000', '--log-segment-bytes', '64KiB', '--log-max-bytes', '1MiB', '--max-record-bytes', '16KiB'],
      20_000,
      {},
      OPEN_FILES,
    )
  })
  afterAll(async () => {
    for (const s of socks) s.destroy()
    await gw?.kill('SIGTERM')
    await nats?.[Symbol.asyncDispose]()
  })

  it('descriptors - start warns when --max-connections does not fit the open-files limit', () => {
    const line = gw.output().split('\n').find((l) => l.includes('does not fit the open-files limit'))
    expect(line).toBeDefined()
    expect(JSON.parse(line!)).toMatchObject({ level: 'warn', maxConnections: 1000, softLimit: OPEN_FILES, needed: 1000 + 32 + 64 })
  })

  it('descriptors - idle HTTP connections and silent MQTT sockets do not end the process; a device publishes again after they close', async () => {
    const pid = gw.child.pid!
    const device = await connectClient(gw.port, 'fd-dev')
    // Idle HTTP connections: the endpoint keeps at most --http-max-connections (32) of them.
    socks.push(...(await idleSockets(gw.httpPort, 250)))
    expect(openFds(pid)).toBeLessThan(OPEN_FILES)
    // MQTT sockets that never send CONNECT, more than the process may open.
    socks.push(...(await idleSockets(gw.port, 300)))
    expect(await until(() => openFds(pid) >= OPEN_FILES - 5, 10_000)).toBe(true)
    // While no descriptor is left, the device's publishes make the log roll segments (64 KiB): refused, never fatal.
    const payload = Buffer.alloc(1024, 'x')
    for (let i = 0; i < 200; i++) device.publish('fds/fd-dev/bulk', payload, { qos: 0 })
    expect(await until(() => /no file descriptors/.test(gw.output()), 10_000)).toBe(true)
    expect(gw.child.exitCode).toBeNull()
    for (const s of socks.splice(0)) s.destroy()
    expect(await until(() => openFds(pid) < OPEN_FILES / 2, 20_000)).toBe(true)
    expect(gw.child.exitCode).toBeNull()
    // A device connects and publishes (QoS 1, PUBACKed once stored), and it reaches JetStream. Within the log's retry
    // period (1 s) after the episode a publish is still refused (the device is disconnected, as on a full disk): the device
    // reconnects and publishes again, as a real one does.
    await endClient(device)
    const publishOnce = async (): Promise<boolean> => {
      const c = await connectClient(gw.port, 'fd-after')
      const closed = new Promise<false>((resolve) => c.once('close', () => resolve(false)))
      const ok = await Promise.race([c.publishAsync('fds/fd-after/t', 'hello', { qos: 1 }).then(() => true, () => false), closed])
      await endClient(c)
      return ok
    }
    expect(await until(publishOnce, 10_000)).toBe(true)
    const found = await until(async () => (await readStream(nats.url, 'FDS')).some((m) => m.subject === 'fds.up.fds.fd-after.t'), 20_000)
    expect(found).toBe(true)
    expect(await get(gw.httpPort, '/healthz', 'localhost')).toBe(200)
  })

  it('descriptors - the HTTP endpoint answers only its own Host names (421 otherwise)', async () => {
    expect(await get(gw.httpPort, '/devices', `127.0.0.1:${gw.httpPort}`)).toBe(200)
    expect(await get(gw.httpPort, '/devices', `localhost:${gw.httpPort}`)).toBe(200)
    expect(await get(gw.httpPort, '/devices', `[::1]:${gw.httpPort}`)).toBe(200)
    expect(await get(gw.httpPort, '/devices', `rebind.attacker.example:${gw.httpPort}`)).toBe(421)
    expect(await get(gw.httpPort, '/metrics', 'evil.example')).toBe(421)
  })
})
