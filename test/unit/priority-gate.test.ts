// PriorityGate: strict priority between the forwarders of the classes, event driven (no timers).
import { describe, expect, it } from 'vitest'
import { PriorityGate } from '../../src/forward/priority.js'
import type { MemberState } from '../../src/forward/priority.js'

/** A member state with nothing in flight (taken = settled). */
function st(pending: () => boolean): MemberState {
  return { pending, takenUpTo: () => 0, settledUpTo: () => 0 }
}

/** True when `p` has settled after the microtasks queued so far (no timers involved). */
async function settled(p: Promise<void>): Promise<boolean> {
  let done = false
  void p.then(() => (done = true))
  for (let i = 0; i < 10; i++) await Promise.resolve()
  return done
}

describe('priority gate - strict priority', () => {
  it('priority gate - a member takes only while no more important member has records pending', () => {
    const gate = new PriorityGate()
    const high = gate.member(0)
    const normal = gate.member(1)
    const low = gate.member(2)
    const pending = { high: false, normal: false, low: true }
    high.attach(st(() => pending.high))
    normal.attach(st(() => pending.normal))
    low.attach(st(() => pending.low))
    expect([high.mayTake(), normal.mayTake(), low.mayTake()]).toEqual([true, true, true])
    pending.normal = true
    expect([high.mayTake(), normal.mayTake(), low.mayTake()]).toEqual([true, true, false])
    pending.high = true
    expect([high.mayTake(), normal.mayTake(), low.mayTake()]).toEqual([true, false, false])
    // A less important member never holds a more important one.
    pending.low = true
    expect(high.mayTake()).toBe(true)
  })

  it('priority gate - a waiting member is woken by the notice of a more important member, not before', async () => {
    const gate = new PriorityGate()
    const high = gate.member(0)
    const low = gate.member(2)
    let highPending = true
    high.attach(st(() => highPending))
    low.attach(st(() => true))
    const w = low.whenMayTake()
    expect(await settled(w)).toBe(false)
    // The same wait for a second caller (one waiter per member at most).
    expect(low.whenMayTake()).toBe(w)
    expect(gate.waiting).toBe(1)
    // A notice while still pending wakes nobody.
    high.notify()
    expect(await settled(w)).toBe(false)
    // A notice from a less important member wakes nobody either.
    low.notify()
    expect(await settled(w)).toBe(false)
    highPending = false
    high.notify()
    expect(await settled(w)).toBe(true)
    expect(low.mayTake()).toBe(true)
    expect(gate.waiting).toBe(0)
    await expect(low.whenMayTake()).resolves.toBeUndefined()
  })

  it('priority gate - a member that detaches (closed, stopped) blocks nobody any more and wakes the waiters', async () => {
    const gate = new PriorityGate()
    const high = gate.member(0)
    const normal = gate.member(1)
    high.attach(st(() => true)) // e.g. cannot reach NATS: strict priority, the others wait
    normal.attach(st(() => false))
    const w = normal.whenMayTake()
    expect(await settled(w)).toBe(false)
    high.detach()
    expect(await settled(w)).toBe(true)
    expect(normal.mayTake()).toBe(true)
    high.detach() // idempotent
  })

  it('priority gate - the middle member: woken when the top one is clear, waits again while it is not', async () => {
    const gate = new PriorityGate()
    const high = gate.member(0)
    const normal = gate.member(1)
    const low = gate.member(2)
    const p = { high: true, normal: true }
    high.attach(st(() => p.high))
    normal.attach(st(() => p.normal))
    low.attach(st(() => true))
    const wn = normal.whenMayTake()
    const wl = low.whenMayTake()
    p.high = false
    high.notify()
    expect(await settled(wn)).toBe(true)
    // low was woken too (its wait resolves on any more important notice) but must ask again: normal is pending.
    expect(await settled(wl)).toBe(true)
    expect(low.mayTake()).toBe(false)
    const wl2 = low.whenMayTake()
    expect(await settled(wl2)).toBe(false)
    p.normal = false
    normal.notify()
    expect(await settled(wl2)).toBe(true)
    expect(low.mayTake()).toBe(true)
  })

  it('priority gate - a member not yet attached blocks nobody; ranks must be integers >= 0', () => {
    const gate = new PriorityGate()
    gate.member(0)
    const low = gate.member(1)
    expect(low.mayTake()).toBe(true)
    expect(() => gate.member(-1)).toThrow(RangeError)
    expect(() => gate.member(0.5)).toThrow(RangeError)
  })

  it('priority gate - after a wait, a member resumes only once what the more important ones had taken is settled', async () => {
    const gate = new PriorityGate()
    const high = gate.member(0)
    const low = gate.member(2)
    const h = { pending: true, taken: 10, settled: 3 }
    high.attach({ pending: () => h.pending, takenUpTo: () => h.taken, settledUpTo: () => h.settled })
    low.attach(st(() => true))
    expect(low.mayTake()).toBe(false)
    // High takes its last records (up to 500) and catches up: 490 of them still in flight.
    h.taken = 500
    h.settled = 10
    h.pending = false
    const w = low.whenMayTake()
    expect(low.mayTake()).toBe(false)
    h.settled = 499
    high.notify()
    expect(await settled(w)).toBe(true)
    expect(low.mayTake()).toBe(false)
    // New records taken by high after the hand-over was decided do not move the target.
    h.taken = 600
    h.settled = 500
    expect(low.mayTake()).toBe(true)
    // A member that never had to wait does not wait for anything in flight.
    h.settled = 550
    expect(low.mayTake()).toBe(true)
  })

  it('priority gate - a member that waits for settling is released when the more important one detaches', async () => {
    const gate = new PriorityGate()
    const high = gate.member(0)
    const low = gate.member(1)
    const h = { pending: true }
    high.attach({ pending: () => h.pending, takenUpTo: () => 100, settledUpTo: () => 0 })
    low.attach(st(() => true))
    expect(low.mayTake()).toBe(false)
    h.pending = false
    expect(low.mayTake()).toBe(false) // 100 taken, nothing settled (e.g. NATS went away with them in flight)
    const w = low.whenMayTake()
    high.detach()
    expect(await settled(w)).toBe(true)
    expect(low.mayTake()).toBe(true)
  })
})
