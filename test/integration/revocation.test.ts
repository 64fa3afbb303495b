// Reload is revocation (issue 11, item 5): after SIGHUP, a session whose credentials are gone is
// disconnected, and deliveries (publishes of other clients, a persistent session's queue) are
// checked against the read rights in force now. Bundled gateway, real nats-server, mqtt.js.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import mqtt from 'mqtt'
import type { IClientOptions, MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { until } from '../helpers/device.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

/** `ferry passwd FILE DEVICE` with the password on stdin. */
function passwd(file: string, device: string, password: string): Promise<number | null> {
  const child = spawn(process.execPath, ['dist/ferry.cjs', 'passwd', file, device], { stdio: ['pipe', 'ignore', 'ignore'] })
  child.stdin.end(`${password}\n`)
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)))
}

function tryConnect(port: number, opts: IClientOptions): Promise<MqttClient | number> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  return new Promise((resolve) => {
    c.once('connect', () => resolve(c))
    c.once('close', () => resolve(-2))
    c.once('error', (err) => {
      c.end(true)
      const code = (err as { code?: unknown }).code
      resolve(typeof code === 'number' ? code : -1)
    })
  })
}

/** A connected client and the topics of the messages it received. */
async function device(port: number, id: string, password: string, clean = true, username = id): Promise<{ c: MqttClient; got: string[] }> {
  const got: string[] = []
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, clientId: id, username, password, clean })
  c.on('message', (topic) => got.push(topic))
  c.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve())
    c.once('close', () => reject(new Error(`${id} could not connect`)))
  })
  return { c, got }
}

const ACL_BEFORE = `user dev1
topic read news/#
user devA
topic read news/#
user pub
topic write news/#
user watch
topic read news/#
`
// dev1 loses its credentials and its read rule; devA keeps its credentials and loses its read rule.
const ACL_AFTER = `user pub
topic write news/#
user watch
topic read news/#
`

describe('reload is revocation', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let dir: string
  let authFile: string
  let aclFile: string

  beforeAll(async () => {
    nats = await startNats()
    dir = tempDir('ferry-revoke-')
    authFile = path.join(dir, 'devices.passwd')
    aclFile = path.join(dir, 'devices.acl')
    for (const d of ['dev1', 'devA', 'pub', 'watch']) expect(await passwd(authFile, d, `pw-${d}`)).toBe(0)
    fs.writeFileSync(aclFile, ACL_BEFORE)
    gw = await spawnGateway(['--data-dir', path.join(dir, 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--auth-file', authFile, '--acl-file', aclFile])
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('revocation - SIGHUP disconnects a device whose credentials are gone; others receive nothing their rights no longer allow', async () => {
    const dev1 = await device(gw.port, 'dev1', 'pw-dev1')
    const devA = await device(gw.port, 'devA', 'pw-devA')
    const watch = await device(gw.port, 'watch', 'pw-watch')
    const pub = await device(gw.port, 'pub', 'pw-pub')
    for (const d of [dev1, devA, watch]) await d.c.subscribeAsync('news/#', { qos: 1 })
    // devA also holds a persistent session, offline, with a message queued for it.
    const devAq = mqtt.connect(`mqtt://127.0.0.1:${gw.port}`, { reconnectPeriod: 0, clientId: 'devA-session', username: 'devA', password: 'pw-devA', clean: false })
    await new Promise<void>((resolve) => devAq.once('connect', () => resolve()))
    await devAq.subscribeAsync('news/#', { qos: 1 })
    await endClient(devAq)

    await pub.c.publishAsync('news/1', 'one', { qos: 1 })
    expect(await until(() => [dev1, devA, watch].every((d) => d.got.includes('news/1')), 5000)).toBe(true)
    await pub.c.publishAsync('news/queued', 'q', { qos: 1 })
    expect(await until(() => watch.got.includes('news/queued'), 5000)).toBe(true)

    // Remove dev1's credentials, and dev1's and devA's read rules.
    const lines = fs.readFileSync(authFile, 'utf8').split('\n').filter((l) => !l.startsWith('dev1:'))
    fs.writeFileSync(authFile, lines.join('\n'), { mode: 0o600 })
    fs.writeFileSync(aclFile, ACL_AFTER)
    const dev1Closed = new Promise<void>((resolve) => dev1.c.once('close', () => resolve()))
    const reloads = gw.output().split('credentials and ACL reloaded').length
    gw.child.kill('SIGHUP')
    expect(await until(() => gw.output().split('credentials and ACL reloaded').length > reloads, 5000)).toBe(true)
    await Promise.race([dev1Closed, new Promise((_, reject) => setTimeout(() => reject(new Error('dev1 still connected 3 s after the reload')), 3000))])
    expect(gw.output()).toContain('credentials revoked by reload')
    expect(await tryConnect(gw.port, { clientId: 'dev1', username: 'dev1', password: 'pw-dev1' })).toBe(4)

    // devA stays connected (its credentials stand) but receives nothing its rights no longer allow.
    expect(devA.c.connected).toBe(true)
    await pub.c.publishAsync('news/2', 'two', { qos: 1 })
    expect(await until(() => watch.got.includes('news/2'), 5000)).toBe(true)
    // Its persistent session's queue is checked too when it reconnects; 'news/3' after it is the sync point.
    const back = await device(gw.port, 'devA-session', 'pw-devA', false, 'devA')
    await pub.c.publishAsync('news/3', 'three', { qos: 1 })
    expect(await until(() => watch.got.includes('news/3'), 5000)).toBe(true)
    // A round trip through the gateway on each of devA's connections: everything sent before has arrived.
    await devA.c.subscribeAsync('never/matches', { qos: 1 }).catch(() => {})
    await back.c.subscribeAsync('never/matches', { qos: 1 }).catch(() => {})
    // (news/1 and news/queued came before the reload.)
    expect(devA.got).toEqual(['news/1', 'news/queued'])
    expect(dev1.got).toEqual(['news/1', 'news/queued'])
    // news/queued and news/2 waited in the persistent session's queue; news/3 came live.
    expect(back.got).toEqual([])
    expect(gw.child.exitCode).toBe(null)
    for (const d of [devA, back, watch, pub]) await endClient(d.c)
  }, 30_000)
})
