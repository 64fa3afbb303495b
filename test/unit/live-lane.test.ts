// The live lane's policy (forward/live-lane.ts): when a lane opens, the window shares, what it sends, when it stops.
import { describe, expect, it } from 'vitest'
import { LIVE_LANE_IDLE_RECORDS, LIVE_LANE_MAX_AGE_MS, LIVE_LANE_MAX_TOPICS, LIVE_LANE_MAX_WAITING, LaneSchedule, laneRoom, laneWanted, mainLaneCap } from '../../src/forward/live-lane.js'
import { LaneHold } from '../../src/forward/lane-hold.js'

describe('live lane - policy', () => {
  it('live lane - opens only when enabled, with a window of 8 or more, behind by the minimum backlog', () => {
    expect(laneWanted({ maxInflight: 1000, minBacklog: 0 }, 1, 1_000_000)).toBe(false)
    expect(laneWanted({ maxInflight: 7, minBacklog: 10 }, 1, 100)).toBe(false)
    expect(laneWanted({ maxInflight: 8, minBacklog: 10 }, 1, 9)).toBe(false)
    expect(laneWanted({ maxInflight: 8, minBacklog: 10 }, 1, 10)).toBe(true)
  })

  it('live lane - the main lane leaves a quarter of the window to an open lane', () => {
    const w = { maxInflight: 1000, minBacklog: 10 }
    expect(mainLaneCap(w, false)).toBe(1000)
    expect(mainLaneCap(w, true)).toBe(750)
    expect(mainLaneCap({ maxInflight: 1, minBacklog: 1 }, true)).toBe(1)
    expect(laneRoom(w, 0, 0)).toBe(250)
    expect(laneRoom(w, 100, 900)).toBe(100)
    expect(laneRoom(w, 250, 250)).toBe(0)
  })

  it('live lane - sends records of topics and devices without backlog, leaves the others and holds them from then on', () => {
    const hold = new LaneHold()
    hold.hold('a', 'dev-a', false)
    const s = new LaneSchedule(hold)
    expect(s.decide('a', 'dev-x', false)).toBe('leave')
    expect(s.decide('b', 'dev-x', false)).toBe('leave') // dev-x was left behind on topic a
    expect(s.decide('b', 'dev-y', false)).toBe('leave') // so was topic b
    expect(s.decide('c', 'dev-z', false)).toBe('send')
    expect(s.published).toBe(1)
  })

  it('live lane - pauses on too many waiting or too old entries, closes when idle or over the key bound', () => {
    const s = new LaneSchedule(new LaneHold())
    expect(s.mayRead(0, undefined, 0)).toBe(true)
    expect(s.mayRead(LIVE_LANE_MAX_WAITING, undefined, 0)).toBe(false)
    expect(s.mayRead(1, 1000, 1000 + LIVE_LANE_MAX_AGE_MS)).toBe(true)
    expect(s.mayRead(1, 1000, 1001 + LIVE_LANE_MAX_AGE_MS)).toBe(false)
    expect(s.noteRead(LIVE_LANE_IDLE_RECORDS - 1)).toBe(true)
    expect(s.noteRead(1)).toBe(false)
    const hold = new LaneHold()
    for (let i = 0; i <= LIVE_LANE_MAX_TOPICS / 2; i++) hold.hold(`t${i}`, `d${i}`, false)
    expect(new LaneSchedule(hold).decide('new', 'dev', false)).toBe('overflow')
  })
})
