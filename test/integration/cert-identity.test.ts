// Certificate identity (issue 11, item 4): the CN, else one SAN entry of type DNS or URI parsed as a
// list, never a substring of the SAN string. Generated certificates, the bundled gateway, mqtt.js.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
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
import { readStream, waitForCount } from '../helpers/stream.js'

const dir = tempDir('ferry-certid-')
const file = (n: string): string => path.join(dir, n)

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' })
}

/** A CA, a server certificate for 127.0.0.1, and client certificates with the given subjects and extensions. */
function makeCertificates(clients: Record<string, { subject: string; ext: string }>): void {
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  openssl('req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', '/CN=ferry-test-ca')
  const sign = (name: string, subject: string, ext: string): void => {
    fs.writeFileSync(file(`${name}.ext`), ext)
    openssl('req', ...ec, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', subject)
    openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-out', file(`${name}.pem`), '-days', '2', '-extfile', file(`${name}.ext`))
  }
  sign('server', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1\nextendedKeyUsage=serverAuth\n')
  for (const [name, c] of Object.entries(clients)) sign(name, c.subject, `extendedKeyUsage=clientAuth\n${c.ext}`)
}

/** Connects; resolves with the client, or the CONNACK code / error as a string. */
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

async function connected(url: string, opts: IClientOptions): Promise<MqttClient> {
  const c = await tryConnect(url, opts)
  if (typeof c === 'string') throw new Error(`refused: ${c}`)
  return c
}

describe('certificate identity', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let url: string

  beforeAll(async () => {
    makeCertificates({
      dev1: { subject: '/CN=dev1', ext: '' },
      // No CN; "xDNS:dev1" is the value of an email entry, not a DNS entry.
      mallory: { subject: '/O=no-cn', ext: 'subjectAltName=email:xDNS:dev1,DNS:mallory\n' },
      // No CN; a DNS value holding ", DNS:dev1" (Node writes it quoted, the comma escaped).
      comma: { subject: '/O=no-cn', ext: 'subjectAltName=@alt\n[alt]\nDNS.1=a, DNS:dev1\nDNS.2=mallory\n' },
      uri: { subject: '/O=no-cn', ext: 'subjectAltName=email:dev1@x,URI:dev2\n' },
    })
    fs.writeFileSync(file('devices.acl'), 'pattern write devices/%u/#\npattern read commands/%u/#\n')
    nats = await startNats()
    const port = await freePort()
    url = `mqtts://127.0.0.1:${port}`
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

  const tlsOpts = (name: string): IClientOptions => ({
    ca: fs.readFileSync(file('ca.pem')),
    cert: fs.readFileSync(file(`${name}.pem`)),
    key: fs.readFileSync(file(`${name}.key`)),
  })

  it('certificate - SANs "email:xDNS:dev1, DNS:mallory" without a CN name mallory, never dev1', async () => {
    const dev1 = await connected(url, { clientId: 'dev1', clean: false, ...tlsOpts('dev1') })
    // Not dev1: a username "dev1" does not match its identity, and dev1's client id is not its to take.
    expect(await tryConnect(url, { clientId: 'm-1', username: 'dev1', ...tlsOpts('mallory') })).toBe('5')
    expect(await tryConnect(url, { clientId: 'dev1', ...tlsOpts('mallory') })).toBe('2')
    expect(dev1.connected).toBe(true)
    // Its identity is "mallory": the ACL grants it mallory's topics and nothing of dev1's.
    const m = await connected(url, { clientId: 'm-2', username: 'mallory', ...tlsOpts('mallory') })
    const granted = await m.subscribeAsync({ 'commands/dev1/#': { qos: 1 } }).then(
      (g) => g.map((x) => x.qos),
      (err: { packet?: { granted?: number[] } }) => err.packet?.granted,
    )
    expect(granted).toEqual([128])
    await m.publishAsync('devices/mallory/t', '{"ok":1}', { qos: 1 })
    expect(await waitForCount(nats.url, 1, 10_000)).toBe(1)
    // Denied by the ACL: acknowledged and dropped (--refused-publish ack, issue 13; it disconnected before).
    await m.publishAsync('devices/dev1/t', '{"forged":1}', { qos: 1 })
    await endClient(m)
    await endClient(dev1)
    const stored = await readStream(nats.url)
    expect(stored.map((s) => s.subject).filter((s) => s.includes('dev1'))).toEqual([])
  })

  it('certificate - a DNS value holding ", DNS:dev1" is one entry; the first DNS or URI entry is the identity', async () => {
    expect(await tryConnect(url, { clientId: 'c-1', username: 'dev1', ...tlsOpts('comma') })).toBe('5')
    expect(await tryConnect(url, { clientId: 'c-2', username: 'mallory', ...tlsOpts('comma') })).toBe('5')
    await endClient(await connected(url, { clientId: 'c-3', username: 'a, DNS:dev1', ...tlsOpts('comma') }))
    // An email entry is never an identity; the URI entry is.
    expect(await tryConnect(url, { clientId: 'u-1', username: 'dev1@x', ...tlsOpts('uri') })).toBe('5')
    await endClient(await connected(url, { clientId: 'u-2', username: 'dev2', ...tlsOpts('uri') }))
  })
})
