// The live lane's policy: when a lane opens, how much of the window each lane may use, which records
// the lane sends ahead of the backlog, and when it stops. Pure: the forwarder does the reading and
// publishing (forwarder.ts) and the ack window holds what the lane sent (ack-window.ts).
//
// A large backlog would make every new message wait behind it. When the main reader is at least
// `minBacklog` records behind, the forwarder collects the topics and devices of the backlog (main
// position .. split] into a LaneHold (lane-hold.ts); a second reader then sends records after `split`
// at once if LaneHold admits them (so no topic's or device's order changes); the others wait for the
// main reader. The lane closes when the main reader catches up with it.
import { LaneHold } from './lane-hold.js'

/** Above this many distinct topics and devices held, no live lane (bounded memory). */
export const LIVE_LANE_MAX_TOPICS = 100_000
/** Share of the in-flight window the live lane may use (and the main lane leaves to it). */
export const LIVE_LANE_SHARE = 0.25
/** No live lane for windows smaller than this (the shares would round to nothing). */
export const LIVE_LANE_MIN_WINDOW = 8
/** Live-lane entries waiting for the main reader, at most (memory bound). */
export const LIVE_LANE_MAX_WAITING = 20_000
/**
 * The lane pauses while its oldest waiting entry is older than this. Until the main reader takes
 * an entry into its window, the checkpoint does not cover it, so a restart sends it again; keeping
 * that within JetStream's default 2-minute duplicate window means the copy is dropped.
 */
export const LIVE_LANE_MAX_AGE_MS = 60_000
/**
 * How long lane entries may wait for the main reader: half the duplicate window (at least
 * LIVE_LANE_MAX_AGE_MS), so a restart's resend of them is still dropped by JetStream. A longer
 * --dedup-window keeps the lane open through a longer drain (e.g. one paced by --drain-max-rate).
 */
export function liveLaneMaxAgeMs(dedupWindowMs: number): number {
  return Math.max(LIVE_LANE_MAX_AGE_MS, Math.floor(dedupWindowMs / 2))
}

/** A lane that read this many records without one to send is closed (every topic has backlog). */
export const LIVE_LANE_IDLE_RECORDS = 50_000

/** How long to wait before trying a lane again, by why the last one did not open or closed. */
export const LIVE_LANE_RETRY_MS = {
  /** The scan finished after the main reader passed its split (or the forwarder stopped). */
  stale: 10_000,
  /** The scan failed (a read error). */
  scanFailed: 60_000,
  /** More than LIVE_LANE_MAX_TOPICS keys held. */
  tooManyTopics: 300_000,
  /** The lane found nothing to send (LIVE_LANE_IDLE_RECORDS). */
  idle: 30_000,
} as const

/** The window sizes the policy shares between the lanes. */
export interface LaneWindow {
  /** Most messages in flight (both lanes). */
  readonly maxInflight: number
  /** Backlog (records) from which a lane opens; 0 = never. */
  readonly minBacklog: number
}

/** True when a lane should open: enabled, the window is large enough, and the main reader at `from` is far enough behind `split` (the durable end). */
export function laneWanted(w: LaneWindow, from: number, split: number): boolean {
  return w.minBacklog > 0 && w.maxInflight >= LIVE_LANE_MIN_WINDOW && split - from + 1 >= w.minBacklog
}

/** Most messages the main lane may have in flight (it leaves a share to an open lane). */
export function mainLaneCap(w: LaneWindow, laneOpen: boolean): number {
  return laneOpen ? Math.max(1, Math.floor(w.maxInflight * (1 - LIVE_LANE_SHARE))) : w.maxInflight
}

/** How many records the lane may send now: its own share of the window, never the main lane's. */
export function laneRoom(w: LaneWindow, laneUnacked: number, unacked: number): number {
  return Math.min(Math.ceil(w.maxInflight * LIVE_LANE_SHARE) - laneUnacked, w.maxInflight - unacked)
}

/** What the lane does with a record it read. */
export type LaneDecision = 'send' | 'leave' | 'overflow'

/** The state of an open lane: what it holds back, and how much it read and sent. */
export class LaneSchedule {
  read = 0
  published = 0

  /**
   * `hold`: the topics and devices of the backlog and of the main window's unstored records.
   * `maxAgeMs`: the lane pauses while its oldest waiting entry is older (see {@link liveLaneMaxAgeMs}).
   */
  constructor(
    readonly hold: LaneHold,
    private readonly maxAgeMs = LIVE_LANE_MAX_AGE_MS,
  ) {}

  /** True when the lane may read more: not too many entries waiting for the main reader, none too old (ts: Date.now() ms). */
  mayRead(waiting: number, oldestTs: number | undefined, nowMs: number): boolean {
    if (waiting >= LIVE_LANE_MAX_WAITING) return false
    return oldestTs === undefined || nowMs - oldestTs <= this.maxAgeMs
  }

  /** Counts `n` records read; false when the lane is idle (read much, sent nothing) and should close. */
  noteRead(n: number): boolean {
    this.read += n
    return !(this.published === 0 && this.read >= LIVE_LANE_IDLE_RECORDS)
  }

  /**
   * Whether a record newer than the backlog goes by the lane now ('send'), is left to the main
   * reader ('leave', its topic and device held from now on), or the lane holds too much ('overflow': close it).
   */
  decide(topic: string, clientId: string, isEvent: boolean): LaneDecision {
    if (!this.hold.admit(topic, clientId, isEvent)) return 'leave'
    if (this.hold.size > LIVE_LANE_MAX_TOPICS) return 'overflow'
    this.published++
    return 'send'
  }
}
