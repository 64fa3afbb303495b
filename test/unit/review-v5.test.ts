// Review of the MQTT 5 ingress work (issue 13): each test here proves one finding against the real
// aedes 2.0.0-beta.1 behind the seam (in-memory streams, raw MQTT 5 packets from mqtt-packet).
import mqttPacket from 'mqtt-packet'
import { afterEach, describe, expect, it } from 'vitest'
import { connect, coreFactory } from '../helpers/aedes-peer.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

describe('review of MQTT 5 ingress (issue 13)', () => {
  const { create, closeAll } = coreFactory()
  afterEach(async () => {
    await closeAll()
  })

  const v5Small = { protocolVersion: 5 as const, properties: { sessionExpiryInterval: 3600, maximumPacketSize: 100 } }

  it('a live message larger than the MQTT 5 client Maximum Packet Size is not sent to it (control)', async () => {
    const core = await create()
    const sub = await connect(core, 'mps-live', false, ['big/#'], v5Small)
    const pub = await connect(core, 'pub-live', true)
    pub.peer.send({ cmd: 'publish', topic: 'big/x', payload: Buffer.alloc(500, 0x61), qos: 1, messageId: 1, retain: false, dup: false })
    pub.peer.send({ cmd: 'publish', topic: 'big/y', payload: Buffer.from('small'), qos: 1, messageId: 2, retain: false, dup: false })
    await sub.peer.next((p) => p.cmd === 'publish' && p.topic === 'big/y')
    expect(Math.max(...sub.peer.bytes)).toBeLessThanOrEqual(100)
  })

  // FINDING: a persistent MQTT 5 session's queued copy is replayed on reconnect by aedes' emptyQueue,
  // which writes it directly (lib/handlers/connect.js), bypassing the seam's `fits` check in the
  // wrapped deliverQoS/deliver0. [MQTT-3.1.2-24] The Server MUST NOT send packets exceeding the
  // client's Maximum Packet Size. A client that enforces its bound drops the connection on it, and the
  // copy is replayed after every reconnect: the device is wedged.
  it('a message queued for an offline MQTT 5 persistent session is not replayed when it exceeds the client Maximum Packet Size', async () => {
    const core = await create()
    const first = await connect(core, 'mps-q', false, ['big/#'], v5Small)
    first.peer.send({ cmd: 'disconnect', reasonCode: 0 })
    await sleep(50)
    const pub = await connect(core, 'pub-q', true)
    pub.peer.send({ cmd: 'publish', topic: 'big/x', payload: Buffer.alloc(500, 0x61), qos: 1, messageId: 1, retain: false, dup: false })
    await pub.peer.next((p) => p.cmd === 'puback')
    pub.peer.send({ cmd: 'publish', topic: 'big/y', payload: Buffer.from('small'), qos: 1, messageId: 2, retain: false, dup: false })
    await pub.peer.next((p) => p.cmd === 'puback' && p.messageId === 2)
    await sleep(50)
    const again = await connect(core, 'mps-q', false, [], { ...v5Small, clean: false })
    await again.peer.next((p) => p.cmd === 'publish' && p.topic === 'big/y')
    const oversized = again.peer.got.filter((p, i) => p.cmd === 'publish' && again.peer.bytes[i]! > 100).map((p) => (p as mqttPacket.IPublishPacket).topic)
    expect(oversized).toEqual([])
  })

  // FINDING: an MQTT 5 device that answers one of our deliveries (command, RPC request, request
  // answer) with a PUBACK reason code >= 0x80 did NOT accept it (MQTT 5 §3.4.2.1), yet deliver()
  // resolves 'acked': a command the device refused is acked in JetStream and reported delivered.
  it('a PUBACK with a failure reason code (>= 0x80) from an MQTT 5 device does not resolve a delivery as acked', async () => {
    const core = await create()
    const { peer, client } = await connect(core, 'v5-nack', true, ['commands/v5-nack/#'], { protocolVersion: 5 })
    const result = core.deliver(client, 'commands/v5-nack/reboot', Buffer.from('{}'), 300)
    const sent = (await peer.next((p) => p.cmd === 'publish')) as mqttPacket.IPublishPacket
    peer.send({ cmd: 'puback', messageId: sent.messageId, reasonCode: 0x80 })
    expect(await result).not.toBe('acked')
  })

  // FINDING (fixed): a delivery that does not fit the MQTT 5 client's Maximum Packet Size was silently
  // not written and deliver() waited its whole timeout; it ends at once now ('too_large'), and the
  // downlink makes a command dead, answers an RPC 413, replaces a request answer by its 413 status.
  it('a delivery larger than the MQTT 5 client Maximum Packet Size ends at once, not after its timeout', async () => {
    const core = await create()
    const { client } = await connect(core, 'v5-big', true, ['commands/v5-big/#'], { protocolVersion: 5, properties: { maximumPacketSize: 100 } })
    const started = performance.now()
    const result = await core.deliver(client, 'commands/v5-big/x', Buffer.alloc(500, 0x61), 1000)
    expect(result).toBe('too_large')
    expect(performance.now() - started).toBeLessThan(500)
  })

  // FINDING (fixed for live deliveries): aedes 2.0.0-beta.1 stores the MQTT 5 client's Receive Maximum
  // but does not cap outbound QoS 1/2 in flight (lib/handlers/connect.js: "ADVISORY"). [MQTT-3.3.4-7]
  // The Server MUST NOT send more unacknowledged QoS 1/2 PUBLISHes than the client's Receive Maximum;
  // a client that enforces it (Receive Maximum 1, acknowledging after processing) disconnects with
  // 0x93. The seam's outbound window holds live deliveries back now (test/unit/aedes-seam.test.ts);
  // a persistent session's replay after the CONNACK still sends every queued copy at once (README).
  it('no more unacknowledged QoS 1 deliveries than the MQTT 5 client Receive Maximum are sent', async () => {
    const core = await create()
    const sub = await connect(core, 'rm-out', true, ['rm/#'], { protocolVersion: 5, properties: { receiveMaximum: 1 } })
    const pub = await connect(core, 'rm-pub', true)
    for (const messageId of [1, 2, 3]) pub.peer.send({ cmd: 'publish', topic: `rm/${messageId}`, payload: Buffer.from('x'), qos: 1, messageId, retain: false, dup: false })
    await pub.peer.next((p) => p.cmd === 'puback' && p.messageId === 3)
    void core.deliver(sub.client, 'rm/command', Buffer.from('c'), 300)
    await sleep(100)
    // Nothing acknowledged by the subscriber: at most one PUBLISH may be in flight.
    expect(sub.peer.got.filter((p) => p.cmd === 'publish').length).toBeLessThanOrEqual(1)
  })

  // Checked fine: a refused QoS 2 (PUBREC >= 0x80 ends the flow, MQTT 5 §4.3.3) frees its Receive
  // Maximum slot and its packet id; an accepted one holds its slot until PUBREL.
  it('MQTT 5 QoS 2: refused ones leave no slot or packet id behind; accepted ones are released by PUBREL', async () => {
    const core = await create({ authorizePublish: (_c, p, _w, done) => done(p.topic.startsWith('no/') ? { reasonCode: 0x87, reasonString: 'not authorized', v3: 'ack' } : null) }, 2)
    const sub = await connect(core, 'q2-sub', true, ['no/#', 'yes/#'])
    const { peer, client } = await connect(core, 'q2-v5', true, [], { protocolVersion: 5 })
    for (const messageId of [1, 2, 3, 4]) {
      peer.send({ cmd: 'publish', topic: `no/${messageId}`, payload: Buffer.from('x'), qos: 2, messageId, retain: false, dup: false })
      const rec = (await peer.next((p) => p.cmd === 'pubrec' && p.messageId === messageId)) as mqttPacket.IPubrecPacket
      expect(rec.reasonCode).toBe(0x87)
    }
    // The same ids again, accepted now: each a new message (PUBREC 0), released by PUBREL.
    for (const messageId of [1, 2, 3, 4]) {
      peer.send({ cmd: 'publish', topic: `yes/${messageId}`, payload: Buffer.from('y'), qos: 2, messageId, retain: false, dup: false })
      await peer.next((p) => p.cmd === 'pubrec' && p.messageId === messageId && ((p).reasonCode ?? 0) === 0 && peer.got.filter((q) => q.cmd === 'pubrec' && q.messageId === messageId).length === 2)
      peer.send({ cmd: 'pubrel', messageId })
      await peer.next((p) => p.cmd === 'pubcomp' && p.messageId === messageId)
    }
    await sub.peer.next((p) => p.cmd === 'publish' && p.topic === 'yes/4')
    expect(sub.peer.got.filter((p) => p.cmd === 'publish').map((p) => (p).topic)).toEqual(['yes/1', 'yes/2', 'yes/3', 'yes/4'])
    expect(client.closed).toBe(false)
    expect(peer.got.some((p) => p.cmd === 'disconnect')).toBe(false)
  })

  // FINDING: an expired MQTT 5 session keeps its inbound QoS 2 packets awaiting PUBREL: aedes
  // 2.0.0-beta.1's _wipeSession clears subscriptions, will and outgoing queue, not incoming packets,
  // and the seam's forgetInbound (cleanIncoming) only covers sessions that end with the connection.
  // They stay in memory for good (up to --max-inflight-in packets of --max-packet-bytes each per client
  // id, e.g. 1000 x 1 MiB), and a new message under the same packet id in a later session is taken
  // for a duplicate: PUBREC, but never published to local subscribers.
  it('an expired MQTT 5 session forgets its unreleased inbound QoS 2 packets', async () => {
    const core = await create()
    const sub = await connect(core, 'exp-sub', true, ['q2/#'])
    const first = await connect(core, 'exp-v5', false, [], { protocolVersion: 5, properties: { sessionExpiryInterval: 1 } })
    first.peer.send({ cmd: 'publish', topic: 'q2/old', payload: Buffer.from('o'), qos: 2, messageId: 9, retain: false, dup: false })
    await first.peer.next((p) => p.cmd === 'pubrec' && p.messageId === 9)
    first.peer.send({ cmd: 'disconnect', reasonCode: 0 }) // no PUBREL
    await sleep(1600) // the session expires after 1 s
    const again = await connect(core, 'exp-v5', false, [], { protocolVersion: 5, properties: { sessionExpiryInterval: 1 } })
    expect((again.peer.got.find((p) => p.cmd === 'connack') as mqttPacket.IConnackPacket).sessionPresent).toBe(false)
    again.peer.send({ cmd: 'publish', topic: 'q2/new', payload: Buffer.from('n'), qos: 2, messageId: 9, retain: false, dup: false })
    await again.peer.next((p) => p.cmd === 'pubrec' && p.messageId === 9)
    await sleep(100)
    expect(sub.peer.got.filter((p) => p.cmd === 'publish').map((p) => (p).topic)).toEqual(['q2/old', 'q2/new'])
  })

  it('a Clean Start discards the previous session unreleased inbound QoS 2 packets (MQTT 5 and 3.1.1)', async () => {
    const core = await create()
    const sub = await connect(core, 'cs-sub', true, ['cs/#'])
    for (const [id, persistent, fresh] of [
      ['cs-v5', { protocolVersion: 5 as const, properties: { sessionExpiryInterval: 3600 } }, { protocolVersion: 5 as const, clean: true, properties: { sessionExpiryInterval: 3600 } }],
      ['cs-v3', {}, { clean: true }],
    ] as const) {
      const first = await connect(core, id, false, [], persistent)
      first.peer.send({ cmd: 'publish', topic: `cs/${id}/old`, payload: Buffer.from('o'), qos: 2, messageId: 5, retain: false, dup: false })
      await first.peer.next((p) => p.cmd === 'pubrec' && p.messageId === 5)
      first.peer.send({ cmd: 'disconnect' })
      await sleep(50)
      const again = await connect(core, id, true, [], fresh)
      again.peer.send({ cmd: 'publish', topic: `cs/${id}/new`, payload: Buffer.from('n'), qos: 2, messageId: 5, retain: false, dup: false })
      await again.peer.next((p) => p.cmd === 'pubrec' && p.messageId === 5)
      await sub.peer.next((p) => p.cmd === 'publish' && p.topic === `cs/${id}/new`, 500)
    }
  })

  // FINDING (low): a refusal is acknowledged at once (refusePublish writes the PUBACK synchronously)
  // while an earlier accepted QoS 1 PUBLISH of the same client still waits for its durable append:
  // the PUBACKs go out of order. [MQTT-4.6.0-2] PUBACKs in the order the PUBLISHes were received.
  // Before issue 13 a refusal closed the connection (3.1.1), so this is new with --refused-publish ack
  // and with MQTT 5 reason codes.
  it('PUBACKs keep the order of the PUBLISHes when a refusal follows an accepted one still being stored (3.1.1 ack and MQTT 5)', async () => {
    const held: (() => void)[] = []
    const core = await create({
      authorizePublish: (_c, p, _w, done) => {
        if (p.topic.startsWith('no/')) return done({ reasonCode: 0x87, reasonString: 'not authorized', v3: 'ack' })
        held.push(() => done(null)) // being appended
      },
    })
    for (const version of [4, 5] as const) {
      const { peer } = await connect(core, `order-${version}`, true, [], version === 5 ? { protocolVersion: 5 } : {})
      peer.send({ cmd: 'publish', topic: 'yes/1', payload: Buffer.from('a'), qos: 1, messageId: 1, retain: false, dup: false })
      peer.send({ cmd: 'publish', topic: 'no/2', payload: Buffer.from('b'), qos: 1, messageId: 2, retain: false, dup: false })
      await sleep(30)
      for (const h of held.splice(0)) h()
      await peer.next((p) => p.cmd === 'puback' && p.messageId === 1)
      await peer.next((p) => p.cmd === 'puback' && p.messageId === 2)
      expect(peer.got.filter((p) => p.cmd === 'puback').map((p) => p.messageId)).toEqual([1, 2])
    }
  })

  // Pins aedes 2.0.0-beta.1's `_requestProblemInformation` (no test had): [MQTT-3.1.2-29] no Reason
  // String on a refusing PUBACK when the CONNECT said Request Problem Information 0.
  it('MQTT 5: a refusing PUBACK carries no Reason String when the client asked for no problem information', async () => {
    const core = await create({ authorizePublish: (_c, _p, _w, done) => done({ reasonCode: 0x87, reasonString: 'not authorized', v3: 'ack' }) })
    for (const [id, rpi, expected] of [['rpi-0', false, undefined], ['rpi-1', true, 'not authorized']] as const) {
      const { peer } = await connect(core, id, true, [], { protocolVersion: 5, properties: { requestProblemInformation: rpi } })
      peer.send({ cmd: 'publish', topic: 'x/1', payload: Buffer.from('a'), qos: 1, messageId: 1, retain: false, dup: false })
      const ack = (await peer.next((p) => p.cmd === 'puback')) as mqttPacket.IPubackPacket
      expect(ack.reasonCode).toBe(0x87)
      expect(ack.properties?.reasonString).toBe(expected)
    }
  })
})
