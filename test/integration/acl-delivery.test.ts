// Subscriptions and the ACL as Mosquitto does it (issue 13): a subscription is granted when a read
// rule matches its filter, and each message is checked against the subscriber's read and deny rules
// when it is delivered (live and retained), with the ACL in force at that moment (SIGHUP applies at
// once). Bundled gateway, real nats-server, mqtt.js and mosquitto_sub (a client we did not write).
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { until } from '../helpers/device.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { reapAtExit } from '../helpers/reap.js'

/** `ferry passwd FILE DEVICE` with the password on stdin. */
function passwd(file: string, device: string, password: string): Promise<number | null> {
  const child = spawn(process.execPath, ['dist/ferry.cjs', 'passwd', file, device], { stdio: ['pipe', 'ignore', 'ignore'] })
  child.stdin.end(`${password}\n`)
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)))
}

/** A connected mqtt.js client and the topics it received, in order. */
async function client(port: number, id: string, username: string): Promise<{ c: MqttClient; got: string[] }> {
  const got: string[] = []
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, clientId: id, username, password: `pw-${username}` })
  c.on('message', (topic) => got.push(topic))
  c.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve())
    c.once('close', () => reject(new Error(`${id} could not connect`)))
  })
  return { c, got }
}

/** The granted QoS of each filter (128 = refused); mqtt.js rejects when one is refused, with the SUBACK on the error. */
async function subscribe(c: MqttClient, filters: string[]): Promise<number[]> {
  try {
    return (await c.subscribeAsync(Object.fromEntries(filters.map((topic) => [topic, { qos: 1 as const }])))).map((g) => g.qos)
  } catch (err) {
    const granted = (err as { packet?: { granted?: number[] } }).packet?.granted
    if (!granted) throw err
    return granted
  }
}

/** mosquitto_sub with `-v -d`: its stdout lines ("topic payload") and debug lines, until stopped. */
function mosquittoSub(port: number, id: string, filters: string[]): { child: ChildProcess; out: () => string } {
  const args = ['-h', '127.0.0.1', '-p', String(port), '-i', id, '-u', 'ops', '-P', 'pw-ops', '-q', '1', '-v', '-d', ...filters.flatMap((f) => ['-t', f])]
  const child = reapAtExit(spawn('mosquitto_sub', args, { stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  child.stdout?.on('data', (d: Buffer) => (out += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (out += d.toString()))
  return { child, out: () => out }
}

/** Received PUBLISH topics in mosquitto_sub's `-v` output ("topic payload" lines). */
const subTopics = (out: string): string[] => out.split('\n').filter((l) => /^[a-z]+\/\S+ /.test(l)).map((l) => l.split(' ')[0]!)

const ACL = `user ops
topic read #
topic deny sensors/secret
user pub
topic write #
`
// After the reload: sensors/secret is readable again, sensors/b is not.
const ACL_RELOADED = `user ops
topic read #
topic deny sensors/b
user pub
topic write #
`

describe('ACL as Mosquitto does it: read everything except one topic', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let dir: string
  let aclFile: string

  beforeAll(async () => {
    nats = await startNats()
    dir = tempDir('ferry-acl-delivery-')
    const authFile = path.join(dir, 'devices.passwd')
    aclFile = path.join(dir, 'devices.acl')
    for (const d of ['ops', 'pub']) expect(await passwd(authFile, d, `pw-${d}`)).toBe(0)
    fs.writeFileSync(aclFile, ACL, { mode: 0o600 })
    gw = await spawnGateway(['--data-dir', path.join(dir, 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--auth-file', authFile, '--acl-file', aclFile])
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('acl - a wildcard subscriber gets everything but the denied topic, retained included; the denied exact filter gets SUBACK 0x80; SIGHUP applies to delivery at once', async () => {
    const pub = await client(gw.port, 'pub-1', 'pub')
    // Retained before anyone subscribes.
    await pub.c.publishAsync('sensors/secret', 'r-secret', { qos: 1, retain: true })
    await pub.c.publishAsync('sensors/a', 'r-a', { qos: 1, retain: true })

    const ops = await client(gw.port, 'ops-1', 'ops')
    expect(await subscribe(ops.c, ['#', 'sensors/secret'])).toEqual([1, 128])
    expect(ops.c.connected).toBe(true)
    const mosq = mosquittoSub(gw.port, 'ops-mosq', ['sensors/#', 'sensors/secret'])
    // mosquitto_sub's debug output shows the SUBACK: one granted (QoS 1) and one refused (128).
    expect(await until(() => /Subscribed \(mid: \d+\): 1, 128/.test(mosq.out()), 10_000)).toBe(true)

    for (const t of ['sensors/a', 'sensors/secret', 'sensors/b', 'other/x']) await pub.c.publishAsync(t, `live-${t}`, { qos: 1 })
    await pub.c.publishAsync('sensors/end', 'end', { qos: 1 }) // in order after the others: the sync point
    expect(await until(() => ops.got.includes('sensors/end') && subTopics(mosq.out()).includes('sensors/end'), 10_000)).toBe(true)
    // The retained sensors/a, then the live messages but sensors/secret (retained or live).
    expect([...ops.got].sort()).toEqual(['other/x', 'sensors/a', 'sensors/a', 'sensors/b', 'sensors/end'])
    expect(subTopics(mosq.out())).toEqual(['sensors/a', 'sensors/a', 'sensors/b', 'sensors/end'])
    expect(mosq.out()).not.toContain('secret ')

    // Reload: sensors/secret readable again, sensors/b denied; the existing subscriptions follow at once.
    fs.writeFileSync(aclFile, ACL_RELOADED, { mode: 0o600 })
    const reloads = gw.output().split('credentials and ACL reloaded').length
    gw.child.kill('SIGHUP')
    expect(await until(() => gw.output().split('credentials and ACL reloaded').length > reloads, 5000)).toBe(true)
    ops.got.length = 0
    const before = subTopics(mosq.out()).length
    for (const t of ['sensors/secret', 'sensors/b']) await pub.c.publishAsync(t, `after-${t}`, { qos: 1 })
    await pub.c.publishAsync('sensors/end', 'end', { qos: 1 })
    expect(await until(() => ops.got.includes('sensors/end') && subTopics(mosq.out()).slice(before).includes('sensors/end'), 10_000)).toBe(true)
    expect(ops.got).toEqual(['sensors/secret', 'sensors/end'])
    expect(subTopics(mosq.out()).slice(before)).toEqual(['sensors/secret', 'sensors/end'])

    // A new wildcard subscription now gets the retained sensors/secret, and not the retained-less b.
    const late = await client(gw.port, 'ops-2', 'ops')
    expect(await subscribe(late.c, ['sensors/+'])).toEqual([1])
    expect(await until(() => late.got.includes('sensors/secret') && late.got.includes('sensors/a'), 5000)).toBe(true)
    expect(late.got).not.toContain('sensors/b')

    mosq.child.kill('SIGTERM')
    for (const x of [pub, ops, late]) await endClient(x.c)
    expect(gw.child.exitCode).toBe(null)
  }, 40_000)
})
