// Review of the fleet registry (issue 15), in process against a real nats-server: the registry is given a
// stand-in for ingress's Devices (it only listens to online/offline and calls takeOver) and plain counters
// for its metrics, so that its writes, its memory and its sweeps can be observed directly.
import { spawn } from 'node:child_process'
import { EventEmitter } from 'node:events'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { Kvm } from '@nats-io/kv'
import type { Bucket, KV } from '@nats-io/kv'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { FleetRegistry } from '../../src/fleet/index.js'
import type { FleetMetrics } from '../../src/fleet/index.js'
import type { DeviceInfo, Devices } from '../../src/ingress/index.js'
import { createLogger, silentLogger } from '../../src/logger.js'
import { runFerry } from '../helpers/gateway.js'
import { startNats } from '../helpers/nats.js'
import { startProxy } from '../helpers/proxy.js'
import type { NatsServer } from '../helpers/nats.js'

let nats: NatsServer
let nc: NatsConnection
const registries: FleetRegistry[] = []

class StandInDevices extends EventEmitter {
  readonly takenOver: [string, string][] = []
  takeOver(clientId: string, by: string): boolean {
    this.takenOver.push([clientId, by])
    return true
  }
}

interface Counts {
  readonly updates: Map<string, number>
  removed: number
}

function metrics(): { m: FleetMetrics; c: Counts } {
  const c: Counts = { updates: new Map(), removed: 0 }
  const m: FleetMetrics = {
    fleetTakeovers: { inc: () => {} },
    fleetRegistryUpdates: { inc: (n, l) => c.updates.set(`${l.op}:${l.result}`, (c.updates.get(`${l.op}:${l.result}`) ?? 0) + n) },
    fleetStaleRemoved: { inc: (n = 1) => void (c.removed += n) },
    fleetGateways: { collect: () => {} },
    fleetIdConflicts: { inc: () => {} },
  }
  return { m, c }
}

function registry(bucket: string, gatewayId: string, heartbeatMs: number, url = nats.url): { reg: FleetRegistry; devices: StandInDevices; c: Counts } {
  const devices = new StandInDevices()
  const { m, c } = metrics()
  const reg = new FleetRegistry({ servers: [url], connectOptions: {}, bucket, replicas: 1, gatewayId, heartbeatMs, version: 'review', devices: devices as unknown as Devices, logger: silentLogger, metrics: m })
  registries.push(reg)
  return { reg, devices, c }
}

function device(clientId: string): DeviceInfo {
  return { clientId, address: '127.0.0.1:1', connectedAt: Date.now(), clean: true, messagesIn: 0, messagesOut: 0 }
}

async function bucket(name: string, opts: Record<string, unknown> = {}): Promise<KV> {
  return new Kvm(jetstream(nc, { timeout: 5000 })).create(name, { history: 1, ...opts })
}

async function waitFor(what: string, probe: () => boolean | Promise<boolean>, timeoutMs = 20_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (!(await probe())) {
    if (Date.now() > until) throw new Error(`timed out waiting for ${what}`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

beforeAll(async () => {
  nats = await startNats()
  nc = await connect({ servers: nats.url })
}, 30_000)

afterAll(async () => {
  for (const r of registries) await r.close(Date.now() + 2000)
  await nc?.close()
  await nats?.[Symbol.asyncDispose]()
})

describe('review registry', () => {
  it('review registry - a write that keeps failing is retried about once a second, not in a busy loop', async () => {
    // The bucket refuses values over 200 bytes: the heartbeat fits, a device with a long id does not.
    await bucket('rv_retry', { maxValueSize: 200 })
    const { reg, devices, c } = registry('rv_retry', 'gwA', 1000)
    await waitFor('the registry ready', () => reg.status.ready)
    for (let i = 0; i < 5; i++) devices.emit('online', device(`${'x'.repeat(180)}-${i}`))
    await waitFor('the first failures', () => (c.updates.get('put:error') ?? 0) >= 5)
    const start = c.updates.get('put:error') ?? 0
    await new Promise((r) => setTimeout(r, 3000))
    const failed = (c.updates.get('put:error') ?? 0) - start
    // 5 devices, one retry a second for 3 s (and a margin): not thousands.
    expect(failed).toBeLessThanOrEqual(5 * 6)
  }, 30_000)

  it('review registry - a client id that left is not kept in memory (no delete marker per id ever seen)', async () => {
    const kv = await bucket('rv_memory')
    const value = (id: string): string => JSON.stringify({ device: id, gateway: 'gwX', boot: 'b0', since: Date.now(), address: '10.0.0.1:1', clean: true })
    // 1,000 devices came and went before the registry starts (replayed), 1,000 while it runs (updates).
    for (let i = 0; i < 1000; i++) {
      await kv.put(`devices.old-${i}`, value(`old-${i}`))
      await kv.delete(`devices.old-${i}`)
    }
    const { reg } = registry('rv_memory', 'gwA', 1000)
    await waitFor('the registry ready', () => reg.status.ready)
    for (let i = 0; i < 1000; i++) {
      await kv.put(`devices.new-${i}`, value(`new-${i}`))
      await kv.delete(`devices.new-${i}`)
    }
    await kv.put('devices.here', value('here'))
    await waitFor('the last entry seen', () => reg.status.devices === 1)
    const held = (reg as unknown as { deviceSeen: Map<string, unknown> }).deviceSeen.size
    expect(held).toBeLessThanOrEqual(10)
  }, 60_000)

  it('review registry - a sweep stops removing a gateway\'s entries once its heartbeat is back', async () => {
    const kv = await bucket('rv_sweep')
    const N = 1500
    const hb = (): Promise<number> => kv.put('gateways.gwB', JSON.stringify({ gateway: 'gwB', boot: 'bB', startedAt: Date.now(), heartbeatMs: 100, version: 'x' }))
    await hb()
    for (let i = 0; i < N; i++) await kv.put(`devices.b-${i}`, JSON.stringify({ device: `b-${i}`, gateway: 'gwB', boot: 'bB', since: Date.now(), address: '10.0.0.2:1', clean: true }))
    // gwA (the lowest id: the sweeper) starts; gwB stays silent until the sweep has begun.
    const { reg, c } = registry('rv_sweep', 'gwA', 200)
    await waitFor('the registry ready', () => reg.status.ready)
    await waitFor('the sweep of gwB begun', () => c.removed > 0, 30_000)
    await hb()
    const timer = setInterval(() => void hb().catch(() => {}), 50)
    try {
      // gwB is live again: the sweep stops; let it settle.
      let last = -1
      await waitFor('the sweep settled', async () => {
        const now = c.removed
        const settled = now === last
        last = now
        if (!settled) await new Promise((r) => setTimeout(r, 1000))
        return settled
      }, 30_000)
      const left = (await kv.keys('devices.>')) as AsyncIterable<string>
      let n = 0
      for await (const _ of left) n++
      expect(n).toBeGreaterThan(0)
      expect(c.removed).toBeLessThan(N)
    } finally {
      clearInterval(timer)
    }
  }, 60_000)

  it('review registry - a stall of this process (its watcher behind) does not make a live gateway look dead to the sweep', async () => {
    const kv = await bucket('rv_stall')
    const N = 200
    for (let i = 0; i < N; i++) await kv.put(`devices.s-${i}`, JSON.stringify({ device: `s-${i}`, gateway: 'gwB', boot: 'bB', since: Date.now(), address: '10.0.0.3:1', clean: true }))
    // gwB, live in another process: its heartbeat (every 50 ms, heartbeatMs 100) goes on while this process stalls.
    const script = `
      import { connect } from '@nats-io/transport-node'
      import { jetstream, jetstreamManager } from '@nats-io/jetstream'
      import { Kvm } from '@nats-io/kv'
      const nc = await connect({ servers: ${JSON.stringify(nats.url)} })
      const kv = await new Kvm(jetstream(nc)).open('rv_stall')
      const v = JSON.stringify({ gateway: 'gwB', boot: 'bB', startedAt: Date.now(), heartbeatMs: 100, version: 'x' })
      setInterval(() => void kv.put('gateways.gwB', v).catch(() => {}), 50)
      setTimeout(() => process.exit(0), 30000)
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: process.cwd(), stdio: 'ignore' })
    try {
      await waitFor('gwB heartbeating', async () => (await kv.get('gateways.gwB'))?.operation === 'PUT')
      const { reg, c } = registry('rv_stall', 'gwA', 1000)
      await waitFor('gwA sees gwB live', () => reg.status.ready && reg.status.gateways.includes('gwB'))
      // Our own heartbeat has come back through the watcher a few times: the sweep runs on this view.
      await new Promise((r) => setTimeout(r, 2500))
      // A stall (GC, CPU): the watcher's messages wait in the socket, and the next turn of the event loop
      // runs the expired heartbeat timer (timers phase) before it reads them (poll phase).
      await new Promise<void>((resolve) =>
        setImmediate(() => {
          const until = Date.now() + 1500
          while (Date.now() < until) {
            /* busy */
          }
          resolve()
        }),
      )
      await new Promise((r) => setTimeout(r, 3000))
      expect(c.removed).toBe(0)
      let n = 0
      for await (const _ of await kv.keys('devices.>')) n++
      expect(n).toBe(N)
    } finally {
      child.kill('SIGKILL')
    }
  }, 60_000)

  it('review registry - a device that leaves while its entry is being rewritten (after a resync) leaves no entry behind', async () => {
    const kv = await bucket('rv_phantom')
    await using proxy = await startProxy(nats.port)
    const { reg, devices } = registry('rv_phantom', 'gwA', 1000, proxy.url)
    await waitFor('the registry ready', () => reg.status.ready)
    const N = 40
    const infos = Array.from({ length: N }, (_, i) => device(`ph-${i}`))
    for (const d of infos) devices.emit('online', d)
    await waitFor('every entry written', async () => (await Promise.all(infos.map((d) => kv.get(`devices.${d.clientId}`)))).every((e) => e?.operation === 'PUT'))
    // The device keys vanish from the bucket (an operator's purge; a server that lost its store is
    // the same for the registry), then its connection drops: after the resync it rewrites them.
    await jetstreamManager(nc).then((jsm) => jsm.streams.purge('KV_rv_phantom', { filter: '$KV.rv_phantom.devices.>' }))
    proxy.cut()
    await waitFor('the registry resyncing', () => !reg.status.ready)
    // The moment the resync is done the rewrites are in flight: every device leaves then.
    await new Promise<void>((resolve) => {
      const poll = (): void => {
        if (!reg.status.ready) return void setImmediate(poll)
        for (const d of infos) devices.emit('offline', d, 'connection_lost')
        resolve()
      }
      poll()
    })
    await waitFor('the registry idle', () => reg.status.queued === 0)
    await new Promise((r) => setTimeout(r, 1000))
    const left = (await Promise.all(infos.map((d) => kv.get(`devices.${d.clientId}`)))).filter((e) => e?.operation === 'PUT').length
    expect(left).toBe(0)
  }, 60_000)

  it('review registry - ferry devices --fleet lists a bucket whose last message was a delete marker since purged (no live gateway)', async () => {
    const kv = await bucket('rv_cli')
    const v = (id: string): string => JSON.stringify({ device: id, gateway: 'gwQ', boot: 'b', since: Date.now(), address: '10.0.0.4:1', clean: true })
    await kv.put('devices.cli-1', v('cli-1'))
    await kv.put('devices.cli-2', v('cli-2'))
    await kv.delete('devices.cli-2')
    // The markers of every client id ever seen pile up in the bucket; NATS's own remedy removes them.
    await (kv as Bucket).purgeDeletes(0)
    const out = await runFerry(['devices', '--fleet', '--nats-url', nats.url, '--registry-bucket', 'rv_cli'])
    expect(out.stderr).toBe('')
    expect(out.code).toBe(0)
    expect(out.stdout).toMatch(/^cli-1\s+gwQ\s+no\s/m)
  }, 30_000)

  it('review registry - a stall of this process (its watcher behind) does not make a live gateway look dead to takeover decisions', async () => {
    await bucket('rv_stall2')
    // gwB, live in another process: its heartbeat (every 50 ms, heartbeatMs 100) goes on while this process stalls.
    const script = `
      import { connect } from '@nats-io/transport-node'
      import { jetstream } from '@nats-io/jetstream'
      import { Kvm } from '@nats-io/kv'
      const nc = await connect({ servers: ${JSON.stringify(nats.url)} })
      const kv = await new Kvm(jetstream(nc)).open('rv_stall2')
      const v = JSON.stringify({ gateway: 'gwB', boot: 'bB', startedAt: Date.now(), heartbeatMs: 100, version: 'x' })
      setInterval(() => void kv.put('gateways.gwB', v).catch(() => {}), 50)
      setTimeout(() => process.exit(0), 30000)
    `
    const child = spawn(process.execPath, ['--input-type=module', '-e', script], { cwd: process.cwd(), stdio: 'ignore' })
    try {
      const { reg } = registry('rv_stall2', 'gwA', 1000)
      await waitFor('gwA sees gwB live', () => reg.status.ready && reg.status.gateways.includes('gwB'))
      await new Promise((r) => setTimeout(r, 2500))
      // The live gateways (whom a delayed write yields to; whom "connected" names in takenOverFrom; the
      // sweeper), asked right after a stall, before the watcher has read what waits in the socket.
      const after = await new Promise<readonly string[]>((resolve) =>
        setImmediate(() => {
          const until = Date.now() + 1500
          while (Date.now() < until) {
            /* busy */
          }
          resolve(reg.status.gateways)
        }),
      )
      expect(after).toContain('gwB')
    } finally {
      child.kill('SIGKILL')
    }
  }, 60_000)

  it('review registry - a gateway that stops leaves the liveness entry of a newer process with its id alone', async () => {
    const kv = await bucket('rv_stop')
    const old = registry('rv_stop', 'gwS', 1000)
    await waitFor('the old process ready', () => old.reg.status.ready)
    // Its successor (same --gateway-id, e.g. a rolling update that starts the new one first) registers.
    const lines: string[] = []
    const devices = new StandInDevices()
    const { m } = metrics()
    const successor = new FleetRegistry({ servers: [nats.url], connectOptions: {}, bucket: 'rv_stop', replicas: 1, gatewayId: 'gwS', heartbeatMs: 60_000, version: 'review', devices: devices as unknown as Devices, logger: createLogger({ level: 'info', format: 'json', write: (l) => void lines.push(l) }), metrics: m })
    registries.push(successor)
    await waitFor('the successor ready', () => successor.status.ready)
    const boot = successor.boot
    await waitFor('the successor\'s entry', async () => (await kv.get('gateways.gwS'))?.json<{ boot: string }>().boot === boot)
    await old.reg.close(Date.now() + 2000)
    await new Promise((r) => setTimeout(r, 500))
    expect(lines.filter((l) => l.includes('entry was removed by another gateway'))).toEqual([])
  }, 30_000)
})
