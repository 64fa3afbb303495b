// Codec laws: topic ↔ subject round-trips, JSON → CBOR keeps the value, entries round-trip.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { PayloadPolicy, canonicalDevice, canonicalLevels, decodeCbor, deviceToken, decodeEntry, encodeEntry, encodePayload, encodeUplinkHeaders, escapeHeaderValue, subjectToTopic, topicFilterProblem, topicMatches, topicToSubject, unescapeHeaderValue } from '../../src/codec/index.js'

const topicChars = fc.constantFrom('a', 'b', 'Z', '0', '.', '*', '>', ' ', '%', '/', '$', '-', '_', 'é', '\t', '\u007f', '中')
const topic = fc.array(topicChars, { minLength: 1, maxLength: 40 }).map((a) => a.join(''))

describe('codec', () => {
  it('subject - every topic maps to a valid subject and back', () => {
    fc.assert(
      fc.property(topic, (t) => {
        const s = topicToSubject('ferry.site1', t)
        expect(s.startsWith('ferry.site1.up.')).toBe(true)
        const tokens = s.split('.')
        expect(tokens.every((tok) => tok.length > 0 && !/[\s*>]/.test(tok))).toBe(true)
        expect(subjectToTopic('ferry.site1', s)).toBe(t)
      }),
      { numRuns: 2000 },
    )
  })

  it('subject - documented examples', () => {
    expect(topicToSubject('ferry', 'devices/d1/telemetry')).toBe('ferry.up.devices.d1.telemetry')
    expect(topicToSubject('ferry', 'a.b/c d')).toBe('ferry.up.a%2Eb.c%20d')
    expect(topicToSubject('ferry', '/x//')).toBe('ferry.up.%.x.%.%')
    expect(() => subjectToTopic('ferry', 'other.up.a')).toThrow(/not under/)
  })

  it('subject - a device token or topic level is accepted only in the form Ferry writes it', () => {
    fc.assert(
      fc.property(topic, (id) => {
        expect(canonicalDevice(deviceToken(id))).toBe(id)
        const tokens = topicToSubject('ferry', id).split('.').slice(2)
        expect(canonicalLevels(tokens)).toEqual(id.split('/'))
      }),
      { numRuns: 2000 },
    )
    // Other spellings of dev1 name no device, so a NATS permission on ferry.rpc.dev1.> means what it says.
    for (const t of ['%64ev1', 'dev%31', 'dev%2f1', 'a%', '%zz', '%%', 'x%4']) expect(canonicalDevice(t)).toBeUndefined()
    expect(canonicalDevice('dev1')).toBe('dev1')
    expect(canonicalDevice('a%2Fb')).toBe('a/b')
    expect(canonicalLevels(['x%zz'])).toEqual({ problem: expect.stringMatching(/"x%zz" has a "%" that is not an escape/) })
    expect(canonicalLevels(['re%62oot'])).toEqual({ problem: expect.stringMatching(/"re%62oot" is not in canonical form \(Ferry writes it "reboot"\)/) })
    expect(canonicalLevels(['a', '%', 'b%2Ec'])).toEqual(['a', '', 'b.c'])
  })

  it('payload - JSON becomes CBOR that decodes to the same value', () => {
    fc.assert(
      fc.property(fc.jsonValue(), (v) => {
        const text = JSON.stringify(v)
        const p = encodePayload(Buffer.from(text), true)
        if (p.contentType === 'application/cbor') {
          expect(decodeCbor(p.data)).toEqual(JSON.parse(text))
          expect(p.data.length).toBeLessThanOrEqual(text.length)
        } else {
          // JSON stays text only when CBOR would be larger or would round an integer beyond 2^53.
          expect(p.contentType).toBe('application/json')
          expect(Buffer.from(p.data).toString()).toBe(text)
        }
      }),
      { numRuns: 1000 },
    )
  })

  it('payload - CBOR is plain RFC 8949 (no record extension) and non-JSON passes unchanged', () => {
    expect(Buffer.from(encodePayload(Buffer.from('{"a":1}'), true).data).toString('hex')).toBe('a1616101')
    const badUtf8 = Buffer.from([0x22, 0xff, 0x22]) // "\xff": JSON.parse would turn it into U+FFFD
    expect(encodePayload(badUtf8, true).contentType).toBe('application/octet-stream')
    const bin = Buffer.from([0xff, 0x00, 0x7b])
    expect(encodePayload(bin, true)).toEqual({ data: bin, contentType: 'application/octet-stream' })
    expect(encodePayload(Buffer.from('{"a":1}'), false).contentType).toBe('application/octet-stream')
    // Integers JSON.parse would round stay as they are; so does JSON whose CBOR would be larger.
    expect(encodePayload(Buffer.from('{"id":12345678901234567890}'), true).contentType).toBe('application/json')
    expect(encodePayload(Buffer.from('[0.1,0.1,0.1,0.1]'), true).contentType).toBe('application/json')
    expect(encodePayload(Buffer.from('{"device":"d1","temp":21.5,"ok":true}'), true).contentType).toBe('application/cbor')
  })

  it('entry - round-trips', () => {
    fc.assert(
      fc.property(
        fc.string({ maxLength: 60 }),
        topic,
        fc.constantFrom(0 as const, 1 as const, 2 as const),
        fc.boolean(),
        fc.integer({ min: 0, max: 65535 }),
        fc.constantFrom(0 as const, 1 as const, 2 as const, 3 as const),
        fc.uint8Array({ maxLength: 300 }),
        (clientId, t, qos, retain, packetId, encoding, payload) => {
          const e = decodeEntry(encodeEntry({ clientId, topic: t, qos, retain, packetId, encoding, payload }))
          expect({ ...e, payload: Buffer.from(e.payload) }).toEqual({ clientId, topic: t, qos, retain, packetId, encoding, payload: Buffer.from(payload) })
        },
      ),
    )
  })

  it('entry - the version 2 bytes are the documented layout, for ASCII, non-ASCII and long client ids and topics', () => {
    const layout = (clientId: string, t: string, packetId: number, payload: Buffer): Buffer => {
      const cid = Buffer.from(clientId, 'utf8')
      const tb = Buffer.from(t, 'utf8')
      const head = Buffer.alloc(7)
      head[0] = 2
      head[1] = 1 | 4 | (1 << 3)
      head.writeUInt16LE(packetId, 2)
      head[4] = cid.length
      head.writeUInt16LE(tb.length, 5)
      return Buffer.concat([head, cid, tb, payload])
    }
    for (const [clientId, t] of [['dev-0001', 'devices/dev-0001/telemetry'], ['dév', 'a/中/b'], ['c'.repeat(64), 't'.repeat(64)], ['c'.repeat(65), 't'.repeat(300)], ['', ''], ['x\u007f', 'é'.repeat(40)]] as const) {
      const payload = Buffer.from([0xa1, 0x61, 0x61, 0x01])
      expect(encodeEntry({ clientId, topic: t, qos: 1, retain: true, packetId: 0x1234, encoding: 1, payload }).toString('hex')).toBe(layout(clientId, t, 0x1234, payload).toString('hex'))
    }
  })

  it('entry - version 1 entries (payload as the device sent it) are still read', () => {
    const v2 = encodeEntry({ clientId: 'c', topic: 'a/b', qos: 1, retain: false, packetId: 7, encoding: 1, payload: Buffer.from([0xa0]) })
    const v1 = Buffer.from(v2)
    v1[0] = 1
    v1[1] = 1 // flags of version 1: QoS only
    expect(decodeEntry(v1)).toMatchObject({ clientId: 'c', topic: 'a/b', qos: 1, packetId: 7, encoding: 0 })
    v1[0] = 4 // 3 is the version with MQTT 5 properties since issue 13
    expect(() => decodeEntry(v1)).toThrow(/unknown version 4/)
  })

  it('payload policy - --raw-topics and --cbor off keep payloads as sent', () => {
    const json = Buffer.from('{"a":1}')
    const policy = new PayloadPolicy(true, ['raw/#'])
    expect(policy.encode('t/x', json).contentType).toBe('application/cbor')
    expect(policy.encode('raw/x', json)).toEqual({ data: json, contentType: 'application/octet-stream' })
    expect(policy.encode('raw/x', json).contentType).toBe('application/octet-stream') // memoised
    expect(new PayloadPolicy(false, []).encode('t/x', json)).toEqual({ data: json, contentType: 'application/octet-stream' })
  })
})

describe('topic filters', () => {
  it('filters - MQTT 3.1.1 matching rules', () => {
    expect(topicMatches('a/+/c', 'a/b/c')).toBe(true)
    expect(topicMatches('a/+/c', 'a/b/d')).toBe(false)
    expect(topicMatches('a/#', 'a')).toBe(true) // [MQTT-4.7.1-2]: # also matches the parent
    expect(topicMatches('a/#', 'a/b/c')).toBe(true)
    expect(topicMatches('#', '$SYS/x')).toBe(false) // [MQTT-4.7.2-1]
    expect(topicMatches('+/x', '/x')).toBe(true)
    expect(topicMatches('a/b', 'a/b/c')).toBe(false)
    expect(topicFilterProblem('a/#/b')).toMatch(/last/)
    expect(topicFilterProblem('a/b+')).toMatch(/whole level/)
    expect(topicFilterProblem('a/+/#')).toBeUndefined()
  })
})

describe('headers', () => {
  it('headers - any client id becomes a valid header value and back', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'binary', maxLength: 40 }), (id) => {
        const v = escapeHeaderValue(id)
        expect(v).not.toMatch(/[\r\n\x00-\x1f\x7f]/)
        expect(unescapeHeaderValue(v)).toBe(id)
      }),
      { numRuns: 2000 },
    )
  })

  it('headers - the encoded block', () => {
    expect(Buffer.from(encodeUplinkHeaders('gw:1:7', 'FERRY', 'dev\r\n1', 'application/cbor')).toString()).toBe(
      'NATS/1.0\r\nNats-Msg-Id: gw:1:7\r\nNats-Expected-Stream: FERRY\r\nFerry-Client: dev%0D%0A1\r\nContent-Type: application/cbor\r\n\r\n',
    )
  })
})
