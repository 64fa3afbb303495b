// Listeners without descriptors: under a low `ulimit -n`, connections to the MQTT and MQTTS listeners
// beyond what the process may open neither end it nor make it spin; once descriptors free up, both
// listeners accept again and a device publishes over TLS.
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import mqtt from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeCertificates } from '../helpers/certs.js'
import { until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { freePort, startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

const OPEN_FILES = 200
const dir = tempDir('ferry-accept-emfile-')
const file = (n: string): string => path.join(dir, n)

/** Open descriptors of a process (Linux). */
const openFds = (pid: number): number => fs.readdirSync(`/proc/${pid}/fd`).length

/** Opens `n` TCP connections to `port` from `localAddress` that send nothing; resolves once each is connected or closed. */
async function silentSockets(port: number, n: number, localAddress = '127.0.0.1'): Promise<net.Socket[]> {
  const socks: net.Socket[] = []
  await Promise.all(
    Array.from({ length: n }, () => new Promise<void>((resolve) => {
      const s = net.connect({ port, host: '127.0.0.1', localAddress })
      s.on('error', () => resolve())
      s.on('close', () => resolve())
      s.on('connect', () => resolve())
      socks.push(s)
    })),
  )
  return socks
}

/** CPU time (user + system) of a process so far, in clock ticks (Linux). */
function cpuTicks(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')
  return Number(fields[11]) + Number(fields[12])
}

describe('listeners out of descriptors', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let tlsPort: number
  const socks: net.Socket[] = []

  beforeAll(async () => {
    makeCertificates(dir, ['dev-a'])
    nats = await startNats()
    tlsPort = await freePort()
    gw = await spawnGateway(
      ['--data-dir', file('data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--presence', 'off',
        '--mqtts-listen', `127.0.0.1:${tlsPort}`, '--tls-cert', file('server.pem'), '--tls-key', file('server.key'), '--tls-ca', file('ca.pem'), '--require-client-cert',
        '--max-connections', '1000', '--connect-timeout-ms', '60000'],
      20_000,
      {},
      OPEN_FILES,
    )
  }, 60_000)

  afterAll(async () => {
    for (const s of socks) s.destroy()
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('descriptors - connections beyond the open-files limit on both listeners: no exit, no busy loop; both accept again once descriptors free up', async () => {
    const pid = gw.child.pid!
    // Plain sockets take every descriptor; then more arrive on both listeners (the TLS ones from
    // several addresses, within the per-address handshake rate).
    socks.push(...(await silentSockets(gw.port, 250)))
    expect(await until(() => openFds(pid) >= OPEN_FILES - 5, 10_000)).toBe(true)
    const ticks0 = cpuTicks(pid)
    const t0 = performance.now()
    for (let i = 0; i < 5; i++) socks.push(...(await silentSockets(tlsPort, 15, `127.0.0.${50 + i}`)))
    socks.push(...(await silentSockets(gw.port, 100)))
    // A measurement window (not synchronisation): the gateway's CPU time over it against the wall
    // time. A listener re-reporting a connection it cannot accept would keep a core busy.
    await new Promise((r) => setTimeout(r, 1500))
    const cpuShare = ((cpuTicks(pid) - ticks0) * 10) / (performance.now() - t0) // 100 ticks per second
    console.log(`accept under EMFILE: gateway CPU ${(cpuShare * 100).toFixed(0)}% of one core over ${(performance.now() - t0).toFixed(0)} ms; paused: ${/out of file descriptors/.test(gw.output())}`)
    expect(cpuShare).toBeLessThan(0.5)
    expect(gw.child.exitCode).toBeNull()
    for (const s of socks.splice(0)) s.destroy()
    expect(await until(() => openFds(pid) < OPEN_FILES / 2, 20_000)).toBe(true)
    // Both listeners accept again (a paused one listens again after a second): a device publishes over TLS...
    const publishOnce = async (): Promise<boolean> => {
      const c = mqtt.connect(`mqtts://127.0.0.1:${tlsPort}`, {
        clientId: 'after', reconnectPeriod: 0, connectTimeout: 3000,
        ca: fs.readFileSync(file('ca.pem')), cert: fs.readFileSync(file('dev-a.pem')), key: fs.readFileSync(file('dev-a.key')),
      })
      const ok = await new Promise<boolean>((resolve) => {
        c.once('connect', () => void c.publishAsync('devices/dev-a/t', 'hello', { qos: 1 }).then(() => resolve(true), () => resolve(false)))
        c.once('error', () => resolve(false))
        c.once('close', () => resolve(false))
      })
      await endClient(c)
      return ok
    }
    expect(await until(publishOnce, 15_000)).toBe(true)
    // ...and the plain listener answers a CONNECT (CONNACK 5: plain devices need --auth-file here).
    const plain = await new Promise<string>((resolve) => {
      const c = mqtt.connect(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'plain', reconnectPeriod: 0, connectTimeout: 3000 })
      c.once('connect', () => (c.end(true), resolve('0')))
      c.once('error', (err) => (c.end(true), resolve(String((err as { code?: string | number }).code ?? err.message))))
    })
    expect(plain).toBe('5')
    if (/out of file descriptors/.test(gw.output())) expect(gw.output()).toMatch(/listener accepting again/)
    expect(gw.child.exitCode).toBeNull()
  })
})
