// The TLS handshake limiter: handshakes in progress, per-address rate, and the cost of a failure.
import { describe, expect, it } from 'vitest'
import { FAILED_HANDSHAKE_COST, HandshakeLimiter } from '../../src/ingress/limits.js'

describe('handshake limiter', () => {
  it('limits - beyond the handshakes in progress the limiter says so (the caller ends the oldest); one that ends frees its place', () => {
    const l = new HandshakeLimiter(2, 1000)
    expect(l.refuse('a')).toBeUndefined()
    expect(l.refuse('b')).toBeUndefined()
    expect(l.over).toBe(false)
    expect(l.refuse('c')).toBeUndefined()
    expect(l.over).toBe(true)
    l.done()
    expect(l.over).toBe(false)
  })

  it('limits - one address gets its rate in a burst, then is refused; other addresses are not', () => {
    const l = new HandshakeLimiter(1000, 5)
    for (let i = 0; i < 5; i++) expect(l.refuse('a')).toBeUndefined()
    expect(l.refuse('a')).toBe('tls_handshake_rate')
    expect(l.refuse('b')).toBeUndefined()
  })

  it('limits - a failed handshake costs its address more tokens', () => {
    const l = new HandshakeLimiter(1000, 1 + FAILED_HANDSHAKE_COST)
    expect(l.refuse('a')).toBeUndefined()
    l.done()
    l.failed('a')
    expect(l.refuse('a')).toBe('tls_handshake_rate')
    expect(l.refuse('b')).toBeUndefined()
  })
})
