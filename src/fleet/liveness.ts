// The registry's decisions as pure functions: which gateways are live, who sweeps the dead, and when a
// local session yields to another gateway's write. Revisions (the bucket's stream sequence) order
// writes; clocks are used to measure a gateway's silence on the watcher's own clock, and in one case
// only to order connects: a device that connected while its gateway could not see the bucket
// (byConnectTime).

/** A gateway is dead once its entry has not changed for this many of its heartbeats. */
export const DEAD_AFTER_HEARTBEATS = 6

/** What a watcher knows of one gateway entry. */
export interface GatewaySeen {
  readonly heartbeatMs: number
  /** When this watcher last saw the entry change (or started watching), its own clock, ms. */
  readonly changedAtMs: number
}

/** Whether a gateway seen like this is live at `nowMs` (the watcher's clock). */
export function isLive(seen: GatewaySeen, nowMs: number): boolean {
  return nowMs - seen.changedAtMs < DEAD_AFTER_HEARTBEATS * seen.heartbeatMs
}

/**
 * The gateway that removes dead gateways' entries: the live one with the lowest id (string order),
 * this gateway included. Every live gateway computes the same answer from the same bucket.
 */
export function sweeper(liveIds: Iterable<string>): string | undefined {
  let low: string | undefined
  for (const id of liveIds) if (low === undefined || id < low) low = id
  return low
}

/** A write to a device's key, as the registry shows it. */
export interface Write {
  readonly revision: number
  readonly gateway: string
  readonly boot: string
}

/** This gateway process, and the revision of its own last write for a device connected here. */
export interface Holder {
  readonly gateway: string
  readonly boot: string
  /** Revision our put got; undefined while it is not written yet. */
  readonly ourRevision: number | undefined
}

/**
 * Whether a local session must yield to `w`: another process wrote the key at a revision newer than
 * our own write (a device that connected to another gateway after it connected here). Our own
 * writes, and anything older than ours, never make it yield.
 */
export function mustYield(holder: Holder, w: Write): boolean {
  if (w.gateway === holder.gateway && w.boot === holder.boot) return false
  return holder.ourRevision !== undefined && w.revision > holder.ourRevision
}

/**
 * After a compare-and-set put failed (a retried or delayed write; a device's first write, made while
 * NATS stayed up since it connected, is a plain put that the bucket orders as the connects were
 * ordered). `delayed`: our view of the bucket was current when the device connected, so a live other
 * gateway that wrote after `seenRevision` took the device while we could not write: yield. Otherwise
 * claim the key at its current revision (the gateway overwritten sees our newer revision and yields):
 * our own earlier write, a delete, a dead gateway's entry, a leftover of this id, or a view we could
 * not trust (not delayed) — except that a live other gateway's entry met with a view we could not
 * trust is judged by byConnectTime first (the registry does that: it needs the entry's `since`).
 */
export function onConflict(holder: Omit<Holder, 'ourRevision'>, current: Write | undefined, currentLive: boolean, seenRevision: number, delayed: boolean): 'yield' | 'claim' {
  if (!current || current.gateway === holder.gateway) return 'claim'
  return currentLive && delayed && current.revision > seenRevision ? 'yield' : 'claim'
}

/**
 * A device that connected here while our view of the bucket was not current (our registry connection
 * down, or its watcher restarting), whose key another LIVE gateway holds now. No revision orders the
 * two connects: the device may have moved from there to here while we were cut off (claim: the other
 * session is the stale one) or from here to there (yield: ours is). Only the connect times are left:
 * `ourConnectedAt` on this gateway's clock, `theirSince` (the entry's `since`) on the other's. Claim
 * only when ours is later. Clock skew between the two gateways can decide wrongly here, and only here:
 * two connects closer together than the skew.
 */
export function byConnectTime(ourConnectedAt: number, theirSince: number): 'yield' | 'claim' {
  return ourConnectedAt > theirSince ? 'claim' : 'yield'
}
