// Review of outbound-rm (Receive Maximum window): failing cases found by the reviewer.
import type mqttPacket from 'mqtt-packet'
import { afterEach, describe, expect, it } from 'vitest'
import { connect, coreFactory } from '../helpers/aedes-peer.js'
import type { MqttClientRef } from '../../src/ingress/aedes-seam.js'

describe('review outbound-rm', () => {
  const { create, closeAll } = coreFactory()
  afterEach(closeAll)

  it('persistent MQTT 5 session, Receive Maximum 1: a Ferry delivery withdrawn right after the window released it does not make aedes fail the client ("no such packet")', async () => {
    const core = await create()
    const errors: Error[] = []
    core.on('clientError', (_c: MqttClientRef, err: Error) => errors.push(err))
    const v5 = { protocolVersion: 5 as const, properties: { receiveMaximum: 1, sessionExpiryInterval: 3600 } }
    const { peer, client } = await connect(core, 'rv-orm-w', false, ['none/#'], v5)
    const ac = new AbortController()
    const first = core.deliver(client, 'c/1', Buffer.from('1'), 60_000)
    const second = core.deliver(client, 'c/2', Buffer.from('2'), 60_000, ac.signal) // waits behind c/1
    // The application gives up on c/2 as soon as c/1 is acknowledged (a microtask after the PUBACK
    // was handled, by which time the window has handed c/2 to aedes, whose outgoingUpdate is still pending).
    void first.then(() => ac.abort())
    const sent = (await peer.next((p) => p.cmd === 'publish' && p.topic === 'c/1')) as mqttPacket.IPublishPacket
    peer.send({ cmd: 'puback', messageId: sent.messageId })
    await expect(first).resolves.toBe('acked')
    await expect(second).resolves.toBe('cancelled')
    const marker = core.deliver(client, 'c/3', Buffer.from('3'), 300)
    await new Promise((r) => setTimeout(r, 200))
    expect(errors.map((e) => e.message)).toEqual([])
    expect(client.closed).toBe(false)
    await expect(marker).resolves.not.toBe('offline')
  })
})
