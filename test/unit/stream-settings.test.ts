// The uplink stream's settings check: an existing stream with fewer replicas or a shorter duplicate window than configured.
import { describe, expect, it } from 'vitest'
import { streamSettingWarnings } from '../../src/forward/index.js'

const NS_PER_MS = 1e6
const want = { replicas: 3, dedupWindowMs: 120_000 }

describe('stream settings', () => {
  it('stream - no warning when replicas and duplicate window are at least the configured ones', () => {
    expect(streamSettingWarnings('FERRY', { num_replicas: 3, duplicate_window: 120_000 * NS_PER_MS }, want)).toEqual([])
    expect(streamSettingWarnings('FERRY', { num_replicas: 5, duplicate_window: 3_600_000 * NS_PER_MS }, want)).toEqual([])
  })

  it('stream - fewer replicas than --stream-replicas: one warning naming the risk and the fix', () => {
    const w = streamSettingWarnings('FERRY', { num_replicas: 1, duplicate_window: 120_000 * NS_PER_MS }, want)
    expect(w.map((x) => x.key)).toEqual(['replicas'])
    expect(w[0]!.message).toMatch(/1 replica.*--stream-replicas 3/)
    expect(w[0]!.message).toMatch(/node failure/)
    expect(w[0]!.message).toContain('nats stream edit FERRY --replicas 3')
    expect(w[0]!.fields).toEqual({ stream: 'FERRY', replicas: 1, configured: 3 })
  })

  it('stream - a duplicate window shorter than --dedup-window: one warning naming the risk and the fix', () => {
    const w = streamSettingWarnings('UP', { num_replicas: 3, duplicate_window: 10_000 * NS_PER_MS }, { replicas: 3, dedupWindowMs: 3_600_000 })
    expect(w.map((x) => x.key)).toEqual(['dedup_window'])
    expect(w[0]!.message).toMatch(/10000 ms, shorter than --dedup-window 3600000 ms/)
    expect(w[0]!.message).toMatch(/stored twice/)
    expect(w[0]!.message).toContain('ferry_forward_resends_outside_dedup_window_total')
    expect(w[0]!.message).toContain('nats stream edit UP --dupe-window 3600s')
  })

  it('stream - unset fields read as JetStream defaults (1 replica, 2 minutes)', () => {
    expect(streamSettingWarnings('FERRY', {}, { replicas: 1, dedupWindowMs: 120_000 })).toEqual([])
    expect(streamSettingWarnings('FERRY', { duplicate_window: 0 }, { replicas: 1, dedupWindowMs: 120_001 }).map((x) => x.key)).toEqual(['dedup_window'])
    expect(streamSettingWarnings('FERRY', {}, want).map((x) => x.key)).toEqual(['replicas'])
  })
})
