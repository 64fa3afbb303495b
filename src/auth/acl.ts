// The ACL file, in Mosquitto's syntax:
//
//   # comment
//   topic read sensors/public/#        before any "user" line: rules of anonymous clients
//   user alice                         the following "topic" rules belong to alice
//   topic readwrite alice/#
//   pattern write devices/%u/#         for every identified client; %u = identity, %c = client id
//   pattern read commands/%u/#
//   topic deny devices/+/secret        deny rules win over allow rules
//
// Access is read, write, readwrite (the default) or deny. What no rule allows is denied; deny rules
// are checked first and win. As in Mosquitto's acl_file:
// - a publish needs a write rule matching its topic, and no deny rule matching it;
// - a subscription is granted when a read rule matches its filter, the filter's text taken as a topic
//   name (its `+` and `#` are ordinary characters there), and no deny rule matches it that way: so
//   with `topic read sensors/#` and `topic deny sensors/secret`, `sensors/#` is granted and
//   `sensors/secret` refused (SUBACK 0x80);
// - every message is checked against the subscriber's read and deny rules when it is delivered
//   (live, retained, a persistent session's queue): the `sensors/#` subscriber never gets
//   `sensors/secret`. The check uses the ACL in force at delivery, so a reload applies at once.
// `%u` and `%c` expand only when the identity
// or client id holds none of `+`, `#`, `/`, `%` or NUL, so no one can name themselves into a wildcard;
// otherwise the rule does not apply to them. `#` and `+` in a rule's first level do not match `$`
// topics (MQTT 4.7.2): `$SYS/...` needs a rule of its own.
import { filterCovers, filtersOverlap, topicFilterProblem, topicMatches } from '../codec/topic-filter.js'
import { FerryError } from '../errors.js'
import { readGuardedFile } from './file-mode.js'

type Access = 'read' | 'write' | 'readwrite' | 'deny'

interface Rule {
  readonly access: Access
  readonly filter: string
  /** Whether the filter holds %u or %c. */
  readonly pattern: boolean
}

/** Never expanded: wildcards, level separators, NUL, and % (an identity "%c" must not become a client id). */
const UNSAFE_IDENTITY = /[+#/\x00%]/

// The filter relations live with topic matching; re-exported here, where the ACL made them public first.
export { filterCovers, filtersOverlap }

/** A parsed ACL file. */
export class Acl {
  private constructor(
    private readonly anonymous: readonly Rule[],
    private readonly byUser: ReadonlyMap<string, readonly Rule[]>,
    private readonly patterns: readonly Rule[],
    readonly ruleCount: number,
  ) {}

  static load(file: string): Acl {
    // Rules are not secret, but whoever can write them can widen them: group/others-writable is refused.
    const { bytes } = readGuardedFile(file, '--acl-file', 'FERRY_ERR_ACL_FILE', false, `cannot read ACL file ${file} (--acl-file)`)
    return Acl.parse(bytes.toString('utf8'), file)
  }

  /** Parses ACL text; throws FERRY_ERR_ACL_FILE naming the line of every problem. */
  static parse(text: string, file = 'ACL'): Acl {
    const anonymous: Rule[] = []
    const byUser = new Map<string, Rule[]>()
    const patterns: Rule[] = []
    const problems: string[] = []
    let current: Rule[] = anonymous
    let count = 0
    text.split('\n').forEach((raw, i) => {
      const line = raw.trim()
      if (line === '' || line.startsWith('#')) return
      const [word = '', ...rest] = line.split(/\s+/)
      if (word === 'user') {
        const name = line.slice(4).trim()
        if (!name) return problems.push(`line ${i + 1}: "user" needs a name`)
        current = byUser.get(name) ?? []
        byUser.set(name, current)
        return
      }
      if (word !== 'topic' && word !== 'pattern') return problems.push(`line ${i + 1}: expected "user NAME", "topic [read|write|readwrite|deny] TOPIC" or "pattern [...] TOPIC", got ${JSON.stringify(word)}`)
      let access: Access = 'readwrite'
      if (rest.length > 1) {
        // "topic ACCESS TOPIC"; a topic with spaces needs its access word (a typo is not a topic).
        if (!['read', 'write', 'readwrite', 'deny'].includes(rest[0]!)) return problems.push(`line ${i + 1}: unknown access ${JSON.stringify(rest[0])}; use read, write, readwrite or deny`)
        access = rest.shift() as Access
      }
      const filter = rest.join(' ')
      const problem = filter ? topicFilterProblem(filter) : 'is empty'
      if (problem) return problems.push(`line ${i + 1}: topic ${JSON.stringify(filter)} ${problem}`)
      const pattern = word === 'pattern'
      if (!pattern && /%[uc]/.test(filter)) return problems.push(`line ${i + 1}: %u and %c expand only in "pattern" rules`)
      ;(pattern ? patterns : current).push({ access, filter, pattern })
      count++
    })
    if (problems.length > 0) throw new FerryError('FERRY_ERR_ACL_FILE', `ACL file ${file}: ${problems.join('; ')}`)
    return new Acl(anonymous, byUser, patterns, count)
  }

  /** The rules that apply to a client, with %u and %c expanded. */
  private rulesOf(identity: string | undefined, clientId: string): Rule[] {
    const own = identity === undefined ? this.anonymous : (this.byUser.get(identity) ?? [])
    if (identity === undefined) return [...own]
    const out = [...own]
    for (const r of this.patterns) {
      if (r.filter.includes('%u') && UNSAFE_IDENTITY.test(identity)) continue
      if (r.filter.includes('%c') && (UNSAFE_IDENTITY.test(clientId) || clientId === '')) continue
      out.push({ ...r, filter: r.filter.replaceAll('%u', identity).replaceAll('%c', clientId) })
    }
    return out
  }

  /** May this client publish on `topic`? */
  canPublish(identity: string | undefined, clientId: string, topic: string): boolean {
    const rules = this.rulesOf(identity, clientId)
    if (rules.some((r) => r.access === 'deny' && topicMatches(r.filter, topic))) return false
    return rules.some((r) => (r.access === 'write' || r.access === 'readwrite') && topicMatches(r.filter, topic))
  }

  /** May this client receive a message published on `topic` (a read rule matches it, no deny rule does)? */
  canRead(identity: string | undefined, clientId: string, topic: string): boolean {
    const rules = this.rulesOf(identity, clientId)
    if (rules.some((r) => r.access === 'deny' && topicMatches(r.filter, topic))) return false
    return rules.some((r) => (r.access === 'read' || r.access === 'readwrite') && topicMatches(r.filter, topic))
  }

  /**
   * May this client subscribe to `filter`? Mosquitto's rule: a read rule matches the filter's text
   * as if it were a topic name, and no deny rule does. What the subscription then brings is checked
   * message by message ({@link canRead}), so a granted wildcard never delivers a denied topic.
   */
  canSubscribe(identity: string | undefined, clientId: string, filter: string): boolean {
    const rules = this.rulesOf(identity, clientId)
    if (rules.some((r) => r.access === 'deny' && topicMatches(r.filter, filter))) return false
    return rules.some((r) => (r.access === 'read' || r.access === 'readwrite') && topicMatches(r.filter, filter))
  }
}
