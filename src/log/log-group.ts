// A group of ring logs, one per member (priority class), opened, bounded and closed together.
//
// Members are listed most important first. With one member the group is exactly that RingLog (its
// own bound, same files). With several, one bound covers all their segment files together (plus
// each directory's reserve), counted to the byte: every write (a batch of records, a new segment's
// header and its future seal) reserves its bytes first, at once when they fit, otherwise room is
// made, under the group's lock, in this order (GroupBound.makeRoom):
//   1. a fully acknowledged oldest segment of any member is deleted (nothing is lost);
//   2. discard "new": the append is refused (LogFullError), as for one log;
//   3. discard "old": the LEAST important member with unacknowledged records on disk loses its
//      oldest segment (counted as discard_old by that member); when all it has is the segment it is
//      writing, that segment is sealed first and then evicted. A member is never evicted while a
//      less important one has unacknowledged records on disk, and never for an append of a less
//      important member: when only more important members have such records, the append is
//      refused as under discard "new" (LogFullError, counted discard_new by the appending member).
// Every eviction and expiry reclaim across the members runs under one lock (one at a time). A
// member's active segment is sealed by the bound only while its writer is free or parked on the
// bound (its pump waits for room or the lock at a point where no write is in flight), and no one
// waits for a member's writer except under the lock, so two members making room cannot deadlock.
import { LogFullError } from '../errors.js'
import { ClosedSignal } from '../lifecycle.js'
import type { Component, Deadline } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import { DIR_RESERVE_BYTES } from './format.js'
import type { LogMetrics } from './metrics.js'
import { RingLog } from './ring-log.js'
import type { DiscardPolicy, RingLogOptions } from './ring-log.js'
import type { BoundMember, SharedBound } from './shared-bound.js'

/** One lock, taken in call order. */
class Mutex {
  private tail: Promise<void> = Promise.resolve()
  run<T>(fn: () => Promise<T>): Promise<T> {
    const r = this.tail.then(fn)
    this.tail = r.then(
      () => {},
      () => {},
    )
    return r
  }
}

/**
 * The bound shared by a group's members: their segment files together stay within maxBytes less
 * one reserve per member directory (DIR_RESERVE_BYTES each, or what N+1 segments leave of the bound).
 */
export class GroupBound implements SharedBound {
  /** Most important first. */
  readonly members: BoundMember[] = []
  private readonly lock = new Mutex()
  private readonly reserveBytes: number

  constructor(
    private readonly maxBytes: number,
    segmentBytes: number,
    private readonly discard: DiscardPolicy,
    memberCount: number,
  ) {
    this.reserveBytes = Math.max(0, Math.min(memberCount * DIR_RESERVE_BYTES, maxBytes - (memberCount + 1) * segmentBytes))
  }

  exclusive<T>(fn: () => Promise<T>): Promise<T> {
    return this.lock.run(fn)
  }

  /** Bytes held against the bound by every member, the directories' reserve included. */
  usedBytes(): number {
    return this.members.reduce((a, m) => a + m.boundUsageBytes(), 0) + this.reserveBytes
  }

  tryReserve(requester: BoundMember, bytes: number): boolean {
    if (this.usedBytes() + bytes > this.maxBytes) return false
    requester.reserveForBound(bytes)
    return true
  }

  makeRoom(requester: BoundMember, bytes: number): Promise<void> {
    return this.lock.run(async () => {
      for (;;) {
        const used = this.usedBytes()
        if (used + bytes <= this.maxBytes) {
          requester.reserveForBound(bytes)
          return
        }
        if (await this.deleteForwarded()) continue
        if (this.discard === 'new') {
          throw new LogFullError(`ring log is full (${used} of ${this.maxBytes} bytes, ${bytes} more wanted) and no segment is forwarded`)
        }
        const evicted = await this.evictInOrder(requester, 'log full')
        // Only more important members have records to give: refused as under discard "new".
        if (evicted === 'more_important') {
          throw new LogFullError(`ring log is full (${used} of ${this.maxBytes} bytes) and only more important classes have records not yet forwarded`)
        }
        // Nothing evictable cannot happen with maxBytes >= (members + 1) segments (checked by the
        // config) unless a checkpoint write failed: refused like a full disk, retried after a while.
        if (!evicted) throw new LogFullError(`ring log is full (${used} of ${this.maxBytes} bytes) and no segment could be evicted`, true)
      }
    })
  }

  reclaimDiskFull(requester: BoundMember): Promise<boolean> {
    return this.lock.run(async () => {
      let freed = false
      while (await this.deleteForwarded()) freed = true
      if (freed || this.discard === 'new') return freed
      try {
        return (await this.evictInOrder(requester, 'disk full (ENOSPC)')) === true
      } catch (err) {
        if (err instanceof LogFullError) return false // no room even for a seal
        throw err
      }
    })
  }

  /** Deletes one fully acknowledged oldest segment, the least important member's first; true when it did. */
  private async deleteForwarded(): Promise<boolean> {
    for (let i = this.members.length - 1; i >= 0; i--) {
      const m = this.members[i]!
      if (!m.isShut && (await m.deleteOldestForwarded())) return true
    }
    return false
  }

  /**
   * Evicts one segment of the least important member with unacknowledged records on disk (sealing
   * its active segment first when that is all it has). True when something was evicted or sealed
   * (the caller looks again). Never a member while a less important one has such records: when that
   * one cannot give a segment (closing), nothing is evicted and the append is refused. Never a
   * member more important than `requester` (the member that needs the room): 'more_important'
   * when only such members have records to give.
   */
  private async evictInOrder(requester: BoundMember, why: string): Promise<boolean | 'more_important'> {
    const rank = this.members.indexOf(requester)
    for (let i = this.members.length - 1; i >= 0; i--) {
      const m = this.members[i]!
      if (!m.hasUnackedOnDisk()) continue
      if (i < rank) return 'more_important'
      if (m.isShut) throw new LogFullError('ring log is full and the log group is closing')
      if (m.oldestIsSealed()) return m.evictOldestForBound(why)
      // All it has is the segment it is writing: sealed (the caller looks again and evicts it).
      await m.sealActiveForBound()
      return true
    }
    return false
  }
}

/** One member of a group: its name (a priority class) and its data directory. */
export interface LogGroupMember {
  readonly name: string
  readonly dir: string
}

/** Options of {@link LogGroup.open}: a RingLog's, with members in place of one directory. */
export interface LogGroupOptions extends Omit<RingLogOptions, 'dir' | 'metrics' | 'logger'> {
  /** Most important first; the last is evicted first under discard "old". At least one. */
  readonly members: readonly LogGroupMember[]
  readonly metricsFor: (name: string) => LogMetrics
  readonly loggerFor: (name: string) => Logger
}

export class LogGroup implements Component {
  private closing: Promise<void> | undefined
  private readonly stopped = new ClosedSignal()

  private constructor(readonly members: readonly { readonly name: string; readonly log: RingLog }[]) {
    for (const m of members) {
      void m.log.closed().then((err) => {
        if (err) this.stopped.resolve(err)
      })
    }
  }

  /** Opens every member (recovering what is on disk); a failure closes those already open. */
  static async open(o: LogGroupOptions): Promise<LogGroup> {
    const { members, metricsFor, loggerFor, ...rest } = o
    if (members.length === 0) throw new Error('a log group needs at least one member')
    const opened: Array<{ name: string; log: RingLog }> = []
    // One member: exactly its RingLog, bounded by itself.
    const bound = members.length > 1 ? new GroupBound(rest.maxBytes, rest.segmentBytes, rest.discard, members.length) : undefined
    try {
      for (const m of members) {
        const log = await RingLog.open({ ...rest, dir: m.dir, metrics: metricsFor(m.name), logger: loggerFor(m.name), ...(bound ? { bound } : {}) })
        opened.push({ name: m.name, log })
        bound?.members.push(log)
      }
    } catch (err) {
      for (const m of opened.reverse()) await m.log.close().catch(() => {})
      throw err
    }
    return new LogGroup(opened)
  }

  /** The member named `name`. */
  get(name: string): RingLog {
    const m = this.members.find((x) => x.name === name)
    if (!m) throw new Error(`no log for class ${JSON.stringify(name)}`)
    return m.log
  }

  /** Waits until every append made so far in every member is written. */
  async drain(): Promise<void> {
    for (const m of this.members) await m.log.drain()
  }

  /** Closes every member, the least important first. Idempotent. */
  close(deadline?: Deadline): Promise<void> {
    this.closing ??= (async () => {
      let first: Error | undefined
      for (const m of [...this.members].reverse()) {
        await m.log.close(deadline).catch((err: unknown) => (first ??= err instanceof Error ? err : new Error(String(err))))
      }
      this.stopped.resolve(undefined)
      if (first) throw first
    })()
    return this.closing
  }

  /** Settles with the first member's failure, or undefined after close(). */
  closed(): Promise<Error | undefined> {
    return this.stopped.promise
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
