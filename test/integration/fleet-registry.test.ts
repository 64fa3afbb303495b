// Fleet registry end to end: one nats-server, gateways spawned from dist/ferry.cjs sharing one subject prefix
// with distinct --gateway-id: entries on connect and disconnect, cross-gateway takeover (MQTT 5 DISCONNECT 0x8E
// and 3.1.1 close, logged by both, in the events), a kill -9'd gateway's entries removed after 6 heartbeats,
// cleanup of an earlier run's leftovers, two gateways with one id, `ferry devices --fleet`, NATS down and back.
import fs from 'node:fs'
import path from 'node:path'
import { jetstream } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor } from '../../src/codec/index.js'
import { deviceKey } from '../../src/fleet/index.js'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { closedWithin, connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream } from '../helpers/stream.js'

const HEARTBEAT_MS = 300
const BUCKET = 'ferry_devices'

let nats: NatsServer
let dir: string
let nc: NatsConnection
const gateways: GatewayProcess[] = []
const clients: MqttClient[] = []
let a: GatewayProcess
let b: GatewayProcess

async function gateway(id: string, extra: string[] = [], dataDir = path.join(dir, `${id}-${gateways.length}`)): Promise<GatewayProcess> {
  const g = await spawnGateway(['--data-dir', dataDir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--gateway-id', id, '--registry-heartbeat-ms', String(HEARTBEAT_MS), ...extra])
  gateways.push(g)
  return g
}

async function client(g: GatewayProcess, id: string, version: 4 | 5 = 4): Promise<MqttClient> {
  const c = await connectClient(g.port, id, { protocolVersion: version })
  c.on('error', () => {})
  clients.push(c)
  return c
}

interface Entry {
  readonly revision: number
  readonly value: Record<string, unknown>
}

/** The entry under `key` now (a direct get: no consumer), undefined when absent or deleted. */
async function entryOf(key: string): Promise<Entry | undefined> {
  const kv = await new Kvm(jetstream(nc, { timeout: 5000 })).open(BUCKET, { bindOnly: true })
  const e = await kv.get(key)
  return e?.operation === 'PUT' ? { revision: e.revision, value: e.json<Record<string, unknown>>() } : undefined
}

async function waitFor<T>(what: string, probe: () => Promise<T | undefined>, timeoutMs = 20_000): Promise<T> {
  const until = Date.now() + timeoutMs
  let last: Error | undefined
  for (;;) {
    try {
      const v = await probe()
      if (v !== undefined) return v
    } catch (err) {
      last = err as Error
    }
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}${last ? `: ${last.message}` : ''}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** Waits until the registry shows `device` held by `gateway` (undefined: absent); returns the entry. */
async function holder(device: string, gateway: string | undefined): Promise<Entry | undefined> {
  let found: Entry | undefined
  await waitFor(`${device} at ${gateway ?? 'nowhere'}`, async () => {
    found = await entryOf(deviceKey(device))
    return (found?.value.gateway as string | undefined) === gateway ? true : undefined
  })
  return found
}

async function events(): Promise<Record<string, unknown>[]> {
  return (await readStream(nats.url, 'FERRY', 'events')).map((m) => decodeCbor(m.data) as Record<string, unknown>)
}

beforeAll(async () => {
  nats = await startNats()
  dir = tempDir('ferry-fleet-registry-')
  nc = await connect({ servers: nats.url })
  ;[a, b] = await Promise.all([gateway('gwA'), gateway('gwB')])
  // Both heartbeats are in the bucket: each sees the other live.
  await waitFor('both gateways registered', async () => ((await entryOf('gateways.gwA')) && (await entryOf('gateways.gwB')) ? true : undefined))
}, 60_000)

afterAll(async () => {
  for (const c of clients) await endClient(c)
  await Promise.all(gateways.map((g) => g.kill('SIGKILL')))
  await nc?.close()
  await nats?.[Symbol.asyncDispose]()
  if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
})

describe('fleet registry', () => {
  it('fleet registry - an entry per connected device (plain and encoded keys), removed on disconnect; ferry devices --fleet lists them', async () => {
    const d1 = await client(a, 'reg-d1')
    await client(b, 'reg d2/ü')
    const e1 = await holder('reg-d1', 'gwA')
    const e2 = await holder('reg d2/ü', 'gwB')
    expect(e1!.value).toMatchObject({ device: 'reg-d1', gateway: 'gwA', address: expect.any(String), clean: true })
    expect(typeof e1!.value.boot).toBe('string')
    expect(Math.abs((e1!.value.since as number) - Date.now())).toBeLessThan(60_000)
    expect(e2!.value.device).toBe('reg d2/ü')
    expect(await entryOf(`devices.=${Buffer.from('reg d2/ü').toString('base64url')}`)).toBeDefined()

    const text = await runFerry(['devices', '--fleet', '--nats-url', nats.url])
    expect(text.code).toBe(0)
    const lines = text.stdout.split('\n')
    expect(lines[0]).toMatch(/^DEVICE\s+GATEWAY\s+LIVE\s+SINCE\s+ADDRESS$/)
    expect(lines.find((l) => l.startsWith('reg-d1 '))).toMatch(/^reg-d1\s+gwA\s+yes\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+127\.0\.0\.1/)
    const json = await runFerry(['devices', '--fleet', '--json', '--nats-url', nats.url])
    const doc = JSON.parse(json.stdout) as { devices: { device: string; gateway: string; live: boolean }[]; gateways: { gateway: string; live: boolean }[] }
    expect(doc.devices).toContainEqual(expect.objectContaining({ device: 'reg d2/ü', gateway: 'gwB', live: true }))
    expect(doc.gateways.map((g) => g.gateway)).toEqual(expect.arrayContaining(['gwA', 'gwB']))

    await endClient(d1)
    await holder('reg-d1', undefined)
    // Unreachable NATS: a clear message, exit 1.
    const down = await runFerry(['devices', '--fleet', '--nats-url', 'nats://127.0.0.1:1'])
    expect(down.code).toBe(1)
    expect(down.stderr).toMatch(/cannot reach NATS at nats:\/\/127\.0\.0\.1:1/)
    const nobucket = await runFerry(['devices', '--fleet', '--nats-url', nats.url, '--registry-bucket', 'no_such_bucket'])
    expect(nobucket.code).toBe(1)
    expect(nobucket.stderr).toMatch(/cannot read the registry bucket no_such_bucket/)
  }, 60_000)

  it('fleet registry - takeover: a device connected at A that connects to B is closed at A (MQTT 5: DISCONNECT 0x8E; 3.1.1: closed), logged by both, in the events', async () => {
    const v5 = await client(a, 'take-v5', 5)
    await holder('take-v5', 'gwA')
    const reason = new Promise<number | undefined>((resolve) => v5.once('disconnect', (p) => resolve(p.reasonCode)))
    await client(b, 'take-v5', 5)
    expect(await reason).toBe(0x8e)
    await holder('take-v5', 'gwB')

    const v3 = await client(b, 'take-v3', 4)
    await holder('take-v3', 'gwB')
    await client(a, 'take-v3', 4)
    expect(await closedWithin(v3, 10_000)).toBe(true)
    await holder('take-v3', 'gwA')

    expect(a.output()).toMatch(/"msg":"device taken over by another gateway; closing its session here","clientId":"take-v5","by":"gwB"/)
    expect(b.output()).toMatch(/"msg":"device taken over from another gateway","clientId":"take-v5","from":"gwA"/)
    expect(b.output()).toMatch(/"msg":"device taken over by another gateway; closing its session here","clientId":"take-v3","by":"gwA"/)
    expect(a.output()).toMatch(/"msg":"device taken over from another gateway","clientId":"take-v3","from":"gwB"/)

    const evs = await waitFor('the takeover events', async () => {
      const all = await events()
      const n = all.filter((e) => (e.device === 'take-v5' || e.device === 'take-v3') && (e.takenOverBy !== undefined || e.takenOverFrom !== undefined)).length
      return n >= 4 ? all : undefined
    })
    expect(evs).toContainEqual(expect.objectContaining({ device: 'take-v5', event: 'disconnected', gateway: 'gwA', reason: 'takeover', reasonCode: 0x8e, takenOverBy: 'gwB' }))
    expect(evs).toContainEqual(expect.objectContaining({ device: 'take-v5', event: 'connected', gateway: 'gwB', takenOverFrom: 'gwA' }))
    expect(evs).toContainEqual(expect.objectContaining({ device: 'take-v3', event: 'disconnected', gateway: 'gwB', reason: 'takeover', takenOverBy: 'gwA' }))
    expect(evs).toContainEqual(expect.objectContaining({ device: 'take-v3', event: 'connected', gateway: 'gwA', takenOverFrom: 'gwB' }))
    // Every device event names its gateway.
    expect(evs.every((e) => e.gateway === 'gwA' || e.gateway === 'gwB')).toBe(true)
    const metrics = await (await fetch(`http://127.0.0.1:${a.httpPort}/metrics`)).text()
    expect(metrics).toMatch(/ferry_fleet_takeovers_total\{direction="out"\} [1-9]/)
    expect(metrics).toMatch(/ferry_fleet_takeovers_total\{direction="in"\} [1-9]/)
    const status = (await (await fetch(`http://127.0.0.1:${a.httpPort}/status.json`)).json()) as { fleet: { enabled: boolean; gateways: string[] } }
    expect(status.fleet).toMatchObject({ enabled: true, gateways: expect.arrayContaining(['gwA', 'gwB']) })
  }, 60_000)

  it('fleet registry - a device flapping A → B → A ends connected at A with A\'s entry', async () => {
    const first = await client(a, 'flap')
    await holder('flap', 'gwA')
    const atB = await client(b, 'flap')
    expect(await closedWithin(first, 10_000)).toBe(true)
    await holder('flap', 'gwB')
    const back = await client(a, 'flap')
    expect(await closedWithin(atB, 10_000)).toBe(true)
    await holder('flap', 'gwA')
    // Settled: the entry stays A's and A's connection stays open.
    await new Promise((r) => setTimeout(r, 3 * HEARTBEAT_MS))
    expect((await entryOf(deviceKey('flap')))?.value.gateway).toBe('gwA')
    expect(back.connected).toBe(true)
  }, 60_000)

  it('fleet registry - a fast flap A → B → A (no waiting between connects) still ends at A with A\'s entry', async () => {
    for (let round = 0; round < 3; round++) {
      const id = `fastflap-${round}`
      const first = await client(a, id)
      const atB = await client(b, id)
      const back = await client(a, id)
      await holder(id, 'gwA')
      expect(await closedWithin(atB, 10_000)).toBe(true)
      expect(await closedWithin(first, 10_000)).toBe(true)
      await new Promise((r) => setTimeout(r, 3 * HEARTBEAT_MS))
      expect((await entryOf(deviceKey(id)))?.value.gateway).toBe('gwA')
      expect(back.connected).toBe(true)
    }
  }, 60_000)

  it('fleet registry - kill -9 a gateway: the lowest live gateway removes its entries once it was silent for 6 heartbeats', async () => {
    const c = await gateway('gwC')
    await client(c, 'dead-1')
    await client(c, 'dead-2')
    await holder('dead-1', 'gwC')
    await holder('dead-2', 'gwC')
    const killedAt = Date.now()
    await c.kill('SIGKILL')
    await holder('dead-1', undefined)
    await holder('dead-2', undefined)
    await waitFor('gateways.gwC removed', async () => ((await entryOf('gateways.gwC')) ? undefined : true))
    // Not before 6 heartbeats of silence (its last renewal was at most one heartbeat before the kill).
    expect(Date.now() - killedAt).toBeGreaterThanOrEqual(5 * HEARTBEAT_MS)
    expect(a.output()).toMatch(/"msg":"registry: removed the entries of a dead gateway","gateway":"gwC","devices":2/)
    const metrics = await (await fetch(`http://127.0.0.1:${a.httpPort}/metrics`)).text()
    expect(metrics).toMatch(/ferry_fleet_stale_entries_removed_total [1-9]/)
  }, 60_000)

  it('fleet registry - a gateway restarted after kill -9 removes the entries its earlier run left', async () => {
    // A long heartbeat: nobody would sweep it within the test; only its own restart can clean up.
    const data = path.join(dir, 'gwD-data')
    const d = await gateway('gwD', ['--registry-heartbeat-ms', '60000'], data)
    await client(d, 'left-1')
    const before = await holder('left-1', 'gwD')
    await d.kill('SIGKILL')
    await gateway('gwD', ['--registry-heartbeat-ms', '60000'], data)
    await holder('left-1', undefined)
    const g = await entryOf('gateways.gwD')
    expect(g?.value.boot).not.toBe(before!.value.boot)
  }, 60_000)

  it('fleet registry - NATS down then back: the registry converges to the devices connected meanwhile', async () => {
    const n1 = await client(a, 'out-1')
    await client(a, 'out-2')
    await holder('out-1', 'gwA')
    await holder('out-2', 'gwA')
    await nats.stop()
    await endClient(n1)
    await client(a, 'out-3')
    // Ingress is not slowed by the registry: a publish is acknowledged while NATS is down.
    const p = await client(a, 'out-pub')
    await p.publishAsync('t/out', 'x', { qos: 1 })
    await nats.start()
    await holder('out-1', undefined)
    await holder('out-2', 'gwA')
    await holder('out-3', 'gwA')
    await holder('out-pub', 'gwA')
  }, 60_000)

  it('fleet registry - --fleet-registry off: no entries, no heartbeat, /status.json says so', async () => {
    const off = await gateway('gwOff', ['--fleet-registry', 'off'])
    await client(off, 'off-1')
    // A device connected to A afterwards is registered: by then gwOff would have written too.
    await client(a, 'off-probe')
    await holder('off-probe', 'gwA')
    expect(await entryOf(deviceKey('off-1'))).toBeUndefined()
    expect(await entryOf('gateways.gwOff')).toBeUndefined()
    const status = (await (await fetch(`http://127.0.0.1:${off.httpPort}/status.json`)).json()) as { fleet: unknown }
    expect(status.fleet).toEqual({ enabled: false })
    await off.kill('SIGKILL')
  }, 60_000)

  it('fleet registry - two gateways with one --gateway-id: both log an error and count it', async () => {
    const dup = await gateway('gwA')
    await waitFor('the conflict logged by both', async () => (/another running gateway uses this --gateway-id/.test(a.output()) && /another running gateway uses this --gateway-id/.test(dup.output()) ? true : undefined))
    const metrics = await (await fetch(`http://127.0.0.1:${a.httpPort}/metrics`)).text()
    expect(metrics).toMatch(/ferry_fleet_gateway_id_conflicts_total [1-9]/)
    await dup.kill('SIGKILL')
  }, 60_000)
})
