// The mapping of a log entry to its JetStream message (codec/nats-message.ts): subjects, the pinned
// header bytes, and payloads, exactly as the forwarder published them before the mapping moved here.
import { describe, expect, it } from 'vitest'
import { CONTENT_TYPE_CBOR, CONTENT_TYPE_OCTETS, PayloadPolicy, decodeCbor, decodeEntry, encodeEntry, uplinkMessage, uplinkMsgId } from '../../src/codec/index.js'

const ctx = { gatewayId: 'gw-1', stream: 'FERRY', subjectPrefix: 'ferry', payloads: new PayloadPolicy(true, []) }

describe('nats message - uplink mapping', () => {
  it('nats message - pins subject, header bytes and payload of a CBOR entry', () => {
    const body = encodeEntry({ clientId: 'dev 1\r\n', topic: 'plant/a.b/temp', qos: 1, retain: false, packetId: 7, encoding: 1, payload: new Uint8Array([0xa1, 0x61, 0x74, 0x01]) })
    const m = uplinkMessage(decodeEntry(body), 3, 42, ctx)
    expect(m.subject).toBe('ferry.up.plant.a%2Eb.temp')
    expect(m.isEvent).toBe(false)
    expect(Buffer.from(m.headers).toString('latin1')).toBe(
      'NATS/1.0\r\nNats-Msg-Id: gw-1:3:42\r\nNats-Expected-Stream: FERRY\r\nFerry-Client: dev 1%0D%0A\r\nContent-Type: application/cbor\r\n\r\n',
    )
    expect([...m.data]).toEqual([0xa1, 0x61, 0x74, 0x01])
  })

  it('nats message - a version 1 entry is encoded by the payload policy', () => {
    const v2 = encodeEntry({ clientId: 'd', topic: 't/x', qos: 0, retain: false, packetId: 0, payload: Buffer.from('{"a":1}') })
    const v1 = Buffer.from(v2)
    v1[0] = 1
    v1[1] = 0
    const m = uplinkMessage(decodeEntry(v1), 1, 1, ctx)
    expect(decodeCbor(m.data)).toEqual({ a: 1 })
    expect(Buffer.from(m.headers).toString()).toContain(`Content-Type: ${CONTENT_TYPE_CBOR}\r\n`)
    const raw = uplinkMessage(decodeEntry(v1), 1, 1, { ...ctx, payloads: new PayloadPolicy(false, []) })
    expect(Buffer.from(raw.data).toString()).toBe('{"a":1}')
    expect(Buffer.from(raw.headers).toString()).toContain(`Content-Type: ${CONTENT_TYPE_OCTETS}\r\n`)
  })

  it('nats message - an event entry goes to the events subject of its device', () => {
    const e = decodeEntry(encodeEntry({ clientId: 'dev.1', topic: '$ferry/events/connected', qos: 1, retain: false, packetId: 0, encoding: 2, payload: Buffer.from('{}') }))
    const m = uplinkMessage(e, 9, 5, ctx)
    expect(m.isEvent).toBe(true)
    expect(m.subject).toBe('ferry.events.dev%2E1.connected')
    expect(uplinkMsgId('gw-1', 9, 5)).toBe('gw-1:9:5')
  })

  it('nats message - a memoised subject function is used for device topics', () => {
    const e = decodeEntry(encodeEntry({ clientId: 'd', topic: 'a/b', qos: 0, retain: false, packetId: 0, encoding: 3, payload: new Uint8Array(0) }))
    expect(uplinkMessage(e, 1, 1, { ...ctx, subjectOf: (t) => `memo.${t}` }).subject).toBe('memo.a/b')
  })
})
