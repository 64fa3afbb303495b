// TLS handshakes are a limited resource: a flood of handshakes without client certificates from ten
// loopback sources (each under the per-address connection rate) leaves an honest MQTTS device its
// PUBACK latency; handshakes in progress and per address are capped; only AEAD suites are offered.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import tls from 'node:tls'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { makeCertificates } from '../helpers/certs.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { freePort, startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { reapAtExit } from '../helpers/reap.js'

const dir = tempDir('ferry-tls-flood-')
const file = (n: string): string => path.join(dir, n)

/**
 * The flood, in its own process so it does not share the test's event loop. It records one real
 * ClientHello (TLS 1.3, no certificate) and replays it: the gateway does the expensive half of each
 * handshake (key exchange and signature) while the flooder does none. Every 20 ms each source
 * starts `perTick` connections (at most 100 open per source), which close once the server answers,
 * for `ms` milliseconds. Prints a JSON summary: connections started, answered by a ServerHello,
 * closed before any answer (refused).
 */
const FLOODER = `
const net = require('node:net')
const tls = require('node:tls')
const [port, ms, perTick, sources] = process.argv.slice(1).map(Number)
const recorder = net.createServer((s) => s.once('data', (hello) => { s.destroy(); recorder.close(); run(hello) }))
recorder.listen(0, '127.0.0.1', () => tls.connect({ host: '127.0.0.1', port: recorder.address().port, rejectUnauthorized: false }).on('error', () => {}))
function run(hello) {
  let started = 0, answered = 0, refused = 0
  const open = new Map()
  const one = (src) => {
    if ((open.get(src) ?? 0) >= 100) return
    open.set(src, (open.get(src) ?? 0) + 1)
    started++
    let got = false
    const s = net.connect({ host: '127.0.0.1', port, localAddress: '127.0.0.' + src }, () => s.write(hello))
    s.on('data', () => { if (!got) { got = true; answered++ } s.destroy() })
    s.on('error', () => {})
    s.on('close', () => { if (!got) refused++; open.set(src, open.get(src) - 1) })
  }
  const timer = setInterval(() => { for (let k = 0; k < perTick; k++) for (let i = 0; i < sources; i++) one(2 + i) }, 20)
  setTimeout(() => { clearInterval(timer); console.log(JSON.stringify({ started, answered, refused })); process.exit(0) }, ms)
}
`

/** Runs the flooder for `ms`; resolves with its summary. */
function flood(port: number, ms: number, perTick: number, sources: number): Promise<{ started: number; answered: number; refused: number }> {
  const child = reapAtExit(spawn(process.execPath, ['-e', FLOODER, String(port), String(ms), String(perTick), String(sources)], { stdio: ['ignore', 'pipe', 'inherit'] }))
  let out = ''
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  return new Promise((resolve, reject) => child.once('exit', (code) => (code === 0 ? resolve(JSON.parse(out) as { started: number; answered: number; refused: number }) : reject(new Error(`flooder exited with ${code}`)))))
}

async function metric(g: GatewayProcess, name: string, label: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.httpPort}/metrics`)).text()
  const m = new RegExp(`^${name}\\{[^}]*${label}[^}]*\\} (\\S+)$`, 'm').exec(text)
  return m ? Number(m[1]) : 0
}

/** CPU time (user + system) of a process so far, in clock ticks (Linux). */
function cpuTicks(pid: number): number {
  const fields = fs.readFileSync(`/proc/${pid}/stat`, 'utf8').replace(/^.*\) /, '').split(' ')
  return Number(fields[11]) + Number(fields[12])
}

const p99 = (xs: number[]): number => [...xs].sort((a, b) => a - b)[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))]!

describe('MQTTS handshake limits', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let port: number

  const device = async (clientId: string, cn: string): Promise<MqttClient> => {
    const c = mqtt.connect(`mqtts://127.0.0.1:${port}`, {
      clientId, reconnectPeriod: 0, connectTimeout: 5000,
      ca: fs.readFileSync(file('ca.pem')), cert: fs.readFileSync(file(`${cn}.pem`)), key: fs.readFileSync(file(`${cn}.key`)),
    })
    await new Promise<void>((resolve, reject) => {
      c.once('connect', () => resolve())
      c.once('error', (err) => (c.end(true), reject(err)))
      c.once('close', () => reject(new Error('closed before CONNACK')))
    })
    return c
  }

  beforeAll(async () => {
    // RSA-2048 server key: each handshake signs with it, the expensive case.
    makeCertificates(dir, ['dev-a'], 'rsa')
    fs.writeFileSync(file('devices.acl'), 'pattern write devices/%u/#\n')
    nats = await startNats()
    port = await freePort()
    // Default limits only, so the same arguments run an older bundle for a before/after figure.
    gw = await spawnGateway([
      '--data-dir', file('data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0',
      '--mqtts-listen', `127.0.0.1:${port}`, '--tls-cert', file('server.pem'), '--tls-key', file('server.key'), '--tls-ca', file('ca.pem'),
      '--require-client-cert', '--acl-file', file('devices.acl'),
    ])
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('tls - a handshake flood from 10 sources without certificates leaves an honest device its PUBACK latency', async () => {
    const canary = await device('canary', 'dev-a')
    const measure = async (ms: number, during?: () => Promise<unknown>): Promise<number[]> => {
      const lat: number[] = []
      const pending: Promise<void>[] = []
      const timer = setInterval(() => {
        const t0 = performance.now()
        pending.push(canary.publishAsync('devices/dev-a/canary', '{"c":1}', { qos: 1 }).then(() => void lat.push(performance.now() - t0)))
      }, 20)
      await Promise.all([new Promise((r) => setTimeout(r, ms)), during?.()])
      clearInterval(timer)
      await Promise.all(pending)
      return lat
    }
    await measure(500) // warm-up
    const quiet = await measure(2500)
    // 10 sources × 3 connections per 20 ms = 150/s each: under the per-address connection rate (200/s).
    let summary = { started: 0, answered: 0, refused: 0 }
    const ticks0 = cpuTicks(gw.child.pid!)
    const t0 = performance.now()
    const flooded = await measure(3000, async () => (summary = await flood(port, 3000, 3, 10)))
    const cpuShare = ((cpuTicks(gw.child.pid!) - ticks0) * 10) / (performance.now() - t0) // 100 ticks per second
    const refused = (await metric(gw, 'ferry_mqtt_limit_refusals_total', 'limit="tls_handshake_rate"')) + (await metric(gw, 'ferry_mqtt_limit_refusals_total', 'limit="tls_handshakes"'))
    console.log(`tls flood: canary PUBACK p99 ${p99(quiet).toFixed(1)} ms quiet, ${p99(flooded).toFixed(1)} ms during the flood (${flooded.length} publishes), gateway CPU ${(cpuShare * 100).toFixed(0)}% of a core; flood ${JSON.stringify(summary)}, ${refused} refused by the handshake limits`)
    expect(canary.connected).toBe(true)
    expect(gw.child.exitCode).toBeNull()
    expect(refused).toBeGreaterThan(0)
    // Loose and relative: the flood may cost something, never an order of magnitude.
    expect(p99(flooded)).toBeLessThan(5 * p99(quiet) + 20)
    await endClient(canary)
  }, 60_000)

  it('tls - handshakes in progress are capped: beyond the cap the oldest silent sockets are closed, and a device still connects while the rest stay', async () => {
    // 10 sources × 8 silent sockets: within each address's handshake rate (evictions count as failures
    // against it, so with room to spare), above the 64 in progress.
    const sockets: net.Socket[] = []
    const closed: boolean[] = []
    for (let i = 0; i < 80; i++) {
      const s = net.connect({ port, host: '127.0.0.1', localAddress: `127.0.0.${30 + (i % 10)}` })
      closed.push(false)
      s.on('error', () => {})
      s.once('close', () => (closed[i] = true))
      await new Promise((r) => s.once('connect', r))
      sockets.push(s)
    }
    // The 16 oldest are closed (eviction happens as each newer one arrives).
    const evicted = await new Promise<boolean>((resolve) => {
      const deadline = Date.now() + 5000
      const poll = (): void => {
        if (closed.slice(0, 16).every(Boolean)) return resolve(true)
        if (Date.now() > deadline) return resolve(false)
        setTimeout(poll, 20)
      }
      poll()
    })
    expect(evicted).toBe(true)
    expect(await metric(gw, 'ferry_mqtt_limit_refusals_total', 'limit="tls_handshakes"')).toBeGreaterThanOrEqual(16)
    // An honest device's handshake takes the place of the oldest silent one and completes.
    const c = await device('during-cap', 'dev-a')
    expect(c.connected).toBe(true)
    await endClient(c)
    expect(closed.slice(16).filter((x) => !x).length).toBeGreaterThanOrEqual(60)
    for (const s of sockets) s.destroy()
  })

  it('tls - only TLS 1.3 and TLS 1.2 ECDHE AEAD suites are offered', async () => {
    const handshake = (opts: tls.ConnectionOptions): Promise<string> => new Promise((resolve) => {
      const s = tls.connect({ host: '127.0.0.1', port, ca: fs.readFileSync(file('ca.pem')), cert: fs.readFileSync(file('dev-a.pem')), key: fs.readFileSync(file('dev-a.key')), ...opts })
      s.once('secureConnect', () => (resolve(`${s.getProtocol()} ${s.getCipher().name}`), s.destroy()))
      s.once('error', () => (resolve('refused'), s.destroy()))
    })
    expect(await handshake({})).toMatch(/^TLSv1\.3 TLS_/)
    expect(await handshake({ maxVersion: 'TLSv1.2' })).toMatch(/^TLSv1\.2 ECDHE-RSA-(AES\d+-GCM|CHACHA20-POLY1305)/)
    for (const cipher of ['ECDHE-RSA-AES128-SHA256', 'ECDHE-RSA-AES256-SHA', 'AES128-GCM-SHA256']) {
      expect(await handshake({ maxVersion: 'TLSv1.2', ciphers: cipher }), cipher).toBe('refused')
    }
  })
})
