// MQTT 5 properties through the codec (issue 13): log entry version 3, the headers they become
// upstream, the payload rule for a declared Content Type, and the seq ranges of expired records.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  CONTENT_TYPE_UTF8_TEXT,
  ENTRY_VERSION,
  ENTRY_VERSION_PROPERTIES,
  PayloadPolicy,
  USER_PROPERTY_BYTES_MAX,
  USER_PROPERTY_HEADERS_MAX,
  decodeCbor,
  decodeEntry,
  encodeEntry,
  escapeHeaderName,
  isoTime,
  unescapeHeaderName,
  unescapeHeaderValue,
  uplinkMessage,
} from '../../src/codec/index.js'
import type { Entry, MessageProperties } from '../../src/codec/index.js'
import { FerryError } from '../../src/errors.js'
import { SeqRanges } from '../../src/forward/seq-ranges.js'

// Strings as MQTT carries them: valid UTF-8 (no lone surrogates), at most a few hundred bytes here.
const text = (maxLength: number) => fc.string({ unit: 'grapheme', maxLength })

const properties: fc.Arbitrary<MessageProperties> = fc.record(
  {
    expiresAtMs: fc.integer({ min: 0, max: 2 ** 47 }),
    contentType: text(40),
    utf8: fc.constant(true),
    userProperties: fc.array(fc.tuple(text(20), text(40)), { minLength: 1, maxLength: 8 }),
    responseTopic: text(40),
    correlationData: fc.uint8Array({ maxLength: 40 }),
  },
  { requiredKeys: [] },
)

const entry: fc.Arbitrary<Entry> = fc.record({
  clientId: fc.string({ maxLength: 60 }).filter((s) => Buffer.byteLength(s) <= 255),
  topic: text(60),
  qos: fc.constantFrom(0 as const, 1 as const, 2 as const),
  retain: fc.boolean(),
  packetId: fc.integer({ min: 0, max: 65535 }),
  encoding: fc.constantFrom(0 as const, 1 as const, 2 as const, 3 as const),
  payload: fc.uint8Array({ maxLength: 200 }),
  properties: fc.option(properties, { nil: undefined }),
})

/** What decodeEntry gives back for `e`: plain buffers, and no `properties` when nothing is kept. */
function normalised(e: Entry): unknown {
  const p = e.properties
  const kept: Record<string, unknown> = {}
  if (p?.expiresAtMs !== undefined) kept.expiresAtMs = p.expiresAtMs
  if (p?.contentType !== undefined) kept.contentType = p.contentType
  if (p?.utf8 === true) kept.utf8 = true
  if (p?.userProperties !== undefined && p.userProperties.length > 0) kept.userProperties = p.userProperties.map(([n, v]) => [n, v])
  if (p?.responseTopic !== undefined) kept.responseTopic = p.responseTopic
  if (p?.correlationData !== undefined) kept.correlationData = Buffer.from(p.correlationData)
  const { properties: _drop, ...rest } = e
  return { ...rest, payload: Buffer.from(e.payload), ...(Object.keys(kept).length > 0 ? { properties: kept } : {}) }
}

function plain(e: Entry): unknown {
  const p = e.properties
  return {
    ...e,
    payload: Buffer.from(e.payload),
    ...(p ? { properties: { ...p, ...(p.correlationData ? { correlationData: Buffer.from(p.correlationData) } : {}) } } : {}),
  }
}

const ctx = { gatewayId: 'gw-1', stream: 'FERRY', subjectPrefix: 'ferry', payloads: new PayloadPolicy(true, []) }

describe('entry version 3 - MQTT 5 properties in the log', () => {
  it('entry - any entry round-trips; version 2 exactly when no property is kept', () => {
    fc.assert(
      fc.property(entry, (e) => {
        const bytes = encodeEntry(e)
        const want = normalised(e) as { properties?: unknown }
        expect(bytes[0]).toBe(want.properties ? ENTRY_VERSION_PROPERTIES : ENTRY_VERSION)
        expect(plain(decodeEntry(bytes))).toEqual(want)
      }),
      { numRuns: 2000 },
    )
  })

  it('entry - without properties the bytes are those of version 2, unchanged', () => {
    const base = { clientId: 'c', topic: 'a/b', qos: 1 as const, retain: true, packetId: 7, encoding: 1 as const, payload: Buffer.from([0xa0]) }
    // version 2, flags (QoS 1, retain, encoding 1), packet id 7, lengths 1 and 3, 'c', 'a/b', payload
    expect(encodeEntry(base).toString('hex')).toBe('02' + '0d' + '0700' + '01' + '0300' + '63' + '612f62' + 'a0')
    expect(encodeEntry({ ...base, properties: {} })).toEqual(encodeEntry(base))
    expect(encodeEntry({ ...base, properties: { userProperties: [] } })).toEqual(encodeEntry(base))
    expect(decodeEntry(encodeEntry(base))).not.toHaveProperty('properties')
  })

  it('entry - the documented layout: presence byte, then the fields in bit order', () => {
    const b = encodeEntry({
      clientId: 'c',
      topic: 't',
      qos: 0,
      retain: false,
      packetId: 0,
      encoding: 3,
      payload: Buffer.from('P'),
      properties: { contentType: 'x', utf8: true, userProperties: [['k', 'v']], correlationData: Buffer.from([9]) },
    })
    const block = '2e' + '0100' + '78' + '01000000' + '0100' + '6b' + '0100' + '76' + '0100' + '09'
    expect(b.toString('hex')).toBe('03' + '18' + '0000' + '01' + '0100' + '63' + '74' + (block.length / 2).toString(16).padStart(2, '0') + '000000' + block + '50')
  })

  it('entry - decodeEntry throws only the codec error, whatever truncation or corruption', () => {
    fc.assert(
      fc.property(
        entry,
        fc.nat(),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 4 }),
        (e, cut, flips) => {
          const bytes = Buffer.from(encodeEntry(e))
          for (const [at, v] of flips) bytes[at % bytes.length] = v
          const damaged = bytes.subarray(0, cut % (bytes.length + 1))
          try {
            decodeEntry(damaged)
          } catch (err) {
            expect(err).toBeInstanceOf(FerryError)
            expect((err as FerryError).code).toBe('FERRY_ERR_CODEC_ENTRY')
          }
        },
      ),
      { numRuns: 5000 },
    )
    fc.assert(
      fc.property(fc.uint8Array({ maxLength: 80 }), fc.constantFrom(1, 2, 3), (bytes, version) => {
        if (bytes.length > 0) bytes[0] = version
        try {
          decodeEntry(bytes)
        } catch (err) {
          expect((err as FerryError).code).toBe('FERRY_ERR_CODEC_ENTRY')
        }
      }),
      { numRuns: 5000 },
    )
  })

  it('entry - refuses what MQTT could not have sent (codec error, not a RangeError)', () => {
    const e = { clientId: 'c', topic: 't', qos: 0 as const, retain: false, packetId: 0, payload: new Uint8Array(0) }
    expect(() => encodeEntry({ ...e, properties: { contentType: 'x'.repeat(65536) } })).toThrow(FerryError)
    expect(() => encodeEntry({ ...e, properties: { expiresAtMs: Number.NaN } })).toThrow(FerryError)
    expect(() => encodeEntry({ ...e, properties: { correlationData: new Uint8Array(65536) } })).toThrow(FerryError)
  })
})

describe('headers - MQTT 5 properties upstream', () => {
  it('headers - Ferry-Expires is exactly Date.toISOString, whatever the order of times', () => {
    const time = fc.oneof(fc.integer({ min: -8.64e15, max: 8.64e15 - 2 }), fc.integer({ min: Date.UTC(2020, 0), max: Date.UTC(2040, 0) }), fc.double({ min: -8.64e15, max: 8.64e15 - 2, noNaN: true }))
    fc.assert(
      fc.property(fc.array(time, { minLength: 1, maxLength: 20 }), (times) => {
        for (const t of times) expect(isoTime(t)).toBe(new Date(t).toISOString())
        for (const t of times) expect(isoTime(t + 1)).toBe(new Date(t + 1).toISOString()) // same day, cached date part
      }),
      { numRuns: 2000 },
    )
  })

  it('headers - any User Property name becomes a valid header name and back', () => {
    fc.assert(
      fc.property(text(30), (name) => {
        const escaped = escapeHeaderName(name)
        // What nats.js accepts in a header name: printable ASCII without ':'.
        expect(escaped).toMatch(/^[\x21-\x39\x3b-\x7e]*$/)
        expect(unescapeHeaderName(escaped)).toBe(name)
      }),
      { numRuns: 2000 },
    )
    expect(escapeHeaderName('temp.unit')).toBe('temp.unit')
    expect(escapeHeaderName('a b:c%')).toBe('a%20b%3Ac%25')
    expect(escapeHeaderName('é')).toBe('%C3%A9')
  })

  it('headers - an entry with properties: the pinned block', () => {
    const e = decodeEntry(
      encodeEntry({
        clientId: 'dev-1',
        topic: 'plant/t',
        qos: 1,
        retain: false,
        packetId: 3,
        encoding: 1,
        payload: Buffer.from([0xa0]),
        properties: { expiresAtMs: Date.UTC(2026, 11, 6, 16, 30, 0, 5), userProperties: [['unit', 'C'], ['a b', ' x\r\n'], ['unit', 'K']], responseTopic: 'r/1', correlationData: Buffer.from('ab') },
      }),
    )
    const m = uplinkMessage(e, 2, 9, ctx)
    expect(Buffer.from(m.headers).toString()).toBe(
      'NATS/1.0\r\nNats-Msg-Id: gw-1:2:9\r\nNats-Expected-Stream: FERRY\r\nFerry-Client: dev-1\r\nContent-Type: application/cbor\r\n' +
        'Ferry-Expires: 2026-12-06T16:30:00.005Z\r\nFerry-Response-Topic: r/1\r\nFerry-Correlation-Data: YWI=\r\n' +
        'Ferry-Prop-unit: C\r\nFerry-Prop-a%20b: %20x%0D%0A\r\nFerry-Prop-unit: K\r\n\r\n',
    )
    expect(m.omittedProperties).toBe(0)
    expect(unescapeHeaderValue('%20x%0D%0A')).toBe(' x\r\n')
  })

  it('headers - beyond the bounds, properties are omitted and counted', () => {
    const many = Array.from({ length: USER_PROPERTY_HEADERS_MAX + 5 }, (_, i) => [`p${i}`, 'v'] as const)
    const e = { clientId: 'd', topic: 't', qos: 0 as const, retain: false, packetId: 0, encoding: 3 as const, payload: new Uint8Array(0) }
    const m = uplinkMessage({ ...e, properties: { userProperties: many } }, 1, 1, ctx)
    const h = Buffer.from(m.headers).toString()
    expect(h.match(/^Ferry-Prop-/gm)).toHaveLength(USER_PROPERTY_HEADERS_MAX)
    expect(h).toContain('Ferry-Props-Omitted: 5\r\n')
    expect(m.omittedProperties).toBe(5)
    const big = uplinkMessage({ ...e, properties: { userProperties: [['a', 'x'.repeat(USER_PROPERTY_BYTES_MAX)], ['b', 'y']] } }, 1, 1, ctx)
    expect(Buffer.from(big.headers).toString()).not.toContain('Ferry-Prop-')
    expect(big.omittedProperties).toBe(2)
  })
})

describe('payloads - Content Type and Payload Format Indicator', () => {
  const json = Buffer.from('{"a":1}')

  it('payload policy - a declared Content Type keeps the payload as sent', () => {
    const policy = new PayloadPolicy(true, [])
    expect(policy.encode('t', json, { contentType: 'application/json' })).toEqual({ data: json, contentType: 'application/json' })
    expect(policy.encode('t', json, { contentType: 'application/octet-stream' })).toEqual({ data: json, contentType: 'application/octet-stream' })
    expect(policy.encode('t', json, { contentType: 'application/cbor' })).toEqual({ data: json, contentType: 'application/cbor' })
    expect(policy.encode('t', json, { contentType: 'text/x-mine' })).toEqual({ data: json, contentType: 'application/octet-stream' })
    expect(policy.encode('t', json, { utf8: true }).contentType).toBe('application/cbor') // UTF-8 JSON: transcoded as always
  })

  it('nats message - the declared Content Type goes upstream, escaped; UTF-8 text is labelled text/plain', () => {
    const e = { clientId: 'd', topic: 't', qos: 0 as const, retain: false, packetId: 0, encoding: 3 as const, payload: Buffer.from('hello') }
    const declared = uplinkMessage({ ...e, properties: { contentType: 'text/csv; x=\r\n' } }, 1, 1, ctx)
    expect(Buffer.from(declared.headers).toString()).toContain('\r\nContent-Type: text/csv; x=%0D%0A\r\n')
    expect(Buffer.from(declared.data).toString()).toBe('hello')
    const utf8 = uplinkMessage({ ...e, properties: { utf8: true } }, 1, 1, ctx)
    expect(Buffer.from(utf8.headers).toString()).toContain(`\r\nContent-Type: ${CONTENT_TYPE_UTF8_TEXT}\r\n`)
    // A version 3 entry stored before transcoding (encoding 0) honours the declared type too.
    const raw = uplinkMessage({ ...e, encoding: 0, payload: json, properties: { contentType: 'application/json' } }, 1, 1, ctx)
    expect(Buffer.from(raw.data).toString()).toBe('{"a":1}')
    const transcoded = uplinkMessage({ ...e, encoding: 0, payload: json, properties: { utf8: true } }, 1, 1, ctx)
    expect(decodeCbor(transcoded.data)).toEqual({ a: 1 })
    expect(Buffer.from(transcoded.headers).toString()).toContain('\r\nContent-Type: application/cbor\r\n')
  })
})

describe('seq ranges - expired records logged as ranges', () => {
  it('seq ranges - contiguous seqs coalesce; too many ranges are counted', () => {
    const r = new SeqRanges()
    expect(r.empty).toBe(true)
    for (const s of [3, 4, 5, 9, 11, 12]) r.add(s)
    expect(r.take()).toEqual({ records: 6, seqs: '3-5,9,11-12' })
    expect(r.empty).toBe(true)
    for (let s = 1; s <= 100; s += 2) r.add(s)
    const t = r.take()
    expect(t.records).toBe(50)
    expect(t.seqs.split(',')).toHaveLength(20)
    expect(t.seqs).toContain('(+30 more ranges)')
  })
})
