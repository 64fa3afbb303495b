// Partitioned subjects (--partitions N): partitionOf, both subject layouts, their round trips, and what
// consumers read from them (uplinkClientId, compact headers).
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import {
  PayloadPolicy,
  UplinkHeaderEncoder,
  UplinkSubjects,
  decodeEntry,
  encodeEntry,
  eventSubject,
  eventSubjectDevice,
  partitionOf,
  subjectPartition,
  subjectToTopic,
  tokenToDevice,
  topicToSubject,
  uplinkClientId,
  uplinkMessage,
} from '../../src/codec/index.js'

const topicChars = fc.constantFrom('a', 'b', 'Z', '0', '7', '.', '*', '>', ' ', '%', '/', '$', '-', '_', 'é', '\t', '\u007f', '中')
const topic = fc.array(topicChars, { minLength: 1, maxLength: 40 }).map((a) => a.join(''))
const clientId = fc.oneof(fc.string({ maxLength: 40 }), fc.string({ unit: 'grapheme', maxLength: 20 }), topic)
const partitions = fc.integer({ min: 1, max: 1024 })

const ctx = { gatewayId: 'gw-1', stream: 'FERRY', subjectPrefix: 'ferry', payloads: new PayloadPolicy(true, []) }

describe('partitions - partitionOf', () => {
  it('partitions - partitionOf is CRC-32 (IEEE) of the UTF-8 bytes mod N: the values Python zlib.crc32 gives', () => {
    // python3 -c 'import zlib; print(zlib.crc32("dev-1".encode()) % 4)'
    expect(partitionOf('dev-1', 4)).toBe(2279632790 % 4)
    expect(partitionOf('dev-1', 4)).toBe(2)
    expect(partitionOf('sim-00001', 16)).toBe(13)
    expect(partitionOf('gerät', 1024)).toBe(698)
    expect(partitionOf('', 4)).toBe(0)
    expect(partitionOf('a.b/c', 16)).toBe(12)
  })

  it('partitions - partitionOf is stable and in [0, N) for any client id and N', () => {
    fc.assert(
      fc.property(clientId, partitions, (id, n) => {
        const p = partitionOf(id, n)
        expect(Number.isInteger(p) && p >= 0 && p < n).toBe(true)
        expect(partitionOf(id, n)).toBe(p)
        expect(partitionOf(String(id), n)).toBe(partitionOf(Buffer.from(id, 'utf8').toString('utf8'), n))
      }),
    )
  })

  it('partitions - partitionOf refuses N that is not an integer >= 1', () => {
    for (const n of [0, -1, 1.5, Number.NaN]) expect(() => partitionOf('d', n)).toThrow(/partitions must be an integer >= 1/)
  })

  it('partitions - many devices spread over the partitions', () => {
    const counts = [0, 0, 0, 0]
    for (let i = 0; i < 4000; i++) counts[partitionOf(`sim-${String(i).padStart(5, '0')}`, 4)]!++
    for (const c of counts) expect(c).toBeGreaterThan(800)
  })
})

describe('partitions - subject layouts', () => {
  it('partitions - both layouts of uplink and event subjects, pinned', () => {
    expect(topicToSubject('ferry', 'site.a/dev 1')).toBe('ferry.up.site%2Ea.dev%201')
    expect(topicToSubject('ferry', 'site.a/dev 1', 3)).toBe('ferry.up.3.site%2Ea.dev%201')
    expect(eventSubject('ferry', 'dev.1', 'connected')).toBe('ferry.events.dev%2E1.connected')
    expect(eventSubject('ferry', 'dev.1', 'connected', 0)).toBe('ferry.events.0.dev%2E1.connected')
    expect(subjectToTopic('ferry', 'ferry.up.3.site%2Ea.dev%201')).toBe('3/site.a/dev 1') // old call: the old layout
    expect(subjectToTopic('ferry', 'ferry.up.3.site%2Ea.dev%201', 4)).toBe('site.a/dev 1')
    expect(subjectPartition('ferry', 'ferry.up.3.site%2Ea.dev%201', 4)).toBe(3)
    expect(subjectPartition('ferry', 'ferry.events.0.dev%2E1.connected', 4)).toBe(0)
    expect(eventSubjectDevice('ferry', 'ferry.events.0.dev%2E1.connected', 4)).toBe('dev%2E1')
    expect(eventSubjectDevice('ferry', 'ferry.events.dev%2E1.connected')).toBe('dev%2E1')
    expect(eventSubjectDevice('ferry', 'ferry.up.dev.connected')).toBeUndefined()
  })

  it('partitions - a subject without a valid partition token is refused by the partitioned reading', () => {
    for (const s of ['ferry.up.4.a', 'ferry.up.07.a', 'ferry.up.+1.a', 'ferry.up.a.b', 'ferry.up.3', 'ferry.up.3.', 'ferry.up.', 'other.up.1.a', 'ferry.up.%.a']) {
      expect(() => subjectToTopic('ferry', s, 4), s).toThrow(/FERRY_ERR_CODEC_SUBJECT|is not under/)
    }
    expect(() => subjectPartition('ferry', 'ferry.events.9.d.connected', 4)).toThrow(/partition p in \[0, 4\)/)
    expect(eventSubjectDevice('ferry', 'ferry.events.d.connected', 4)).toBeUndefined()
  })

  it('partitions - for any client id, topic and N, subjectToTopic(partitioned subject) round-trips and the token is the client id\'s partition', () => {
    fc.assert(
      fc.property(clientId, topic, partitions, (id, t, n) => {
        const p = partitionOf(id, n)
        const s = topicToSubject('ferry', t, p)
        expect(subjectToTopic('ferry', s, n)).toBe(t)
        expect(subjectPartition('ferry', s, n)).toBe(p)
        // The old layout is unchanged and still round-trips with the old call.
        expect(subjectToTopic('ferry', topicToSubject('ferry', t))).toBe(t)
        const ev = eventSubject('ferry', id, 'connected', p)
        expect(tokenToDevice(eventSubjectDevice('ferry', ev, n)!)).toBe(id)
        expect(subjectPartition('ferry', ev, n)).toBe(p)
      }),
    )
  })

  it('partitions - UplinkSubjects (the forwarder\'s memo) gives the subjects topicToSubject gives, in both layouts, past its bounds', () => {
    fc.assert(
      fc.property(fc.array(fc.tuple(clientId, topic), { minLength: 1, maxLength: 30 }), fc.integer({ min: 0, max: 64 }), (pairs, n) => {
        const memo = new UplinkSubjects('ferry', n)
        for (let round = 0; round < 2; round++) {
          for (const [id, t] of pairs) expect(memo.of(t, id)).toBe(topicToSubject('ferry', t, n > 0 ? partitionOf(id, n) : undefined))
        }
      }),
    )
    const memo = new UplinkSubjects('ferry', 4)
    for (let i = 0; i < 10_050; i++) expect(memo.of(`t/${i}`, `d${i}`)).toBe(topicToSubject('ferry', `t/${i}`, partitionOf(`d${i}`, 4)))
    expect(memo.of('t/0', 'd0')).toBe(topicToSubject('ferry', 't/0', partitionOf('d0', 4)))
    expect(() => new UplinkSubjects('ferry', -1)).toThrow()
    // Clients taking turns on one topic: each gets its own partition every time.
    const shared = new UplinkSubjects('ferry', 16)
    const turns = ['a', 'b', 'gerät', 'a', 'a', 'b', 'sim-00001', 'a']
    for (const id of turns) expect(shared.of('telemetry', id)).toBe(`ferry.up.${partitionOf(id, 16)}.telemetry`)
    expect(new Set(turns.map((id) => partitionOf(id, 16))).size).toBeGreaterThan(1)
  })
})

describe('partitions - uplink messages and consumers', () => {
  const entry = (clientId: string, topic: string): ReturnType<typeof decodeEntry> =>
    decodeEntry(encodeEntry({ clientId, topic, qos: 1, retain: false, packetId: 1, encoding: 1, payload: new Uint8Array([0xa0]) }))

  it('partitions - uplinkMessage puts the partition into device and event subjects (with or without the memo)', () => {
    const p = partitionOf('dev-1', 4)
    expect(uplinkMessage(entry('dev-1', 'devices/dev-1/telemetry'), 1, 1, { ...ctx, partitions: 4 }).subject).toBe(`ferry.up.${p}.devices.dev-1.telemetry`)
    const memo = new UplinkSubjects('ferry', 4)
    expect(uplinkMessage(entry('dev-1', 'devices/dev-1/telemetry'), 1, 1, { ...ctx, partitions: 4, subjectOf: (t, id) => memo.of(t, id) }).subject).toBe(`ferry.up.${p}.devices.dev-1.telemetry`)
    expect(uplinkMessage(entry('dev-1', '$ferry/events/connected'), 1, 1, { ...ctx, partitions: 4 }).subject).toBe(`ferry.events.${p}.dev-1.connected`)
    // partitions 0 = the old layout, byte for byte.
    expect(uplinkMessage(entry('dev-1', 'devices/dev-1/telemetry'), 1, 1, { ...ctx, partitions: 0 }).subject).toBe('ferry.up.devices.dev-1.telemetry')
    expect(uplinkMessage(entry('dev-1', '$ferry/events/connected'), 1, 1, ctx).subject).toBe('ferry.events.dev-1.connected')
  })

  it('partitions - compact headers: Ferry-Client is left out exactly as without partitions, and uplinkClientId recovers it from the partitioned subject', () => {
    fc.assert(
      fc.property(clientId, fc.constantFrom('devices/{id}/telemetry', 'x/{id}', '{id}/x', 'a/b', '$ferry/events/connected'), partitions, (id, shape, n) => {
        const t = shape.replace('{id}', () => id)
        const c = { ...ctx, headerMode: 'compact' as const }
        const plain = uplinkMessage(entry(id, t), 1, 1, c)
        const encoder = new UplinkHeaderEncoder('gw-1', 'FERRY', 'compact')
        const part = uplinkMessage(entry(id, t), 1, 1, { ...c, partitions: n, headerEncoder: encoder })
        expect(Buffer.from(part.headers).toString('utf8')).toBe(Buffer.from(plain.headers).toString('utf8'))
        const h = /Ferry-Client: ([^\r]*)\r\n/.exec(Buffer.from(part.headers).toString('utf8'))?.[1]
        if (!t.startsWith('$ferry/') && t.split('/')[1] !== id) {
          expect(h).toBeDefined()
          return
        }
        expect(uplinkClientId('ferry', part.subject, h, n)).toBe(id)
        expect(uplinkClientId('ferry', plain.subject, h)).toBe(id)
      }),
    )
  })
})
