// The retransmission memory: what counts as a resend, and its bound.
import { describe, expect, it } from 'vitest'
import { RetransmitIndex } from '../../src/ingress/index.js'

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
