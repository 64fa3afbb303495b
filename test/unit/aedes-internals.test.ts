// Contract test of src/ingress/aedes-internals.ts against the installed aedes (1.2): a real broker
// in this process, clients on in-memory streams (no sockets), raw MQTT 3.1.1 packets. It fails first
// when aedes changes an internal the adapter relies on.
import { Duplex, PassThrough } from 'node:stream'
import { Aedes } from 'aedes'
import type { Client } from 'aedes'
import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { afterEach, beforeEach, describe, expect, it } from 'vitest'
import { disconnectedCleanly, onDeliver, onPuback, onTakeover, sendQoS1, sessionOf, subscriptionsOf } from '../../src/ingress/aedes-internals.js'

interface Peer {
  readonly got: Packet[]
  send(p: Packet): void
  /** Resolves with the first packet received (from now or before) that `match` accepts. */
  next(match: (p: Packet) => boolean, ms?: number): Promise<Packet>
  close(): void
}

/** A client connection to `broker` over in-memory streams; resolves with it and its aedes Client after CONNACK. */
async function connect(broker: Aedes, clientId: string, clean: boolean, subscribe: string[] = []): Promise<{ peer: Peer; client: Client }> {
  const toBroker = new PassThrough()
  const fromBroker = new PassThrough()
  const conn = Duplex.from({ readable: toBroker, writable: fromBroker })
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const got: Packet[] = []
  const waiters = new Set<() => void>()
  parser.on('packet', (p) => {
    got.push(p)
    for (const w of [...waiters]) w()
  })
  fromBroker.on('data', (b: Buffer) => parser.parse(b))
  const peer: Peer = {
    got,
    send: (p) => void toBroker.write(mqttPacket.generate(p)),
    next: (match, ms = 2000) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const p = got.find(match)
          if (!p) return
          waiters.delete(check)
          clearTimeout(t)
          resolve(p)
        }
        const t = setTimeout(() => (waiters.delete(check), reject(new Error(`no matching packet within ${ms} ms; got ${got.map((p) => p.cmd).join(',')}`))), ms)
        waiters.add(check)
        check()
      }),
    close: () => void conn.destroy(),
  }
  const ready = new Promise<Client>((r) => broker.once('clientReady', r))
  broker.handle(conn as unknown as Parameters<Aedes['handle']>[0])
  peer.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean, keepalive: 0 })
  const client = await ready
  if (subscribe.length > 0) {
    peer.send({ cmd: 'subscribe', messageId: 1, subscriptions: subscribe.map((topic) => ({ topic, qos: 1 as const })) })
    await peer.next((p) => p.cmd === 'suback')
  }
  return { peer, client }
}

const publishes = (peer: Peer): { topic: string; messageId: number | undefined }[] =>
  peer.got.filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish').map((p) => ({ topic: p.topic, messageId: p.messageId }))

/** Waits until `client` is gone from the broker (its disconnect handled). */
const gone = (broker: Aedes, client: Client): Promise<void> => new Promise((r) => broker.on('clientDisconnect', (c) => c === client && r()))

describe('aedes internals', () => {
  let broker: Aedes

  beforeEach(async () => {
    broker = await Aedes.createBroker()
  })

  afterEach(async () => {
    await new Promise<void>((r) => broker.close(() => r()))
  })

  it('aedes internals - sendQoS1 numbers from the client counter; onPuback sees the PUBACK, which clears the queued copy', async () => {
    const { peer, client } = await connect(broker, 'dev-1', false, ['commands/dev-1/#'])
    expect(sessionOf(client).clean).toBe(false)
    expect(subscriptionsOf(client)).toEqual(['commands/dev-1/#'])
    let delivered = 0
    onDeliver(client, () => delivered++)
    const acked: number[] = []
    onPuback(client, (id) => acked.push(id))
    const sent = sendQoS1(broker, client, 'commands/dev-1/a', Buffer.from('x'), () => expect.fail('not queued'))
    const p = (await peer.next((q) => q.cmd === 'publish')) as mqttPacket.IPublishPacket
    expect(p).toMatchObject({ topic: 'commands/dev-1/a', qos: 1, messageId: sent.messageId })
    expect(delivered).toBe(1)
    peer.send({ cmd: 'puback', messageId: sent.messageId })
    await expect.poll(() => acked).toEqual([sent.messageId])
    // Acknowledged: nothing to replay on the next connect.
    const left = gone(broker, client)
    peer.send({ cmd: 'disconnect' })
    await left
    expect(disconnectedCleanly(client)).toBe(true)
    const again = await connect(broker, 'dev-1', false)
    sendQoS1(broker, again.client, 'commands/dev-1/marker', Buffer.from('m'), () => {})
    await again.peer.next((q) => q.cmd === 'publish')
    expect(publishes(again.peer).map((q) => q.topic)).toEqual(['commands/dev-1/marker'])
  })

  it('aedes internals - a persistent session replays an unacknowledged copy on reconnect unless it was withdrawn; withdrawing leaves the client connected', async () => {
    const { peer, client } = await connect(broker, 'dev-2', false, ['commands/dev-2/#'])
    const kept = sendQoS1(broker, client, 'commands/dev-2/kept', Buffer.from('k'), () => {})
    const dropped = sendQoS1(broker, client, 'commands/dev-2/dropped', Buffer.from('d'), () => {})
    dropped.withdraw() // before it was written: it never is
    const late = sendQoS1(broker, client, 'commands/dev-2/late', Buffer.from('l'), () => {})
    await peer.next((q) => q.cmd === 'publish' && q.topic === 'commands/dev-2/late')
    late.withdraw() // after it was written
    late.withdraw() // idempotent
    expect(kept.messageId).not.toBe(dropped.messageId)
    expect(publishes(peer).map((q) => q.topic)).toEqual(['commands/dev-2/kept', 'commands/dev-2/late'])
    const left = gone(broker, client)
    peer.send({ cmd: 'disconnect' })
    await left
    expect(disconnectedCleanly(client)).toBe(true) // not failed by aedes ("no such packet")
    const again = await connect(broker, 'dev-2', false)
    await again.peer.next((q) => q.cmd === 'publish' && q.topic === 'commands/dev-2/kept')
    sendQoS1(broker, again.client, 'commands/dev-2/marker', Buffer.from('m'), () => {})
    await again.peer.next((q) => q.cmd === 'publish' && q.topic === 'commands/dev-2/marker')
    expect(publishes(again.peer).map((q) => q.topic)).toEqual(['commands/dev-2/kept', 'commands/dev-2/marker'])
  })

  it('aedes internals - onTakeover reports the previous connection of a client id', async () => {
    const taken: Client[] = []
    onTakeover(broker, (old) => taken.push(old))
    const first = await connect(broker, 'dev-3', true)
    const second = await connect(broker, 'dev-3', true)
    expect(taken).toEqual([first.client])
    expect(disconnectedCleanly(first.client)).toBe(false)
    second.peer.close()
  })
})
