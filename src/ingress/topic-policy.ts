// The buffer policy of a topic: its priority class (--priority) and its time to live (--ttl), first
// matching rule of each list, memoised per topic (bounded) so a publish does not test every filter.
import { topicMatches } from '../codec/index.js'
import type { PriorityClass, PriorityRule, TtlRule } from '../config/index.js'
import type { ClassLog, PublishRoute } from './ingress.js'

/** Topics remembered at most; when full, the memo starts over (one pass over the rules per topic then). */
export const TOPIC_POLICY_MEMO_MAX = 10_000
/** Longest topic remembered, in UTF-16 units (a longer one is matched every time, not kept). */
const MEMO_TOPIC_CHARS_MAX = 256

/** The class and time to live of one topic. */
interface Decided {
  readonly cls: PriorityClass
  readonly ttlMs: number
}

const NONE: Decided = { cls: 'normal', ttlMs: 0 }

/**
 * Class and TTL of topics. Unmatched topics are 'normal' with no TTL. Rules are tested in order and
 * the first match wins (each list on its own: a topic may take its class from one filter and its
 * TTL from another).
 */
export class TopicPolicy {
  private readonly memo = new Map<string, Decided>()
  /** One Decided per (class, TTL) pair: routes are made per pair, not per topic. */
  private readonly pairs = new Map<string, Decided>()

  constructor(
    private readonly priority: readonly PriorityRule[],
    private readonly ttl: readonly TtlRule[],
  ) {}

  /** The priority class of `topic` (first matching --priority rule; 'normal' when none matches). */
  classOf(topic: string): PriorityClass {
    return this.decide(topic).cls
  }

  /** The --ttl of `topic` in ms (first matching rule), 0 = none. */
  ttlMsOf(topic: string): number {
    return this.decide(topic).ttlMs
  }

  /**
   * IngressOptions.route for this policy: each topic's class log (`logOf` is asked once per class)
   * and TTL. The route objects are made once per (class, TTL) pair, not per publish.
   */
  router(logOf: (cls: PriorityClass) => ClassLog): (topic: string) => PublishRoute {
    const routes = new WeakMap<Decided, PublishRoute>()
    const logs = new Map<PriorityClass, ClassLog>()
    return (topic) => {
      const d = this.decide(topic)
      let r = routes.get(d)
      if (!r) {
        let log = logs.get(d.cls)
        if (!log) {
          log = logOf(d.cls)
          logs.set(d.cls, log)
        }
        r = { log, className: d.cls, ttlMs: d.ttlMs }
        routes.set(d, r)
      }
      return r
    }
  }

  private decide(topic: string): Decided {
    if (this.priority.length === 0 && this.ttl.length === 0) return NONE
    const known = this.memo.get(topic)
    if (known) return known
    let cls: PriorityClass = 'normal'
    for (const r of this.priority) {
      if (topicMatches(r.filter, topic)) {
        cls = r.class
        break
      }
    }
    let ttlMs = 0
    for (const r of this.ttl) {
      if (topicMatches(r.filter, topic)) {
        ttlMs = r.ttlMs
        break
      }
    }
    const key = `${cls}|${ttlMs}`
    let d = cls === 'normal' && ttlMs === 0 ? NONE : this.pairs.get(key)
    if (!d) {
      d = { cls, ttlMs }
      this.pairs.set(key, d)
    }
    if (topic.length <= MEMO_TOPIC_CHARS_MAX) {
      if (this.memo.size >= TOPIC_POLICY_MEMO_MAX) this.memo.clear()
      this.memo.set(topic, d)
    }
    return d
  }
}
