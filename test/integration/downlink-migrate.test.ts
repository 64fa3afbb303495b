// Commands after an upgrade: an older Ferry's per-gateway consumer `<gatewayId>_<device>` (same filter)
// blocks the fleet-wide `cmd_<device>` on the work-queue stream; the gateway deletes it, logs it once,
// creates the shared one, and the command the old consumer held unacknowledged is delivered, in order.
import { AckPolicy, DeliverPolicy, RetentionPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rawDevice, until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

describe('downlink - consumer migration', () => {
  let nats: NatsServer
  let nc: NatsConnection
  let gw: GatewayProcess | undefined

  beforeAll(async () => {
    nats = await startNats()
    nc = await connect({ servers: nats.url })
  }, 30_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nc?.close()
    await nats?.stop()
  })

  /** What an older Ferry left: the work-queue stream and `<gatewayId>_<device>` holding `held` commands unacknowledged. */
  async function oldFerry(consumer: string, device: string, count: number, held: number): Promise<void> {
    const jsm = await jetstreamManager(nc)
    await jsm.streams.info('FERRY_CMD').catch(() => jsm.streams.add({ name: 'FERRY_CMD', subjects: ['ferry.cmd.>'], retention: RetentionPolicy.Workqueue }))
    await jsm.consumers.add('FERRY_CMD', { durable_name: consumer, filter_subject: `ferry.cmd.${device}.>`, ack_policy: AckPolicy.Explicit, deliver_policy: DeliverPolicy.All, max_ack_pending: 1, ack_wait: 60_000_000_000 })
    const js = jetstream(nc)
    for (let i = 1; i <= count; i++) await js.publish(`ferry.cmd.${device}.step.${i}`, JSON.stringify({ i }))
    const c = await js.consumers.get('FERRY_CMD', consumer)
    for (let i = 0; i < held; i++) expect(await c.next({ expires: 2000 })).not.toBeNull() // taken, never acked
  }

  it("commands - an older Ferry's <gatewayId>_<device> consumer is replaced by cmd_<device>; its unacknowledged command is delivered, in order", async () => {
    // One left by this very gateway id, one by another gateway of the fleet (found by its filter).
    await oldFerry('gw-m_mig-own', 'mig-own', 3, 1)
    await oldFerry('gw-other_mig-far', 'mig-far', 2, 1)
    gw = await spawnGateway(['--data-dir', tempDir('ferry-migrate-'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--gateway-id', 'gw-m', '--cmd-ack-timeout-ms', '500', '--cmd-max-deliver', '3'])
    const own = await rawDevice(gw.port, 'mig-own')
    const far = await rawDevice(gw.port, 'mig-far')
    expect(await until(() => own.got.length >= 3 && far.got.length >= 2, 15_000)).toBe(true)
    await new Promise((r) => setTimeout(r, 500)) // nothing more arrives
    expect(own.got.map((g) => g.topic)).toEqual([1, 2, 3].map((i) => `commands/mig-own/step/${i}`))
    expect(far.got.map((g) => g.topic)).toEqual([1, 2].map((i) => `commands/mig-far/step/${i}`))
    const jsm = await jetstreamManager(nc)
    const names: string[] = []
    for await (const c of jsm.consumers.list('FERRY_CMD')) names.push(c.name)
    expect(names.sort()).toEqual(['cmd_mig-far', 'cmd_mig-own'])
    expect(await until(async () => (await jsm.streams.info('FERRY_CMD')).state.messages === 0)).toBe(true)
    const deleted = gw.output().split('\n').filter((l) => l.includes("deleted an older Ferry's per-gateway command consumer"))
    expect(deleted).toHaveLength(2)
    expect(deleted.join('\n')).toContain('"deleted":"gw-m_mig-own"')
    expect(deleted.join('\n')).toContain('"deleted":"gw-other_mig-far"')
    await own.end()
    await far.end()
    // Back again: no further migration (logged once).
    const again = await rawDevice(gw.port, 'mig-own')
    await jetstream(nc).publish('ferry.cmd.mig-own.step.4', '{"i":4}')
    expect(await until(() => again.got.length === 1)).toBe(true)
    expect(gw.output().split('\n').filter((l) => l.includes("deleted an older Ferry's"))).toHaveLength(2)
    await again.end()
  }, 60_000)

  it('commands - a consumer of another shape that overlaps the device filter is left alone, and the error names the filter', async () => {
    const jsm = await jetstreamManager(nc)
    await jsm.consumers.add('FERRY_CMD', { durable_name: 'someone-else', filter_subject: 'ferry.cmd.mig-x.reboot', ack_policy: AckPolicy.Explicit })
    const d = await rawDevice(gw!.port, 'mig-x')
    expect(await until(() => /another consumer of work-queue stream FERRY_CMD overlaps its filter ferry\.cmd\.mig-x\.>/.test(gw!.output()))).toBe(true)
    expect((await jsm.consumers.info('FERRY_CMD', 'someone-else')).name).toBe('someone-else')
    await d.end()
  }, 30_000)

  it('commands - an existing --cmd-stream with fewer replicas than --stream-replicas is left as it is, with a warning', async () => {
    // Both streams exist (R1, made by the first gateway); the registry is off: a single server holds no R3 asset.
    const g = await spawnGateway(['--data-dir', tempDir('ferry-migrate-r3-'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--gateway-id', 'gw-r3', '--stream-replicas', '3', '--fleet-registry', 'off'])
    try {
      expect(await until(() => g.output().includes('command stream has 1 replica(s), fewer than --stream-replicas 3'))).toBe(true)
      expect((await (await jetstreamManager(nc)).streams.info('FERRY_CMD')).config.num_replicas).toBe(1)
    } finally {
      await g.kill('SIGTERM')
    }
  }, 30_000)
})
