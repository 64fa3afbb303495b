// The ack window (forward/ack-window.ts) against a simple model, under random reads, reader skips,
// live-lane entries, completion orders and repeated completions (retries, late PubAcks).
//
// Laws: the log's ack cursor never passes a record that was taken and is not done, never passes a
// record the main reader has not reached, never goes backwards, and reaches the last record once
// every record is done and read.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { AckWindow } from '../../src/forward/ack-window.js'

interface Rec {
  /** The main reader skips it (evicted under discard "old", damaged): never taken by it. */
  readonly skipMain: boolean
  /** The live lane sends it when it reaches it first (its topic has no backlog). */
  readonly laneTakes: boolean
}

type Op = { kind: 'read'; n: number } | { kind: 'lane'; n: number } | { kind: 'complete'; pick: number }

interface E {
  readonly seq: number
  done: boolean
}

function run(recs: readonly Rec[], ops: readonly Op[], finalOrder: readonly number[]): void {
  const last = recs.length
  const taken = new Map<number, E>()
  const acks: number[] = []
  let mainPos = 1
  let lanePos = 1
  /** The highest seq the main reader has dealt with (taken, skipped, or found sent by the lane). */
  let reached = 0
  const w = new AckWindow<E>({
    ack(seq) {
      // Never backwards.
      if (acks.length > 0) expect(seq).toBeGreaterThanOrEqual(acks[acks.length - 1]!)
      // Never past a record the main reader has not reached (it may still be taken).
      expect(seq).toBeLessThanOrEqual(reached)
      // Never past a taken record that is not done.
      for (const e of taken.values()) if (e.seq <= seq) expect(e.done, `seq ${e.seq} acked by ${seq} while not done`).toBe(true)
      acks.push(seq)
    },
  })
  const take = (seq: number): E => {
    const e = { seq, done: false }
    taken.set(seq, e)
    return e
  }
  const read = (n: number): void => {
    const end = Math.min(last, mainPos + n - 1)
    for (let seq = mainPos; seq <= end; seq++) {
      reached = seq
      if (recs[seq - 1]!.skipMain) continue
      if (w.absorb(seq + 1) === seq) continue // the lane sent it: it joins the queue instead
      w.add(take(seq))
    }
    mainPos = end + 1
    w.readerAt(mainPos)
  }
  const complete = (pick: number): void => {
    const all = [...taken.values()]
    if (all.length === 0) return
    // Done ones too: a retry answered twice, or a late PubAck of an older send.
    w.complete(all[pick % all.length]!)
  }
  for (const op of ops) {
    if (op.kind === 'read') read(op.n)
    else if (op.kind === 'lane') {
      lanePos = Math.max(lanePos, mainPos)
      const end = Math.min(last, lanePos + op.n - 1)
      for (let seq = lanePos; seq <= end; seq++) if (recs[seq - 1]!.laneTakes) w.addLane(take(seq))
      lanePos = end + 1
    } else complete(op.pick)
    // The pending entries are exactly the taken ones not done.
    expect([...w.pending()].map((e) => e.seq).sort((a, b) => a - b)).toEqual([...taken.values()].filter((e) => !e.done).map((e) => e.seq).sort((a, b) => a - b))
  }
  // Drain: read everything, complete everything (in a random order, with repeats).
  read(last)
  for (const pick of finalOrder) complete(pick)
  for (const e of taken.values()) w.complete(e)
  // The forwarder's next read finds nothing: the cursor passes records skipped at the end.
  w.readerAt(mainPos)
  expect(w.laneSize).toBe(0)
  expect(w.size).toBe(0)
  expect(w.doneAhead).toBe(0)
  if (last > 0) expect(acks[acks.length - 1]).toBe(last)
}

const recArb = fc.record({ skipMain: fc.integer({ min: 0, max: 6 }).map((x) => x === 0), laneTakes: fc.boolean() })
const opArb = fc.oneof(
  fc.record({ kind: fc.constant('read' as const), n: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('lane' as const), n: fc.integer({ min: 1, max: 8 }) }),
  fc.record({ kind: fc.constant('complete' as const), pick: fc.nat() }),
  fc.record({ kind: fc.constant('complete' as const), pick: fc.nat() }),
)

describe('ack window - contiguous ack', () => {
  it('ack window - never passes an incomplete or unread record, never goes backwards, reaches the end', () => {
    fc.assert(
      fc.property(fc.array(recArb, { maxLength: 60 }), fc.array(opArb, { maxLength: 120 }), fc.array(fc.nat(), { maxLength: 60 }), (recs, ops, order) => run(recs, ops, order)),
      { numRuns: 500 },
    )
  })

  it('ack window - completion out of order acks only the contiguous prefix', () => {
    const acks: number[] = []
    const w = new AckWindow<E>({ ack: (s) => acks.push(s) })
    const es = [1, 2, 3, 4].map((seq) => ({ seq, done: false }))
    for (const e of es) w.add(e)
    expect(w.complete(es[2]!)).toBe(false)
    expect(w.complete(es[1]!)).toBe(false)
    expect(w.doneAhead).toBe(2)
    expect(w.complete(es[0]!)).toBe(true)
    expect(acks).toEqual([3])
    expect(w.complete(es[0]!)).toBe(false) // a second answer counts once
    expect(w.complete(es[3]!)).toBe(true)
    expect(acks).toEqual([3, 4])
  })

  it('ack window - a lane entry done early is acked only once the main reader reaches it', () => {
    const acks: number[] = []
    const w = new AckWindow<E>({ ack: (s) => acks.push(s) })
    const lane = { seq: 10, done: false }
    w.addLane(lane)
    w.complete(lane)
    expect(acks).toEqual([])
    expect(w.readerAt(5)).toBe(true) // nothing taken below 5: the cursor passes skipped records
    expect(acks).toEqual([4])
    const e = { seq: 5, done: false }
    w.add(e)
    expect(w.readerAt(11)).toBe(false) // seq 5 is pending
    w.complete(e)
    expect(acks).toEqual([4, 10])
  })
})
