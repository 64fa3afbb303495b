// The backoff and pause shared by the forwarder's and the downlink's NATS connections (src/upstream).
import { describe, expect, it } from 'vitest'
import { Backoff, Pause } from '../../src/upstream/index.js'

describe('upstream - backoff', () => {
  it('upstream - the downlink backoff doubles from 250 ms to 10 s, without jitter', () => {
    const b = new Backoff({ minMs: 250, maxMs: 10_000, jitter: false })
    const waits = Array.from({ length: 8 }, () => b.next())
    expect(waits).toEqual([250, 500, 1000, 2000, 4000, 8000, 10_000, 10_000])
    expect(b.atMax).toBe(true)
    b.reset()
    expect(b.current).toBe(0)
    expect(b.next()).toBe(250)
  })

  it('upstream - the forwarder backoff draws each wait from [d/2, d)', () => {
    const b = new Backoff({ minMs: 100, maxMs: 5000, jitter: true })
    for (const d of [100, 200, 400, 800, 1600, 3200, 5000, 5000]) {
      const w = b.next()
      expect(b.current).toBe(d)
      expect(w).toBeGreaterThanOrEqual(d / 2)
      expect(w).toBeLessThan(d)
    }
  })

  it('upstream - wake() ends a pause at once', async () => {
    const p = new Pause()
    const t0 = performance.now()
    const slept = p.sleep(60_000)
    p.wake()
    await slept
    expect(performance.now() - t0).toBeLessThan(1000)
    p.wake() // nothing to wake: harmless
  })
})
