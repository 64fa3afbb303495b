// Review of the --max-forward-lag slow-down: edge cases found in review.
import { describe, expect, it } from 'vitest'
import { loadConfig, parseSeconds } from '../../src/config/index.js'

describe('slowdown review', () => {
  it('slowdown review - a positive --max-forward-lag under 1 ms is refused, not silently taken as 0 (off)', () => {
    const load = (argv: string[], env: Record<string, string> = {}) => loadConfig({ argv, env, hostname: 'h' })
    // 0 means "never slow down": a tiny positive bound must not turn into it by rounding.
    expect(parseSeconds('0.0004')).toBeUndefined()
    expect(parseSeconds('0.4ms')).toBeUndefined()
    expect(parseSeconds(0.0004)).toBeUndefined()
    expect(() => load(['--max-forward-lag', '0.0004'])).toThrow(/'forward\.maxLagMs' \(flag --max-forward-lag\) must be/)
    expect(() => load([], { FERRY_MAX_FORWARD_LAG: '0.4ms' })).toThrow(/environment FERRY_MAX_FORWARD_LAG/)
    // Still fine: 0 (off), 1 ms, and values that round to a whole millisecond.
    expect(load(['--max-forward-lag', '0']).forward.maxLagMs).toBe(0)
    expect(load(['--max-forward-lag', '0.001']).forward.maxLagMs).toBe(1)
    expect(load(['--max-forward-lag', '0.0015']).forward.maxLagMs).toBe(2)
  })
})
