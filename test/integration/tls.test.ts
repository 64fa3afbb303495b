// TLS both ways: devices on the MQTTS listener identified by client certificates, and Ferry to a
// nats-server that requires TLS and a token (never logged, no fallback to plain text).
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import mqtt from 'mqtt'
import type { IClientOptions, MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { freePort, startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { streamCount, waitForCount } from '../helpers/stream.js'

const dir = tempDir('ferry-tls-')
const file = (n: string): string => path.join(dir, n)

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' })
}

/** A CA, a server certificate for 127.0.0.1 and client certificates for the given CNs. */
function makeCertificates(clients: string[]): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  openssl('req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', '/CN=ferry-test-ca')
  const sign = (name: string, subject: string, ext: string): void => {
    fs.writeFileSync(file(`${name}.ext`), ext)
    openssl('req', ...ec, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', subject)
    openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-out', file(`${name}.pem`), '-days', '2', '-extfile', file(`${name}.ext`))
  }
  sign('server', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n')
  for (const cn of clients) sign(cn, `/CN=${cn}`, 'extendedKeyUsage=clientAuth\n')
}

function tryConnect(url: string, opts: IClientOptions): Promise<MqttClient | string> {
  const c = mqtt.connect(url, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  return new Promise((resolve) => {
    c.once('connect', () => resolve(c))
    c.once('error', (err) => {
      c.end(true)
      resolve(String((err as { code?: string | number }).code ?? err.message))
    })
    c.once('close', () => resolve('closed'))
  })
}

describe('MQTTS with client certificates', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let url: string

  beforeAll(async () => {
    makeCertificates(['dev-a', 'dev-b'])
    fs.writeFileSync(file('devices.acl'), 'pattern write devices/%u/#\n')
    nats = await startNats()
    const port = await freePort()
    url = `mqtts://127.0.0.1:${port}`
    gw = await spawnGateway([
      '--data-dir', file('data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0',
      '--mqtts-listen', `127.0.0.1:${port}`, '--tls-cert', file('server.pem'), '--tls-key', file('server.key'), '--tls-ca', file('ca.pem'),
      '--require-client-cert', '--acl-file', file('devices.acl'), '--connect-timeout-ms', '1500',
      // These tests fail handshakes from 127.0.0.1 on purpose, which the per-address handshake rate
      // would soon answer by closing (tls-flood.test.ts tests that limit).
      '--max-tls-handshake-rate-per-address', '1000',
    ])
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  const tlsOpts = (cn?: string): IClientOptions => ({
    ca: fs.readFileSync(file('ca.pem')),
    ...(cn ? { cert: fs.readFileSync(file(`${cn}.pem`)), key: fs.readFileSync(file(`${cn}.key`)) } : {}),
  })

  it("tls - the certificate's CN is the identity: the ACL lets dev-a publish under devices/dev-a only", async () => {
    const c = await tryConnect(url, { clientId: 'tls-a', ...tlsOpts('dev-a') })
    if (typeof c === 'string') throw new Error(`refused: ${c}`)
    await c.publishAsync('devices/dev-a/telemetry', '{"t":1}', { qos: 1 })
    expect(await waitForCount(nats.url, 1, 10_000)).toBe(1)
    // Denied by the ACL: acknowledged and dropped, the client stays (--refused-publish ack, issue 13).
    await c.publishAsync('devices/dev-b/telemetry', '{"forged":1}', { qos: 1 })
    expect(c.connected).toBe(true)
    await endClient(c)
    await new Promise((r) => setTimeout(r, 300))
    expect(await streamCount(nats.url)).toBe(1)
  })

  it('tls - silent sockets on the TLS port are closed at the CONNECT timeout, failed handshakes at once', async () => {
    const port = Number(new URL(url).port)
    const sockets = await Promise.all(
      Array.from({ length: 5 }, async () => {
        const s = net.connect(port, '127.0.0.1')
        s.on('error', () => {})
        await new Promise((r) => s.once('connect', r))
        return s
      }),
    )
    const closed = await Promise.all(sockets.map((s) => new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 5000)
      s.once('close', () => (clearTimeout(t), resolve(true)))
    })))
    expect(closed).toEqual([true, true, true, true, true])
  }, 15_000)

  it('tls - no client certificate: the handshake fails; a username other than the CN is refused', async () => {
    expect(typeof (await tryConnect(url, { clientId: 'tls-none', ...tlsOpts() }))).toBe('string')
    expect(await tryConnect(url, { clientId: 'tls-b', username: 'dev-a', ...tlsOpts('dev-b') })).toBe('5')
    // The plain listener has no certificates: refused as well.
    const plainPort = Number(/"msg":"MQTT listening","address":"[^"]*:(\d+)"/.exec(gw.output())![1])
    expect(await tryConnect(`mqtt://127.0.0.1:${plainPort}`, { clientId: 'plain' })).toBe('5')
    expect(gw.output()).toContain('TLS handshake failed')
  })
})

describe('NATS over TLS with a token', () => {
  const TOKEN = 'tok-3f9c2e81d7'
  let nats: NatsServer

  beforeAll(async () => {
    if (!fs.existsSync(file('ca.pem'))) makeCertificates([])
    nats = await startNats(`tls { cert_file: "${file('server.pem')}", key_file: "${file('server.key')}" }\nauthorization { token: "${TOKEN}" }`)
  }, 30_000)

  afterAll(async () => {
    await nats?.stop()
  })

  const natsUrl = (): string => `tls://127.0.0.1:${nats.port}`

  async function streamCountTls(): Promise<number> {
    const { connect } = await import('@nats-io/transport-node')
    const { jetstreamManager } = await import('@nats-io/jetstream')
    const nc = await connect({ servers: natsUrl(), token: TOKEN, tls: { caFile: file('ca.pem') } })
    try {
      // Device data only (the stream also holds presence events).
      return Object.values((await (await jetstreamManager(nc)).streams.info('FERRY', { subjects_filter: 'ferry.up.>' })).state.subjects ?? {}).reduce((a, b) => a + b, 0)
    } catch {
      return 0
    } finally {
      await nc.close()
    }
  }

  it('upstream - forwards over TLS with the token; the token never appears in the output', async () => {
    const gw = await spawnGateway(['--data-dir', tempDir(), '--nats-url', natsUrl(), '--nats-token', TOKEN, '--nats-tls-ca', file('ca.pem'), '--mqtt-listen', '127.0.0.1:0'])
    try {
      const c = await tryConnect(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'up-1' })
      if (typeof c === 'string') throw new Error(c)
      for (let i = 0; i < 10; i++) await c.publishAsync('devices/up-1/t', `{"i":${i}}`, { qos: 1 })
      await endClient(c)
      let n = 0
      for (let i = 0; i < 100 && n < 10; i++, await new Promise((r) => setTimeout(r, 100))) n = await streamCountTls()
      expect(n).toBe(10)
      expect(gw.output()).toContain('"token":"<redacted>"')
      expect(gw.output()).not.toContain(TOKEN)
    } finally {
      await gw.kill('SIGTERM')
    }
  })

  it('upstream - a wrong token or no TLS CA: nothing forwarded, the data stays in the log, secrets stay out of the log', async () => {
    const gw = await spawnGateway(['--data-dir', tempDir(), '--nats-url', natsUrl(), '--nats-token', 'wrong-token-77', '--nats-tls-ca', file('ca.pem'), '--mqtt-listen', '127.0.0.1:0'])
    try {
      const c = await tryConnect(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'up-2' })
      if (typeof c === 'string') throw new Error(c)
      await c.publishAsync('devices/up-2/t', '{}', { qos: 1 })
      await endClient(c)
      await new Promise((r) => setTimeout(r, 1500))
      expect(gw.output()).toContain('NATS not reachable')
      expect(gw.output()).not.toContain('wrong-token-77')
    } finally {
      await gw.kill('SIGTERM')
    }
  })

  it('upstream - --nats-tls-ca against a server without TLS never falls back to plain text', async () => {
    const plain = await startNats()
    const gw = await spawnGateway(['--data-dir', tempDir(), '--nats-url', plain.url, '--nats-tls-ca', file('ca.pem'), '--mqtt-listen', '127.0.0.1:0'])
    try {
      const c = await tryConnect(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'up-3' })
      if (typeof c === 'string') throw new Error(c)
      await c.publishAsync('devices/up-3/t', '{}', { qos: 1 })
      await endClient(c)
      await new Promise((r) => setTimeout(r, 1500))
      expect(await streamCount(plain.url)).toBe(0)
      expect(gw.output()).toContain('NATS not reachable')
    } finally {
      await gw.kill('SIGTERM')
      await plain.stop()
    }
  })
})

describe('NATS credentials', () => {
  async function forwardsWith(natsConf: string, args: string[], connectOpts: Record<string, unknown>): Promise<{ stored: number; output: string }> {
    const nats = await startNats(natsConf)
    const gw = await spawnGateway(['--data-dir', tempDir(), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', ...args])
    try {
      const c = await tryConnect(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'cred-1' })
      if (typeof c === 'string') throw new Error(c)
      for (let i = 0; i < 5; i++) await c.publishAsync('devices/cred-1/t', `{"i":${i}}`, { qos: 1 })
      await endClient(c)
      const { connect } = await import('@nats-io/transport-node')
      const { jetstreamManager } = await import('@nats-io/jetstream')
      let stored = 0
      for (let i = 0; i < 100 && stored < 5; i++, await new Promise((r) => setTimeout(r, 100))) {
        const nc = await connect({ servers: nats.url, ...connectOpts })
        stored = await (await jetstreamManager(nc)).streams.info('FERRY', { subjects_filter: 'ferry.up.>' }).then((si) => Object.values(si.state.subjects ?? {}).reduce((a, b) => a + b, 0), () => 0)
        await nc.close()
      }
      return { stored, output: gw.output() }
    } finally {
      await gw.kill('SIGTERM')
      await nats.stop()
    }
  }

  it('upstream - user and password; the password is never logged', async () => {
    const r = await forwardsWith('authorization { user: ferry, password: "pw-81c2a9" }', ['--nats-user', 'ferry', '--nats-password', 'pw-81c2a9'], { user: 'ferry', pass: 'pw-81c2a9' })
    expect(r.stored).toBe(5)
    expect(r.output).not.toContain('pw-81c2a9')
  })

  it('upstream - an NKey seed file', async () => {
    const { nkeys, nkeyAuthenticator } = await import('@nats-io/transport-node')
    const user = nkeys.createUser()
    const seed = new TextDecoder().decode(user.getSeed())
    const seedFile = file('ferry.nk')
    fs.writeFileSync(seedFile, `${seed}\n`, { mode: 0o600 })
    const r = await forwardsWith(`authorization { users: [ { nkey: ${user.getPublicKey()} } ] }`, ['--nats-nkey-file', seedFile], { authenticator: nkeyAuthenticator(user.getSeed()) })
    expect(r.stored).toBe(5)
    expect(r.output).not.toContain(seed)
  })
})
