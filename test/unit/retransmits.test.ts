// The retransmission memory: what counts as a resend (and what, with the same packet id and bytes, is new), time, and the bound.
import { describe, expect, it } from 'vitest'
import { crc32 } from 'node:zlib'
import { RetransmitIndex, retransmitHash } from '../../src/ingress/index.js'

describe('retransmits', () => {
  it('retransmits - DUP or a new connection within the window; never the same connection without DUP', () => {
    const r = new RetransmitIndex(10, 1000)
    r.add('dev', 7, 0xabc, 1, 0)
    expect(r.find('dev', 7, 0xabc, 1, true, 10)).toBeDefined() // DUP
    expect(r.find('dev', 7, 0xabc, 1, false, 10)).toBeUndefined() // same connection, reused id
    expect(r.find('dev', 7, 0xabc, 2, false, 10)).toBeDefined() // new connection (MQTT.js resend)
    expect(r.find('dev', 7, 0xabc, 2, false, 5000)).toBeUndefined() // outside the window
    expect(r.find('dev', 7, 0xdef, 2, true, 10)).toBeUndefined() // other payload
    expect(r.find('other', 7, 0xabc, 2, true, 10)).toBeUndefined() // other client
  })

  it('retransmits - bounded: the oldest entries are forgotten, size never exceeds capacity', () => {
    const r = new RetransmitIndex(100, 1000)
    for (let i = 1; i <= 1000; i++) r.add('dev', i, i, 1, 0)
    expect(r.size).toBe(100)
    expect(r.find('dev', 1000, 1000, 1, true, 0)).toBeDefined()
    expect(r.find('dev', 900, 900, 1, true, 0)).toBeUndefined()
    r.add('dev', 1000, 1, 1, 0) // stored again: takes a new slot (evicting the oldest); its old slot no longer evicts it
    expect(r.size).toBeLessThanOrEqual(100)
    for (let i = 2000; i < 2099; i++) r.add('dev', i, i, 1, 0) // 99 more: the re-added key survives
    expect(r.find('dev', 1000, 1, 1, true, 0)).toBeDefined()
    expect(r.size).toBeLessThanOrEqual(100)
  })
})

describe('retransmits - hash and bound (issue 14: cheaper per publish, same rule)', () => {
  it('retransmits - the hash is CRC-32 of the topic (UTF-8) continued over the stored payload, for any topic, cached or not', () => {
    const payload = Buffer.from('{"t":21.5}')
    for (let i = 0; i < 10_050; i++) {
      const topic = i % 3 === 0 ? `devices/d${i}/telemetry` : i % 3 === 1 ? `dispositifs/é${i}/中` : 'devices/d1/telemetry'
      expect(retransmitHash(topic, payload)).toBe(crc32(payload, crc32(Buffer.from(topic, 'utf8'))))
    }
  })

  it('retransmits - otherCrcs gets topic and payload, and is asked only when all but the CRC matches', () => {
    const r = new RetransmitIndex(10, 1000)
    const payload = Buffer.from('x')
    r.add('dev', 7, 0xabc, 1, 0)
    const asked: [string, Uint8Array][] = []
    const other = (topic: string, p: Uint8Array): number[] => {
      asked.push([topic, p])
      return [0xabc]
    }
    expect(r.find('dev', 8, 0xdef, 1, true, 10, other, 'a/b', payload)).toBeUndefined()
    expect(asked).toEqual([])
    expect(r.find('dev', 7, 0xdef, 1, true, 10, other, 'a/b', payload)).toBeDefined()
    expect(asked).toEqual([['a/b', payload]])
  })

  it('retransmits - a client forgotten entirely and seen again keeps its new entries when the old slots come round', () => {
    const r = new RetransmitIndex(4, 1000)
    const a1 = r.add('a', 1, 1, 1, 0)
    r.forget('a', 1, a1) // its state is dropped
    r.add('a', 2, 2, 1, 0) // a new state for 'a'
    for (let i = 10; i < 13; i++) r.add('b', i, i, 1, 0) // the ring comes round to the first slot (a1), then 'a' 2 stays
    expect(r.find('a', 2, 2, 1, true, 0)).toBeDefined()
    expect(r.size).toBe(4)
    r.add('b', 13, 13, 1, 0) // evicts 'a' 2
    expect(r.find('a', 2, 2, 1, true, 0)).toBeUndefined()
    expect(r.size).toBe(4)
  })
})

/** A clock for the index: wall and monotonic readings at construction (the only time it reads them). */
function clockAt(wallMs: number, monotonicMs: number): { wallMs(): number; monotonicMs(): number } {
  return { wallMs: () => wallMs, monotonicMs: () => monotonicMs }
}

const W = 1_700_000_000_000 // a wall-clock time
const M = 5_000_000 // a monotonic time
const WINDOW = 300_000

describe('retransmits - time', () => {
  it('retransmits - this run: the window is monotonic time, so a wall clock stepped back neither widens it nor, stepped forward, shrinks it', () => {
    // Ingress passes performance.now(); the index never reads the wall clock for these.
    const r = new RetransmitIndex(10, WINDOW, clockAt(W, M))
    r.add('dev', 7, 0xabc, 1, M)
    r.add('dev', 8, 0xabc, 1, M)
    expect(r.find('dev', 7, 0xabc, 2, false, M + 1_000)).toBeDefined() // 1 s later (whatever the wall clock says)
    expect(r.find('dev', 8, 0xabc, 3, false, M + WINDOW + 1)).toBeUndefined() // just over 5 min later (even if the wall clock was set back an hour)
  })

  it('retransmits - read back from the log: aged from the wall clock at start; a clock now behind the log counts no downtime; later records than the log end are outside', () => {
    // One device per entry: a device's later record 30 s after would settle the earlier one anyway.
    // Sane clock: the log ends 1 s before our start.
    const sane = new RetransmitIndex(10, WINDOW, clockAt(W, M))
    sane.add('a', 1, 0xa, 0, W - 60_000)
    sane.add('b', 1, 0xb, 0, W - 1_000)
    expect(sane.find('a', 1, 0xa, 1, false, M + 10_000)).toBeDefined() // 70 s old
    expect(sane.find('b', 1, 0xb, 2, false, M + WINDOW)).toBeUndefined() // 301 s old

    // The wall clock at start is an hour behind the log (set back, or restored stale at boot).
    const behind = new RetransmitIndex(10, WINDOW, clockAt(W - 3_600_000, M))
    behind.add('a', 1, 0xa, 0, W - 400_000) // 399 s before the log's end: stays old
    behind.add('b', 1, 0xb, 0, W - 2_000)
    behind.add('c', 1, 0xc, 0, W - 1_000)
    expect(behind.find('a', 1, 0xa, 1, false, M)).toBeUndefined()
    expect(behind.find('b', 1, 0xb, 2, false, M + 10_000)).toBeDefined() // 11 s old: a resend after the restart is recognised

    // A record received after the log's newest: stored before the clock was set back during that run.
    const stepped = new RetransmitIndex(10, WINDOW, clockAt(W, M))
    stepped.add('a', 1, 0xa, 0, W - 1_000)
    stepped.add('b', 1, 0xb, 0, W - 3_600_000) // the log's newest record
    expect(stepped.find('a', 1, 0xa, 1, false, M)).toBeUndefined()
    expect(stepped.find('a', 1, 0xa, 1, true, M)).toBeDefined() // DUP still says so
  })
})

describe('retransmits - a new message with the same packet id and bytes', () => {
  it('retransmits - deep sleep: after the device ended its connection with DISCONNECT, nothing is a resend without DUP', () => {
    const r = new RetransmitIndex(10, WINDOW)
    r.add('sensor', 1, 0x1234, 1, M) // wake 1: stored, PUBACKed, then DISCONNECT
    r.ended('sensor')
    expect(r.find('sensor', 1, 0x1234, 2, false, M + 60_000)).toBeUndefined() // wake 2: a new reading
    expect(r.find('sensor', 1, 0x1234, 2, true, M + 60_000)).toBeDefined() // a resend with DUP is still one
    // Without DISCONNECT (slept, or the link dropped) it cannot be told from a resend: the one misjudgement left.
    r.add('other', 1, 0x1234, 3, M)
    expect(r.find('other', 1, 0x1234, 4, false, M + 60_000)).toBeDefined()
  })

  it('retransmits - only the first publishes of a connection: after something new on it, nothing without DUP is a resend, nor later the connections before it', () => {
    const r = new RetransmitIndex(10, WINDOW)
    r.add('dev', 1, 0xa, 1, M)
    r.add('dev', 2, 0xb, 1, M)
    r.add('dev', 3, 0xc, 1, M) // connection 1 drops with 2 and 3 maybe unacknowledged
    expect(r.find('dev', 2, 0xb, 2, false, M + 1_000)).toBeDefined() // connection 2 resends 2
    r.add('dev', 9, 0xd, 2, M + 2_000) // then sends something new: it has resent all it had to
    expect(r.find('dev', 3, 0xc, 2, false, M + 3_000)).toBeUndefined()
    // Connection 3: connection 1's entries are settled (3 was not resent on 2, so it was acknowledged);
    // what connection 2 resent or stored may be in flight again.
    expect(r.find('dev', 3, 0xc, 3, false, M + 4_000)).toBeUndefined()
    expect(r.find('dev', 2, 0xb, 3, false, M + 4_000)).toBeDefined()
    expect(r.find('dev', 9, 0xd, 3, false, M + 4_000)).toBeDefined()
  })

  it('retransmits - a later publish on the same connection 30 s after its PUBACK settles it, also while the next connection resends', () => {
    const r = new RetransmitIndex(10, WINDOW)
    r.add('dev', 1, 0xa, 1, M)
    r.add('dev', 2, 0xb, 1, M + 29_000)
    r.add('dev', 3, 0xc, 1, M + 30_000) // carried 30 s after 1's PUBACK: 1 got through; 2 may not have
    expect(r.find('dev', 1, 0xa, 2, false, M + 31_000)).toBeUndefined()
    expect(r.find('dev', 2, 0xb, 2, false, M + 31_000)).toBeDefined()
    expect(r.find('dev', 1, 0xa, 2, false, M + 32_000)).toBeUndefined() // still, after connection 2 resent 2
    expect(r.find('dev', 3, 0xc, 2, false, M + 32_000)).toBeDefined()
  })

  it('retransmits - read back from the log: a later record of the device 30 s after settles it', () => {
    const r = new RetransmitIndex(10, WINDOW, clockAt(W, M))
    r.add('dev', 1, 0xa, 0, W - 40_000)
    r.add('dev', 2, 0xb, 0, W - 5_000)
    expect(r.find('dev', 1, 0xa, 1, false, M + 1_000)).toBeUndefined()
    expect(r.find('dev', 2, 0xb, 1, false, M + 1_000)).toBeDefined()
  })

  it('retransmits - resends across several reconnects: what a connection resent and what it did not get to are still resends on the next', () => {
    const r = new RetransmitIndex(10, WINDOW)
    for (let id = 6; id <= 10; id++) r.add('dev', id, id, 1, M + id)
    expect(r.find('dev', 6, 6, 2, false, M + 1_000)).toBeDefined() // connection 2 resends 6, then drops
    expect(r.find('dev', 6, 6, 3, false, M + 2_000)).toBeDefined() // connection 3 resends 6 to 10
    for (let id = 7; id <= 10; id++) expect(r.find('dev', id, id, 3, false, M + 2_000)).toBeDefined()
    expect(r.find('dev', 6, 6, 3, false, M + 2_000)).toBeUndefined() // the same connection without DUP: new
  })
})
