// A group of ring logs, one per member (priority class), opened, bounded and closed together.
//
// Skeleton (coordinator): members are opened one after the other, each as its own RingLog; closing
// closes them in reverse order. The shared bound and the eviction order across members are owned by
// the log work of issue 16 (see the members' order: most important first, the last evicted first).
import { ClosedSignal } from '../lifecycle.js'
import type { Component, Deadline } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { LogMetrics } from './metrics.js'
import { RingLog } from './ring-log.js'
import type { RingLogOptions } from './ring-log.js'

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
    try {
      for (const m of members) {
        opened.push({ name: m.name, log: await RingLog.open({ ...rest, dir: m.dir, metrics: metricsFor(m.name), logger: loggerFor(m.name) }) })
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
