// DrainPacer (--drain-max-rate): a token bucket shared by the forwarders, on a fake clock.
import { describe, expect, it } from 'vitest'
import { DrainPacer } from '../../src/forward/pacer.js'

function clocked(rate: { messagesPerSecond: number; bytesPerSecond: number }): { pacer: DrainPacer; advance: (ms: number) => void } {
  let t = 1000
  const pacer = new DrainPacer(rate, () => t)
  return { pacer, advance: (ms) => (t += ms) }
}

/** A paced sender taking what it may, waiting when told, for `ms` of fake time; returns what it sent. */
function drain(p: { pacer: DrainPacer; advance: (ms: number) => void }, ms: number, recordBytes: number, unpaced?: { perMs: number }): { messages: number; bytes: number } {
  let sent = 0
  let bytes = 0
  let elapsed = 0
  while (elapsed < ms) {
    const a = p.pacer.allowance()
    if (a.messages === 0) {
      const w = p.pacer.waitMs()
      expect(w).toBeGreaterThan(0)
      const step = Math.min(w, 5)
      p.advance(step)
      elapsed += step
      if (unpaced) p.pacer.debit(unpaced.perMs * step, unpaced.perMs * step * recordBytes)
      continue
    }
    // The reader takes up to a.messages records and about a.bytes bytes (at least one record).
    let n = 0
    let b = 0
    while (n < Math.min(a.messages, 64) && (n === 0 || b < a.bytes)) {
      n++
      b += recordBytes
    }
    p.pacer.debit(n, b)
    sent += n
    bytes += b
  }
  return { messages: sent, bytes }
}

describe('drain pacer - token bucket', () => {
  it('drain pacer - no cap: never waits, allowance unlimited, cap Infinity', () => {
    const { pacer } = clocked({ messagesPerSecond: 0, bytesPerSecond: 0 })
    expect(pacer.unlimited).toBe(true)
    expect(pacer.allowance()).toEqual({ messages: Infinity, bytes: Infinity })
    pacer.debit(1e9, 1e12)
    expect(pacer.waitMs()).toBe(0)
    expect(pacer.capMessagesPerSecond(100)).toBe(Infinity)
  })

  it('drain pacer - messages cap: a burst of one second, then the cap over a long window', () => {
    const p = clocked({ messagesPerSecond: 2000, bytesPerSecond: 0 })
    expect(p.pacer.allowance().messages).toBe(2000) // the burst
    const r = drain(p, 10_000, 150)
    // 10 s at 2000/s plus the initial burst of 2000.
    expect(r.messages).toBeGreaterThanOrEqual(21_900)
    expect(r.messages).toBeLessThanOrEqual(22_100)
    expect(p.pacer.capMessagesPerSecond(150)).toBe(2000)
  })

  it('drain pacer - bytes cap: the byte rate is kept, records larger than the burst still go', () => {
    const p = clocked({ messagesPerSecond: 0, bytesPerSecond: 100_000 })
    const r = drain(p, 10_000, 1000)
    expect(r.bytes).toBeGreaterThanOrEqual(1_090_000)
    expect(r.bytes).toBeLessThanOrEqual(1_110_000 + 1000)
    expect(p.pacer.capMessagesPerSecond(1000)).toBe(100)
    // A record of 300 kB (3 s worth) goes once the bucket is positive; the debt then delays the next.
    const big = clocked({ messagesPerSecond: 0, bytesPerSecond: 100_000 })
    expect(big.pacer.allowance().messages).toBe(Infinity)
    big.pacer.debit(1, 300_000)
    expect(big.pacer.allowance().messages).toBe(0)
    // Debt floor: one burst (100 kB) below zero, so about 1 s + a chunk, not 2 s.
    expect(big.pacer.waitMs()).toBeGreaterThan(1000)
    expect(big.pacer.waitMs()).toBeLessThanOrEqual(1100)
  })

  it('drain pacer - both caps: the tighter one rules', () => {
    const p = clocked({ messagesPerSecond: 1000, bytesPerSecond: 50_000 })
    expect(p.pacer.capMessagesPerSecond(100)).toBe(500)
    expect(p.pacer.capMessagesPerSecond(10)).toBe(1000)
    const r = drain(p, 10_000, 100)
    expect(r.messages).toBeGreaterThanOrEqual(5400) // 10 s x 500 + burst 500
    expect(r.messages).toBeLessThanOrEqual(5600)
  })

  it('drain pacer - unpaced traffic is debited: the paced drain gets what is left of the cap', () => {
    const p = clocked({ messagesPerSecond: 2000, bytesPerSecond: 0 })
    // 0.5 msg/ms = 500/s of live or high-priority traffic that never waits.
    const r = drain(p, 10_000, 150, { perMs: 0.5 })
    expect(r.messages).toBeGreaterThanOrEqual(2000 + 15_000 - 300)
    expect(r.messages).toBeLessThanOrEqual(2000 + 15_000 + 300)
  })

  it('drain pacer - a slow cap waits for whole messages and never lets nothing through', () => {
    const p = clocked({ messagesPerSecond: 0.5, bytesPerSecond: 0 })
    expect(p.pacer.allowance().messages).toBe(1) // burst: at least one message
    p.pacer.debit(1, 10)
    expect(p.pacer.allowance().messages).toBe(0)
    expect(p.pacer.waitMs()).toBe(2000)
    p.advance(2000)
    expect(p.pacer.allowance().messages).toBe(1)
  })

  it('drain pacer - refuses a negative or non-finite rate', () => {
    expect(() => new DrainPacer({ messagesPerSecond: -1, bytesPerSecond: 0 })).toThrow(RangeError)
    expect(() => new DrainPacer({ messagesPerSecond: 0, bytesPerSecond: Number.NaN })).toThrow(RangeError)
  })
})

describe('drain pacer - review', () => {
  it('drain pacer - review: records larger than one second of the byte cap still drain at the cap', () => {
    // 300 kB records at 100 kB/s from a paced sender: one record every 3 s, not one a second (the debt of a
    // paced send is its own: only the debt of unpaced traffic is bounded).
    const p = clocked({ messagesPerSecond: 0, bytesPerSecond: 100_000 })
    let bytes = 0
    for (let t = 0; t < 30_000; ) {
      if (p.pacer.allowance().messages === 0) {
        const w = p.pacer.waitMs()
        p.advance(w)
        t += w
        continue
      }
      p.pacer.debit(1, 300_000, true)
      bytes += 300_000
    }
    // 30 s at 100 kB/s, plus the burst and one record of overshoot.
    expect(bytes).toBeLessThanOrEqual(30 * 100_000 * 1.1 + 100_000 + 300_000)
    expect(bytes).toBeGreaterThanOrEqual(30 * 100_000 * 0.9)
    // An unpaced debit (live lane, probe, class high) never lifts a paced sender's deeper debt.
    const q = clocked({ messagesPerSecond: 0, bytesPerSecond: 100_000 })
    q.pacer.debit(1, 300_000, true)
    q.pacer.debit(1, 10)
    expect(q.pacer.waitMs()).toBeGreaterThan(2000)
  })

  it('drain pacer - review: a wait is never longer than a timer can hold (a 64 MiB record under 1 B/s)', () => {
    const p = clocked({ messagesPerSecond: 0, bytesPerSecond: 1 })
    p.pacer.debit(1, 64 * 1024 * 1024, true)
    // setTimeout fires after 1 ms for a delay above 2^31 - 1 ms: the pacing wait would spin. The caller asks again after a bounded wait.
    expect(p.pacer.waitMs()).toBeGreaterThan(0)
    expect(p.pacer.waitMs()).toBeLessThanOrEqual(60_000)
  })
})
