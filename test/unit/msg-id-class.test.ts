// Nats-Msg-Id per priority class (issue 16): normal (or no class) keeps today's id byte for byte;
// another class names itself after the gateway id, in every path that builds an id.
import { describe, expect, it } from 'vitest'
import { PayloadPolicy, UplinkHeaderEncoder, decodeEntry, encodeEntry, uplinkMessage, uplinkMsgId } from '../../src/codec/index.js'

const ctx = { gatewayId: 'gw-1', stream: 'FERRY', subjectPrefix: 'ferry', payloads: new PayloadPolicy(true, []) }
const plain = decodeEntry(encodeEntry({ clientId: 'd1', topic: 'alarms/fire', qos: 1, retain: false, packetId: 1, encoding: 1, payload: new Uint8Array([0xa0]) }))
const withProps = decodeEntry(
  encodeEntry({ clientId: 'd1', topic: 'alarms/fire', qos: 1, retain: false, packetId: 1, encoding: 1, payload: new Uint8Array([0xa0]), properties: { userProperties: [['k', 'v']] } }),
)

function msgId(headers: Uint8Array): string {
  return /Nats-Msg-Id: ([^\r]*)\r\n/.exec(Buffer.from(headers).toString('latin1'))![1]!
}

describe('msg id class - Nats-Msg-Id per priority class', () => {
  it('msg id class - no class and class normal give the id without a class', () => {
    expect(uplinkMsgId('gw-1', 3, 42)).toBe('gw-1:3:42')
    expect(uplinkMsgId('gw-1', 3, 42, 'normal')).toBe('gw-1:3:42')
    for (const className of [undefined, 'normal']) {
      const c = { ...ctx, className }
      expect(msgId(uplinkMessage(plain, 3, 42, c).headers)).toBe('gw-1:3:42')
      expect(msgId(uplinkMessage(withProps, 3, 42, c).headers)).toBe('gw-1:3:42')
      const enc = new UplinkHeaderEncoder('gw-1', 'FERRY', 'full', className)
      // The encoder's bytes are exactly the uncached encoding's (and today's).
      expect(Buffer.from(uplinkMessage(plain, 3, 42, { ...c, headerEncoder: enc }).headers)).toEqual(Buffer.from(uplinkMessage(plain, 3, 42, ctx).headers))
    }
  })

  it('msg id class - another class is named after the gateway id, in every encoding path', () => {
    for (const className of ['high', 'low']) {
      expect(uplinkMsgId('gw-1', 3, 42, className)).toBe(`gw-1.${className}:3:42`)
      const c = { ...ctx, className }
      expect(msgId(uplinkMessage(plain, 3, 42, c).headers)).toBe(`gw-1.${className}:3:42`)
      expect(msgId(uplinkMessage(withProps, 3, 42, c).headers)).toBe(`gw-1.${className}:3:42`)
      for (const mode of ['full', 'compact'] as const) {
        const enc = new UplinkHeaderEncoder('gw-1', 'FERRY', mode, className)
        const cached = uplinkMessage(plain, 3, 42, { ...c, headerMode: mode, headerEncoder: enc }).headers
        expect(Buffer.from(cached)).toEqual(Buffer.from(uplinkMessage(plain, 3, 42, { ...c, headerMode: mode }).headers))
        // A second epoch re-encodes the head with the class too.
        expect(msgId(uplinkMessage(plain, 4, 1, { ...c, headerMode: mode, headerEncoder: enc }).headers)).toBe(`gw-1.${className}:4:1`)
      }
    }
  })

  it('msg id class - the same epoch and seq in two class logs give two different ids', () => {
    const ids = new Set(['high', 'normal', 'low'].map((k) => uplinkMsgId('gw-1', 1, 1, k)))
    expect(ids.size).toBe(3)
  })
})
