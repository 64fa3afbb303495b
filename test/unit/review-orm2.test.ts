import type mqttPacket from 'mqtt-packet'
import { afterEach, describe, expect, it } from 'vitest'
import { connect, coreFactory, gone, publishes } from '../helpers/aedes-peer.js'

describe('review outbound-rm 2', () => {
  const { create, closeAll } = coreFactory()
  afterEach(closeAll)
  for (const rm of [undefined, 5]) {
    it(`persistent v5 session with overlapping subscriptions (receiveMaximum ${rm}): an acknowledged message is not replayed on the next connect`, async () => {
      const core = await create()
      const props = { sessionExpiryInterval: 3600, ...(rm ? { receiveMaximum: rm } : {}) }
      const id = `ov-${rm}`
      const sub = await connect(core, id, false, ['d/#', 'd/+'], { protocolVersion: 5, properties: props })
      const pub = await connect(core, `${id}-pub`, true)
      pub.peer.send({ cmd: 'publish', topic: 'd/1', payload: Buffer.from('x'), qos: 1, messageId: 1, retain: false, dup: false })
      const p = (await sub.peer.next((q) => q.cmd === 'publish' && q.topic === 'd/1')) as mqttPacket.IPublishPacket
      sub.peer.send({ cmd: 'puback', messageId: p.messageId })
      await new Promise((r) => setTimeout(r, 100))
      expect(publishes(sub.peer).map((q) => q.topic)).toEqual(['d/1'])
      const left = gone(core, sub.client)
      sub.peer.send({ cmd: 'disconnect', reasonCode: 0 })
      await left
      const again = await connect(core, id, false, [], { protocolVersion: 5, clean: false, properties: props })
      await new Promise((r) => setTimeout(r, 200))
      expect(publishes(again.peer).map((q) => q.topic)).toEqual([])
    })
  }
})
