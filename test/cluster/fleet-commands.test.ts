// Issue 15, test 4: commands follow a device that moves between gateways. Three gateways (A, B, C idle)
// share one --subject-prefix on a 3-node JetStream cluster (--stream-replicas 3); a device (mqtt.js,
// subscribed to its command topic, acknowledging) moves from A to B with commands waiting and more sent
// during the move: every command is delivered once, in order, by B (told apart by the connection that
// received it), and A hands nothing back (its pull was withdrawn when the device left).
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { startCluster } from '../helpers/cluster.js'
import type { NatsCluster } from '../helpers/cluster.js'
import { until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { closedWithin, connectClient, endClient } from '../helpers/mqtt.js'

/** A device's connection to one gateway: what it received, in order (mqtt.js PUBACKs each at once). */
interface Attached {
  readonly client: MqttClient
  readonly got: number[]
  /** When the SUBACK came back (ms, performance.now()). */
  readonly subscribedAt: number
  /** When each command arrived (ms, performance.now()). */
  readonly at: number[]
}

async function attach(port: number, id: string): Promise<Attached> {
  const client = await connectClient(port, id, { clean: true })
  const got: number[] = []
  const at: number[] = []
  client.on('message', (_topic, payload) => {
    got.push((JSON.parse(payload.toString()) as { i: number }).i)
    at.push(performance.now())
  })
  await client.subscribeAsync(`commands/${id}/#`, { qos: 1 })
  return { client, got, at, subscribedAt: performance.now() }
}

/** The value of ferry_downlink_commands_total{result} on a gateway's /metrics (0 when absent). */
async function commandsTotal(gw: GatewayProcess, result: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
  const m = new RegExp(`^ferry_downlink_commands_total\\{result="${result}"\\} (\\d+)`, 'm').exec(text)
  return m ? Number(m[1]) : 0
}

/** A metric without labels on a gateway's /metrics (-1 when absent). */
async function metricValue(gw: GatewayProcess, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
  const m = new RegExp(`^${name} (\\d+)`, 'm').exec(text)
  return m ? Number(m[1]) : -1
}

const range = (from: number, to: number): number[] => Array.from({ length: to - from + 1 }, (_, k) => from + k)

describe('fleet - commands follow the device', () => {
  let cluster: NatsCluster
  let nc: NatsConnection
  const gws: GatewayProcess[] = []
  let a: GatewayProcess
  let b: GatewayProcess

  beforeAll(async () => {
    cluster = await startCluster()
    // Each gateway lists another node first, so devices' consumers and gateways sit on different nodes.
    for (const [k, id] of ['gw-a', 'gw-b', 'gw-c'].entries()) {
      const urls = [...cluster.urls.slice(k), ...cluster.urls.slice(0, k)].join(',')
      gws.push(await spawnGateway(['--data-dir', tempDir(`ferry-fleet-cmd-${id}-`), '--nats-url', urls, '--mqtt-listen', '127.0.0.1:0', '--gateway-id', id, '--stream-replicas', '3', '--cmd-ack-timeout-ms', '15000', '--cmd-max-deliver', '3'], 30_000))
    }
    ;[a, b] = gws as [GatewayProcess, GatewayProcess]
    nc = await connect({ servers: [...cluster.urls] })
    const jsm = await jetstreamManager(nc)
    expect(await until(async () => (await jsm.streams.info('FERRY_CMD').catch(() => undefined))?.config.num_replicas === 3, 30_000)).toBe(true)
    await cluster.waitStreamHealthy('FERRY_CMD')
  }, 90_000)

  afterAll(async () => {
    await nc?.close()
    await Promise.all(gws.map((g) => g.kill('SIGTERM')))
    await cluster?.[Symbol.asyncDispose]()
  })

  const send = async (device: string, i: number): Promise<void> => {
    await jetstream(nc).publish(`ferry.cmd.${device}.step.${i}`, JSON.stringify({ i }))
  }
  const waiting = async (): Promise<number> => (await (await jetstreamManager(nc)).streams.info('FERRY_CMD')).state.messages

  it('a device that moves from A to B with commands waiting and more sent during the move gets every command once, in order, from B', async () => {
    const atA = await attach(a.port, 'mover')
    for (const i of range(1, 5)) await send('mover', i)
    expect(await until(() => atA.got.length >= 5, 20_000)).toBe(true)
    expect(await until(async () => (await waiting()) === 0, 20_000)).toBe(true)
    await atA.client.endAsync() // leaves A (DISCONNECT)
    // endAsync resolves when the socket closes, before A has seen the device go: a command sent now can
    // still reach A's pull and be handed back (counted "offline"). Send once A knows.
    expect(await until(async () => (await metricValue(a, 'ferry_mqtt_clients')) === 0, 20_000)).toBe(true)
    for (const i of range(6, 15)) await send('mover', i) // waiting for the device
    // More commands while it moves: the device connects to B while these are being sent.
    let sent = 15
    const during = (async () => {
      for (const i of range(16, 30)) {
        await send('mover', i)
        sent = i
        await new Promise((r) => setTimeout(r, 20)) // pacing, so the move falls among them
      }
    })()
    expect(await until(() => sent >= 20, 20_000)).toBe(true)
    const atB = await attach(b.port, 'mover')
    await during
    expect(await until(() => atB.got.length >= 25, 30_000)).toBe(true)
    expect(await until(async () => (await waiting()) === 0, 20_000)).toBe(true)
    await new Promise((r) => setTimeout(r, 500)) // nothing more arrives
    expect(atA.got).toEqual(range(1, 5))
    expect(atB.got).toEqual(range(6, 30))
    // A handed nothing back: no pull of its was left at the server to take the device's next command.
    expect(await commandsTotal(a, 'offline')).toBe(0)
    expect(await commandsTotal(a, 'delivered')).toBe(5)
    expect(await commandsTotal(b, 'delivered')).toBe(25)
    const firstMs = atB.at[0]! - atB.subscribedAt
    console.log(`moved A→B: first waiting command at B ${Math.round(firstMs)} ms after its SUBACK; 25 commands (10 waiting, 15 sent during the move) in ${Math.round(atB.at[24]! - atB.subscribedAt)} ms`)
    await endClient(atB.client)
  }, 90_000)

  it('a device moving back and forth between A and B while commands flow gets them in order, each again only if it was out at the move', async () => {
    const seen: { stop: number; i: number }[] = []
    let sent = 0
    const total = 40
    // Each stop gets its own ten commands, sent only once the device is there (25 ms apart, so the next
    // move falls among them): every stop gets some however fast the machine is (on a busy machine all 40
    // once arrived before the fourth stop: failed in CI).
    const arrived = [0, 1, 2, 3].map(() => {
      let resolve!: () => void
      const promise = new Promise<void>((r) => (resolve = r))
      return { promise, resolve }
    })
    const sender = (async () => {
      for (const i of range(1, total)) {
        if ((i - 1) % 10 === 0) await arrived[(i - 1) / 10]!.promise
        await send('pingpong', i)
        sent = i
        await new Promise((r) => setTimeout(r, 25)) // pacing, so the moves fall among them
      }
    })()
    const t0 = performance.now()
    for (const [k, gw] of [a, b, a, b].entries()) {
      const d = await attach(gw.port, 'pingpong')
      d.client.on('message', (_t, p) => seen.push({ stop: k, i: (JSON.parse(p.toString()) as { i: number }).i }))
      arrived[k]!.resolve()
      // Stay until half of this stop's commands arrived (the last stop stays until all of them did).
      const want = k === 3 ? total : 10 * k + 5
      expect(await until(() => new Set(seen.map((s) => s.i)).size >= want, 30_000)).toBe(true)
      await d.client.endAsync()
    }
    await sender
    const tookMs = performance.now() - t0
    expect(sent).toBe(total)
    // In order; a command appears twice only when the device left while it was out (its PUBACK did
    // not reach the gateway): then the next stop gets it first.
    const once = seen.filter((s, k) => k === 0 || s.i !== seen[k - 1]!.i)
    expect(once.map((s) => s.i)).toEqual(range(1, total))
    for (const [k, s] of seen.entries()) if (k > 0 && s.i === seen[k - 1]!.i) expect(s.stop).toBe(seen[k - 1]!.stop + 1)
    expect(new Set(seen.map((s) => s.stop))).toEqual(new Set([0, 1, 2, 3]))
    expect(await until(async () => (await waiting()) === 0, 20_000)).toBe(true)
    // No move waited for ack_wait (20 s here: --cmd-ack-timeout-ms + 5 s): nothing handed out to the
    // old gateway after the device left was lost on the way. A stall detector with a wide margin (the
    // run takes about 2 s), not a speed target.
    console.log(`4 moves among ${total} commands sent 25 ms apart: ${Math.round(tookMs)} ms, ${seen.length - total} delivered again at a move`)
    expect(tookMs).toBeLessThan(15_000)
  }, 90_000)

  // Needs the fleet registry's cross-gateway takeover (another branch of issue 15): fails without it.
  it('A gives up its stale session when the device connects to B', async () => {
    const stale = await connectClient(a.port, 'stale-dev', { clean: true })
    const atB = await attach(b.port, 'stale-dev')
    try {
      expect(await closedWithin(stale, 10_000)).toBe(true)
      await send('stale-dev', 1)
      expect(await until(() => atB.got.length === 1, 10_000)).toBe(true)
    } finally {
      await endClient(stale)
      await endClient(atB.client)
    }
  }, 30_000)
})
