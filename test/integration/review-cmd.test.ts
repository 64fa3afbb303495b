// Review of "commands follow the device": consumer-name collisions between two client ids, and a
// device that leaves while its command waits for a delivery slot (--cmd-max-inflight).
import crypto from 'node:crypto'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { rawDevice, until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

async function metric(gw: GatewayProcess, line: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
  const hit = text.split('\n').find((l) => l.startsWith(line + ' '))
  return hit ? Number(hit.slice(line.length + 1)) : 0
}

describe('downlink - review of the shared command consumer', () => {
  let nats: NatsServer
  let nc: NatsConnection
  const gws: GatewayProcess[] = []

  beforeAll(async () => {
    nats = await startNats()
    nc = await connect({ servers: nats.url })
  }, 30_000)

  afterAll(async () => {
    await nc?.close()
    await Promise.all(gws.map((g) => g.kill('SIGTERM')))
    await nats?.stop()
  })

  const gateway = async (id: string, extra: string[] = []): Promise<GatewayProcess> => {
    const g = await spawnGateway(['--data-dir', tempDir(`ferry-review-cmd-${id}-`), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--gateway-id', id, '--fleet-registry', 'off', ...extra])
    gws.push(g)
    return g
  }

  it("commands - a plain client id equal to another id's hashed consumer suffix never takes that device's commands", async () => {
    const gw = await gateway('gw-rc1')
    expect(await until(async () => (await jetstreamManager(nc)).streams.info('FERRY_CMD').then(() => true, () => false))).toBe(true)
    const victim = 'rc.victim'
    // A plain id (matches /^[A-Za-z0-9_-]{1,48}$/) spelled as the hashed form of `victim` (it was one name before names were made one-to-one).
    const thief = `rc_victim_${crypto.createHash('sha256').update(victim).digest('hex').slice(0, 24)}`
    const v = await rawDevice(gw.port, victim)
    expect(await until(async () => (await (await jetstreamManager(nc)).consumers.info('FERRY_CMD', `cmd_rc_victim_${crypto.createHash('sha256').update(victim).digest('hex').slice(0, 24)}`).then(() => true, () => false)))).toBe(true)
    const t = await rawDevice(gw.port, thief)
    await new Promise((r) => setTimeout(r, 1000)) // the thief's pump, if any, is pulling
    const js = jetstream(nc)
    for (let i = 1; i <= 6; i++) await js.publish(`ferry.cmd.rc%2Evictim.step.${i}`, JSON.stringify({ i }))
    expect(await until(() => v.got.length + t.got.length >= 6, 15_000)).toBe(true)
    await new Promise((r) => setTimeout(r, 500))
    expect(t.got.map((g) => g.topic)).toEqual([])
    expect(v.got.map((g) => g.topic)).toEqual([1, 2, 3, 4, 5, 6].map((i) => `commands/${victim}/step/${i}`))
    await v.end()
    await t.end()
  }, 60_000)

  it('commands - a device that leaves while its command waits for a delivery slot has it handed back at once (not as "not subscribed")', async () => {
    const a = await gateway('gw-rca', ['--cmd-max-inflight', '1', '--cmd-ack-timeout-ms', '30000'])
    const b = await gateway('gw-rcb')
    const jsm = await jetstreamManager(nc)
    const js = jetstream(nc)
    // X holds A's only delivery slot: it takes its command and keeps the PUBACK.
    const x = await rawDevice(a.port, 'rc-x', { ack: 'manual' })
    await js.publish('ferry.cmd.rc-x.hold', '{}')
    expect(await until(() => x.held.length === 1)).toBe(true)
    // Y's command is pulled by A and waits for the slot.
    const y = await rawDevice(a.port, 'rc-y')
    await js.publish('ferry.cmd.rc-y.go', '{}')
    expect(await until(async () => (await jsm.consumers.info('FERRY_CMD', 'cmd_rc-y').then((c) => c.num_ack_pending, () => 0)) === 1)).toBe(true)
    // Y moves to B; then A's slot is freed.
    await y.end()
    const y2 = await rawDevice(b.port, 'rc-y')
    x.held[0]!()
    expect(await until(() => y2.got.length === 1, 20_000)).toBe(true)
    expect(y2.got[0]!.topic).toBe('commands/rc-y/go')
    expect(await metric(a, 'ferry_downlink_commands_total{result="not_subscribed"}')).toBe(0)
    await x.end()
    await y2.end()
  }, 60_000)

  it('commands - a delivery that outlasts two idle heartbeats of its pull (--cmd-ack-timeout-ms 47000) does not break the pump', async () => {
    // fetch() asks for heartbeats every expires/2 (15 s) and fails after two missed; the server sends none
    // once the pull is satisfied, so waiting longer than that for a PUBACK must not end in "heartbeats missed".
    const gw = await gateway('gw-rchb', ['--cmd-ack-timeout-ms', '47000'])
    const d = await rawDevice(gw.port, 'rc-hb', { ack: 'never' })
    await jetstream(nc).publish('ferry.cmd.rc-hb.slow', '{}')
    expect(await until(() => d.got.length === 1)).toBe(true)
    expect(await until(() => d.got.length === 2, 56_000)).toBe(true) // offered again after the ack timeout
    expect(gw.output()).not.toContain('heartbeats missed')
    expect(gw.output()).not.toContain('command delivery to a device interrupted')
    await d.end()
  }, 70_000)
})
