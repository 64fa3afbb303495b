// The seam parses a connection's bytes in order even when a publish decision made synchronously
// inside a parse lets aedes read the next chunk at once (nextBatch from inside the parse): without
// the guard, that nested parse put the parser out of step with the stream (found with a flood of
// refused MQTT 5 publishes, issue 16).
import mqttPacket from 'mqtt-packet'
import { afterEach, describe, expect, it } from 'vitest'
import { connect, coreFactory } from '../helpers/aedes-peer.js'
import { until } from '../helpers/device.js'

describe('aedes seam - nested reads', () => {
  const errors: string[] = []
  const { create, closeAll } = coreFactory()

  afterEach(async () => {
    errors.length = 0
    await closeAll()
  })

  it('aedes seam - chunks read while a parse is emitting packets are parsed after it, in order: every publish answered, no protocol error', async () => {
    const core = await create({
      // 'slow/…' is decided later (as a store), everything else refused at once (as a full share).
      authorizePublish: (_c, p, _w, done) => {
        if (p.topic.startsWith('slow/')) setTimeout(() => done(null), 5)
        else done({ reasonCode: 0x97, reasonString: 'quota exceeded', v3: 'disconnect' })
      },
    })
    core.on('clientError', (_c, err) => errors.push(err.message))
    const { peer } = await connect(core, 'dev-v5', true, [], { protocolVersion: 5 })
    const pad = 'x'.repeat(700)
    const gen = (topic: string, messageId: number): Buffer => mqttPacket.generate({ cmd: 'publish', topic, payload: pad, qos: 1, messageId, retain: false, dup: false }, { protocolVersion: 5 })
    let id = 0
    // Many rounds: a slow publish, then chunks of refused ones written while it is pending, some split mid-packet.
    for (let round = 0; round < 40; round++) {
      peer.raw(gen('slow/a', ++id))
      await new Promise((r) => setImmediate(r))
      const burst = Buffer.concat(Array.from({ length: 6 }, () => gen('fast/b', ++id)))
      const cut = 300 + round * 17
      peer.raw(burst.subarray(0, cut))
      await new Promise((r) => setImmediate(r))
      peer.raw(burst.subarray(cut))
    }
    await until(() => peer.got.filter((p) => p.cmd === 'puback').length === id, 10_000)
    const acks = peer.got.filter((p): p is mqttPacket.IPubackPacket => p.cmd === 'puback')
    expect(errors).toEqual([])
    // In PUBLISH order, each answered once: slow ones accepted (0), the others refused (0x97).
    expect(acks.map((a) => a.messageId)).toEqual(Array.from({ length: id }, (_, i) => i + 1))
    expect(acks.filter((a) => (a.reasonCode ?? 0) === 0)).toHaveLength(40)
  })
})
