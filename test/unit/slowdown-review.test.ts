// Review of the --max-forward-lag slow-down: edge cases found in review.
import { describe, expect, it } from 'vitest'
import { loadConfig, parseSeconds } from '../../src/config/index.js'
import { PubackGate } from '../../src/ingress/index.js'
import type { MqttClientRef } from '../../src/ingress/index.js'
import { createMetrics } from '../../src/metrics/index.js'

/** A gate slowing (lag over the bound, healthy), driven by hand; `reads` counts reads of its queue's slots. */
function slowingGate(): { gate: PubackGate; reads: () => number } {
  const gate = new PubackGate({ maxLagMs: 1000, lagMs: () => 5000, healthy: () => true, forwarded: () => 0, metrics: createMetrics(), manual: true })
  gate.tick()
  // White box: the held PUBACKs' queue, watched through a proxy (work in proportion to slots read).
  const g = gate as unknown as { queue: unknown[] }
  let reads = 0
  g.queue = new Proxy(g.queue, {
    get(target, key, receiver) {
      if (typeof key === 'string' && /^\d+$/.test(key)) reads++
      return Reflect.get(target, key, receiver) as unknown
    },
  })
  return { gate, reads: () => reads }
}

describe('slowdown review', () => {
  it('slowdown review - a positive --max-forward-lag under 1 ms is refused, not silently taken as 0 (off)', () => {
    const load = (argv: string[], env: Record<string, string> = {}) => loadConfig({ argv, env, hostname: 'h' })
    // 0 means "never slow down": a tiny positive bound must not turn into it by rounding.
    expect(parseSeconds('0.0004')).toBeUndefined()
    expect(parseSeconds('0.4ms')).toBeUndefined()
    expect(parseSeconds(0.0004)).toBeUndefined()
    expect(() => load(['--max-forward-lag', '0.0004'])).toThrow(/'forward.maxLag' \(flag --max-forward-lag\) must be/)
    expect(() => load([], { FERRY_MAX_FORWARD_LAG: '0.4ms' })).toThrow(/environment FERRY_MAX_FORWARD_LAG/)
    // Still fine: 0 (off), 1 ms, and values that round to a whole millisecond.
    expect(load(['--max-forward-lag', '0']).forward.maxLag).toBe(0)
    expect(load(['--max-forward-lag', '0.001']).forward.maxLag).toBe(1)
    expect(load(['--max-forward-lag', '0.0015']).forward.maxLag).toBe(2)
  })

  // A fleet's connections dropping together (a site's link fails) while PUBACKs are held: each
  // 'disconnected' event scanned everything held, so N devices cost N x (everything held): with
  // 10,000 devices x 10 held, seconds of a blocked event loop. Likewise each resend (join) scanned it all.
  it('slowdown review - a client going away, or resending, costs in proportion to its own held PUBACKs, not to everything held', () => {
    const CLIENTS = 1000
    const PER = 4
    const clients = Array.from({ length: CLIENTS }, (_, i) => ({ id: `c${i}` }) as unknown as MqttClientRef)
    {
      const { gate, reads } = slowingGate()
      const released: string[] = []
      for (let k = 1; k <= PER; k++) for (const c of clients) gate.hold(c, k, () => released.push(`${c.id}/${k}`))
      expect(gate.held).toBe(CLIENTS * PER)
      // The first client stays connected; the others go, the most recently connected first.
      const before = reads()
      for (let i = CLIENTS - 1; i >= 1; i--) gate.clientGone(clients[i]!)
      expect(released.length).toBe((CLIENTS - 1) * PER)
      expect(gate.held).toBe(PER)
      expect(reads() - before, 'queue slots read by the disconnects').toBeLessThanOrEqual(10 * CLIENTS * PER)
    }
    {
      const { gate, reads } = slowingGate()
      const released: string[] = []
      for (let k = 1; k <= PER; k++) for (const c of clients) gate.hold(c, k, () => released.push(`${c.id}/${k}`))
      // Every device resends its last packet id on the same connection (DUP): joined to the held original.
      const before = reads()
      for (const c of clients) gate.hold(c, PER, () => released.push(`${c.id}/${PER} again`), true)
      expect(gate.held).toBe(CLIENTS * PER)
      expect(reads() - before, 'queue slots read by the resends').toBeLessThanOrEqual(10 * CLIENTS * PER)
      gate.close()
      expect(released.length).toBe(CLIENTS * (PER + 1))
      expect(released.slice(0, 3)).toEqual(['c0/1', 'c1/1', 'c2/1'])
      expect(released.slice(-2)).toEqual([`c${CLIENTS - 1}/${PER}`, `c${CLIENTS - 1}/${PER} again`])
    }
  })
})
