// The live lane's age bound follows the duplicate window: half of it, at least 60 s.
import { describe, expect, it } from 'vitest'
import { LaneHold } from '../../src/forward/lane-hold.js'
import { LIVE_LANE_MAX_AGE_MS, LaneSchedule, liveLaneMaxAgeMs } from '../../src/forward/live-lane.js'

describe('live lane age', () => {
  it('live lane - entries may wait half the duplicate window (at least 60 s) for the main reader', () => {
    expect(liveLaneMaxAgeMs(120_000)).toBe(LIVE_LANE_MAX_AGE_MS)
    expect(liveLaneMaxAgeMs(10_000)).toBe(LIVE_LANE_MAX_AGE_MS)
    expect(liveLaneMaxAgeMs(3_600_000)).toBe(1_800_000)
    const now = 10_000_000
    const short = new LaneSchedule(new LaneHold())
    const long = new LaneSchedule(new LaneHold(), liveLaneMaxAgeMs(3_600_000))
    expect(short.mayRead(1, now - 61_000, now)).toBe(false)
    expect(long.mayRead(1, now - 61_000, now)).toBe(true)
    expect(long.mayRead(1, now - 1_800_001, now)).toBe(false)
  })
})
