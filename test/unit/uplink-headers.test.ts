// --uplink-headers: the forwarder's cached header encoder gives today's bytes (full), the compact form
// leaves out only what a consumer can recover, and the PubAck and reply-subject fast paths decide as before.
import { MsgHdrsImpl } from '@nats-io/nats-core'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  CONTENT_TYPE_CBOR,
  PayloadPolicy,
  UplinkHeaderEncoder,
  decodeEntry,
  encodeEntry,
  encodeUplinkHeaders,
  subjectToTopic,
  uplinkClientId,
  uplinkContentType,
  uplinkMessage,
} from '../../src/codec/index.js'
import type { PayloadEncoding, UplinkHeaderMode } from '../../src/codec/index.js'
import { classifyPubAck, expectStream } from '../../src/forward/index.js'
import { parseReplySubject, replySeq, replySubject } from '../../src/forward/reply-subject.js'

const base = { gatewayId: 'gw-1', stream: 'FERRY', subjectPrefix: 'ferry', payloads: new PayloadPolicy(true, []) }
const ctxOf = (mode: UplinkHeaderMode, cached: boolean): Parameters<typeof uplinkMessage>[3] => ({ ...base, headerMode: mode, headerEncoder: cached ? new UplinkHeaderEncoder('gw-1', 'FERRY', mode) : undefined })

function entry(clientId: string, topic: string, encoding: PayloadEncoding = 1): ReturnType<typeof decodeEntry> {
  return decodeEntry(encodeEntry({ clientId, topic, qos: 1, retain: false, packetId: 1, encoding, payload: new Uint8Array([0xa0]) }))
}

const headersOf = (bytes: Uint8Array): Record<string, string> => {
  const out: Record<string, string> = {}
  for (const [k, v] of MsgHdrsImpl.decode(bytes)) out[k] = v[0] ?? ''
  return out
}

describe('uplink headers - full and compact', () => {
  it('uplink headers - the cached encoder gives exactly the bytes of encodeUplinkHeaders, full and compact', () => {
    const ids = ['dev-1', 'gerät\r\n%1', ' x ', '', 'devices']
    const types = ['application/cbor', 'application/json', 'application/octet-stream']
    for (const mode of ['full', 'compact'] as const) {
      const enc = new UplinkHeaderEncoder('gw-1', 'FERRY', mode)
      for (const epoch of [1, 815445468])
        for (const seq of [0, 9, 10, 1234567, 2 ** 40])
          for (const id of ids)
            for (const ct of types)
              for (const inSubject of [false, true]) {
                const got = Buffer.from(enc.encode(epoch, seq, id, ct, inSubject)).toString('utf8')
                expect(got).toBe(Buffer.from(encodeUplinkHeaders(`gw-1:${epoch}:${seq}`, 'FERRY', id, ct, mode, inSubject)).toString('utf8'))
              }
    }
  })

  it('uplink headers - full is the default and pinned: four headers, byte for byte as before', () => {
    const m = uplinkMessage(entry('dev-1', 'devices/dev-1/t'), 7, 42, ctxOf('full', true))
    expect(Buffer.from(m.headers).toString()).toBe('NATS/1.0\r\nNats-Msg-Id: gw-1:7:42\r\nNats-Expected-Stream: FERRY\r\nFerry-Client: dev-1\r\nContent-Type: application/cbor\r\n\r\n')
    expect(Buffer.from(uplinkMessage(entry('dev-1', 'devices/dev-1/t'), 7, 42, base).headers)).toEqual(Buffer.from(m.headers))
  })

  it('uplink headers - compact: same message id; no expected stream; Content-Type only when not CBOR; Ferry-Client only when the subject does not carry it', () => {
    const ctx = ctxOf('compact', true)
    expect(Buffer.from(uplinkMessage(entry('dev-1', 'devices/dev-1/t'), 7, 42, ctx).headers).toString()).toBe('NATS/1.0\r\nNats-Msg-Id: gw-1:7:42\r\n\r\n')
    expect(headersOf(uplinkMessage(entry('dev-1', 'dev-1/t'), 7, 43, ctx).headers)).toEqual({ 'Nats-Msg-Id': 'gw-1:7:43', 'Ferry-Client': 'dev-1' })
    expect(headersOf(uplinkMessage(entry('dev-1', 'devices/dev-1', 3), 7, 44, ctx).headers)).toEqual({ 'Nats-Msg-Id': 'gw-1:7:44', 'Content-Type': 'application/octet-stream' })
    // Events: the subject's device token carries the client id.
    const ev = uplinkMessage(entry('a.b/c', '$ferry/events/connected'), 7, 45, ctx)
    expect(ev.subject).toBe('ferry.events.a%2Eb%2Fc.connected')
    expect(headersOf(ev.headers)).toEqual({ 'Nats-Msg-Id': 'gw-1:7:45' })
    expect(uplinkClientId('ferry', ev.subject, undefined)).toBe('a.b/c')
    // MQTT 5 properties: the same first headers left out, the property headers unchanged.
    const props = decodeEntry(encodeEntry({ clientId: 'd', topic: 'x/d', qos: 1, retain: false, packetId: 1, encoding: 1, payload: new Uint8Array([0xa0]), properties: { userProperties: [['k', 'v']] } }))
    expect(headersOf(uplinkMessage(props, 1, 1, ctx).headers)).toEqual({ 'Nats-Msg-Id': 'gw-1:1:1', 'Ferry-Prop-k': 'v' })
  })

  it('uplink headers - a consumer gets the same client id and content type from either form (property)', () => {
    const level = fc.string({ maxLength: 6 }).filter((s) => !s.includes('/') && !s.includes('\0'))
    fc.assert(
      fc.property(fc.string({ maxLength: 12 }), level, level, fc.boolean(), fc.constantFrom<PayloadEncoding>(1, 2, 3), (id, l1, l3, idAtTwo, encoding) => {
        const topic = idAtTwo && !id.includes('/') ? `${l1}/${id}/${l3}` : `${l1}/${l3}`
        const e = entry(id, topic, encoding)
        const read = (mode: UplinkHeaderMode): [string, string] => {
          const m = uplinkMessage(e, 5, 6, ctxOf(mode, true))
          const h = headersOf(m.headers)
          expect(subjectToTopic('ferry', m.subject)).toBe(topic)
          return [uplinkClientId('ferry', m.subject, h['Ferry-Client']), uplinkContentType(h['Content-Type'])]
        }
        const full = read('full')
        expect(full[0]).toBe(id)
        expect(read('compact')).toEqual(full)
      }),
      { numRuns: 300 },
    )
    expect(uplinkContentType(undefined)).toBe(CONTENT_TYPE_CBOR)
  })

  it('uplink headers - past its bound the encoder caches nothing more and stays exact', () => {
    const enc = new UplinkHeaderEncoder('gw', 'S', 'full')
    for (let i = 0; i < 10_050; i++) {
      const got = Buffer.from(enc.encode(1, i, `d${i % 10_020}`, 'application/cbor', false))
      if (i % 1000 === 0 || i > 10_000) expect(got).toEqual(Buffer.from(encodeUplinkHeaders(`gw:1:${i}`, 'S', `d${i % 10_020}`, 'application/cbor')))
    }
  })
})

describe('uplink headers - PubAck and reply subject fast paths', () => {
  it('puback fast path - agrees with the general path on stored, duplicate, error and foreign bodies', () => {
    const S = expectStream('FERRY')
    const bodies = [
      '{"stream":"FERRY", "seq":1}',
      '{"stream":"FERRY","seq":1,"duplicate":true}',
      '{"stream":"FERRY", "seq":1,"duplicate": true}',
      '{"stream":"FERRY", "domain":"error", "seq":7}',
      '{"stream":"FERRY","seq":0,"error":{"code":503,"description":"x"}}',
      '{"stream":"FERRY2", "seq":1}',
      '{"stream":"FERRY"',
      '{"error":{"code":400,"err_code":10054,"description":"too big"}}',
      'nothing',
    ]
    const expected = ['stored', 'duplicate', 'duplicate', 'stored', 'error', 'error', 'error', 'error', 'error']
    bodies.forEach((b, i) => {
      expect(classifyPubAck(Buffer.from(b), S).kind).toBe(expected[i])
      // A plain Uint8Array (not a Buffer) decides the same.
      expect(classifyPubAck(new Uint8Array(Buffer.from(b)), S)).toEqual(classifyPubAck(Buffer.from(b), S))
    })
  })

  it('reply subject - replySeq reads what parseReplySubject reads, NaN for anything else', () => {
    const inbox = '_FERRY.abc'
    for (const [seq, attempt] of [
      [1, 1],
      [123456789, 1],
      [42, 2],
      [7, 13],
    ] as const) {
      const s = replySubject(inbox, seq, attempt)
      expect(replySeq(inbox, s)).toBe(seq)
      expect(parseReplySubject(inbox, s)).toEqual({ seq, attempt })
    }
    expect(replySeq(inbox, `${inbox}.`)).toBeNaN()
    expect(replySeq(inbox, `${inbox}.12x`)).toBeNaN()
    expect(replySeq(inbox, `${inbox}._2`)).toBeNaN()
  })
})
