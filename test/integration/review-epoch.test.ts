// Review of the fleet registry (issue 15): a device that connected to a gateway while that gateway could
// not see the bucket (its registry connection down), then moved to another gateway. Real processes: one
// nats-server, gateway A behind a TCP proxy (its NATS link can be cut alone), gateway B direct.
import fs from 'node:fs'
import path from 'node:path'
import { jetstream } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { deviceKey } from '../../src/fleet/index.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { closedWithin, connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { startProxy } from '../helpers/proxy.js'
import type { TcpProxy } from '../helpers/proxy.js'

const HEARTBEAT_MS = 300
const BUCKET = 'ferry_devices'

let nats: NatsServer
let proxy: TcpProxy
let dir: string
let nc: NatsConnection
const gateways: GatewayProcess[] = []
const clients: MqttClient[] = []
let a: GatewayProcess
let b: GatewayProcess

async function gateway(id: string, url: string): Promise<GatewayProcess> {
  const g = await spawnGateway(['--data-dir', path.join(dir, id), '--nats-url', url, '--mqtt-listen', '127.0.0.1:0', '--gateway-id', id, '--registry-heartbeat-ms', String(HEARTBEAT_MS)])
  gateways.push(g)
  return g
}

async function client(g: GatewayProcess, id: string): Promise<MqttClient> {
  const c = await connectClient(g.port, id, { protocolVersion: 5 })
  c.on('error', () => {})
  clients.push(c)
  return c
}

/** The gateway named by the entry under `key` now, undefined when absent or deleted. */
async function holderOf(key: string): Promise<string | undefined> {
  const kv = await new Kvm(jetstream(nc, { timeout: 5000 })).open(BUCKET, { bindOnly: true })
  const e = await kv.get(key)
  return e?.operation === 'PUT' ? e.json<{ gateway: string }>().gateway : undefined
}

async function waitFor(what: string, probe: () => Promise<boolean>, timeoutMs = 30_000): Promise<void> {
  const until = Date.now() + timeoutMs
  for (;;) {
    if (await probe().catch(() => false)) return
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 100))
  }
}

async function fleetStatus(g: GatewayProcess): Promise<{ connected: boolean; ready: boolean }> {
  const doc = (await (await fetch(`http://127.0.0.1:${g.httpPort}/status.json`)).json()) as { fleet: { connected: boolean; ready: boolean } }
  return doc.fleet
}

beforeAll(async () => {
  nats = await startNats()
  proxy = await startProxy(nats.port)
  dir = tempDir('ferry-review-epoch-')
  nc = await connect({ servers: nats.url })
  a = await gateway('gwA', proxy.url)
  b = await gateway('gwB', nats.url)
}, 60_000)

afterAll(async () => {
  for (const c of clients) await endClient(c)
  await Promise.all(gateways.map((g) => g.kill('SIGKILL')))
  await proxy?.close()
  await nc?.close()
  await nats?.[Symbol.asyncDispose]()
  if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
})

describe('review registry - connect during an outage', () => {
  it('review registry - a device that connected to A while A could not see the bucket, then moved to B, stays at B when A can write again', async () => {
    await waitFor('both gateways registered and ready', async () => (await holderOf('gateways.gwA')) === 'gwA' && (await holderOf('gateways.gwB')) === 'gwB' && (await fleetStatus(a)).ready && (await fleetStatus(b)).ready)

    // Only A's NATS link goes down (held: new connections get no answer either).
    proxy.blackhole()
    proxy.cut()
    await waitFor("A's registry to see its link down", async () => !(await fleetStatus(a)).connected)

    // The device connects to A during the outage (A accepts: its log buffers), then moves to B.
    const atA = await client(a, 'ep-mover')
    await new Promise((r) => setTimeout(r, 50))
    const atB = await client(b, 'ep-mover')
    await waitFor('B writing its entry', async () => (await holderOf(deviceKey('ep-mover'))) === 'gwB')
    expect(atA.connected).toBe(true)

    // A's link returns: A's session is the stale one; it must give way, and B's live session stay.
    proxy.heal()
    await waitFor("A's registry back", async () => (await fleetStatus(a)).ready)
    expect(await closedWithin(atA, 30_000)).toBe(true)
    await new Promise((r) => setTimeout(r, 3 * HEARTBEAT_MS + 1000))
    expect(atB.connected).toBe(true)
    expect(await holderOf(deviceKey('ep-mover'))).toBe('gwB')
    expect(a.output()).toMatch(/device taken over by another gateway; closing its session here.*"by":"gwB"/)
  }, 120_000)

  it('review registry - a device that moved from B to A while A could not see the bucket is claimed by A when its link returns; B drops the stale session', async () => {
    await waitFor('both gateways ready', async () => (await fleetStatus(a)).ready && (await fleetStatus(b)).ready)
    const atB = await client(b, 'ep-back')
    await waitFor('B writing its entry', async () => (await holderOf(deviceKey('ep-back'))) === 'gwB')

    proxy.blackhole()
    proxy.cut()
    await waitFor("A's registry to see its link down", async () => !(await fleetStatus(a)).connected)
    await new Promise((r) => setTimeout(r, 50))
    const atA = await client(a, 'ep-back')

    proxy.heal()
    await waitFor("A's registry back", async () => (await fleetStatus(a)).ready)
    await waitFor('A writing its entry', async () => (await holderOf(deviceKey('ep-back'))) === 'gwA')
    expect(await closedWithin(atB, 30_000)).toBe(true)
    await new Promise((r) => setTimeout(r, 3 * HEARTBEAT_MS + 1000))
    expect(atA.connected).toBe(true)
    expect(await holderOf(deviceKey('ep-back'))).toBe('gwA')
  }, 120_000)
})
