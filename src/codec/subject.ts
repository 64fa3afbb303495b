// MQTT topic ↔ NATS subject mapping: one token per topic level, with a reversible escape rule.
//
// Rule (documented in README, "Subjects, headers and payloads"):
// - subject = `<prefix>.up.<level1>.<level2>...`, one NATS token per MQTT topic level; with partitions
//   (--partitions N > 0) `<prefix>.up.<p>.<level1>...`, p = partitionOf(client id, N) in decimal;
// - inside a level, the bytes `%`, `.`, `*`, `>`, and every byte <= 0x20 or == 0x7f
//   (space, tab, CR, LF, other controls) are written as `%XX`, two upper-case hex digits;
// - an empty level (as in `a//b` or `/a`) is written as the single token `%`.
// A `%` followed by two hex digits only ever comes from an escape, and `%` alone only from an
// empty level, so decoding is unambiguous. Other characters (including UTF-8) pass unchanged.
import { crc32 } from 'node:zlib'
import { FerryError } from '../errors.js'

const MUST_ESCAPE = /[%.*>\x00-\x20\x7f]/
const MUST_ESCAPE_ID = /[%.*>/\x00-\x20\x7f]/

function escapeLevel(level: string, slash = false): string {
  if (level.length === 0) return '%'
  if (!(slash ? MUST_ESCAPE_ID : MUST_ESCAPE).test(level)) return level
  let out = ''
  for (const ch of level) {
    const c = ch.codePointAt(0) ?? 0
    if (c === 0x25 || c === 0x2e || c === 0x2a || c === 0x3e || c <= 0x20 || c === 0x7f || (slash && c === 0x2f)) {
      out += '%' + c.toString(16).toUpperCase().padStart(2, '0')
    } else {
      out += ch
    }
  }
  return out
}

function unescapeLevel(token: string, subject: string): string {
  if (token === '%') return ''
  if (!token.includes('%')) return token
  return token.replace(/%([0-9A-F]{2})|%/g, (m, hex: string | undefined) => {
    if (hex === undefined) {
      throw new FerryError('FERRY_ERR_CODEC_SUBJECT', `subject "${subject}" has a stray "%" in token "${token}"`)
    }
    return String.fromCharCode(parseInt(hex, 16))
  })
}

/**
 * The partition of a device when uplink subjects carry `n` partitions (--partitions): CRC-32 (IEEE, as
 * zlib's crc32) of the client id's UTF-8 bytes, mod `n`; an integer in [0, n). Depends only on the
 * client id, so every message and event of one device shares a partition (for one `n`).
 */
export function partitionOf(clientId: string, n: number): number {
  if (!Number.isSafeInteger(n) || n < 1) throw new FerryError('FERRY_ERR_CODEC_SUBJECT', `partitions must be an integer >= 1, got ${n}`)
  return crc32(clientId) % n
}

/** The subject tokens of a topic's levels, joined by `.` (the part after `<prefix>.up.` or `<prefix>.up.<p>.`). */
function topicLevels(topic: string): string {
  return topic.split('/').map((l) => escapeLevel(l)).join('.')
}

/**
 * Maps an MQTT topic to the NATS subject Ferry publishes it on: `<prefix>.up.<escaped levels>`, or with
 * `partition` (partitionOf of the client id) `<prefix>.up.<partition>.<escaped levels>`.
 */
export function topicToSubject(prefix: string, topic: string, partition?: number): string {
  return partition === undefined ? `${prefix}.up.${topicLevels(topic)}` : `${prefix}.up.${partition}.${topicLevels(topic)}`
}

/**
 * Throws FERRY_ERR_CODEC_SUBJECT unless `partitions` is an integer >= 0 (a consumer's N: NaN from an unset
 * environment variable must not read as "partitioned, any p").
 */
function checkPartitions(partitions: number): void {
  if (!Number.isSafeInteger(partitions) || partitions < 0) throw new FerryError('FERRY_ERR_CODEC_SUBJECT', `partitions must be an integer >= 0, got ${partitions}`)
}

/**
 * Where the tokens after `<prefix>.<kind>.` start, skipping the partition token when `partitions` > 0;
 * throws FERRY_ERR_CODEC_SUBJECT when the subject is not in that layout.
 */
function afterPartition(subject: string, head: string, partitions: number): { start: number; partition: number | undefined } {
  checkPartitions(partitions)
  if (!subject.startsWith(head) || subject.length === head.length) {
    throw new FerryError('FERRY_ERR_CODEC_SUBJECT', `subject "${subject}" is not under "${head}"`)
  }
  if (partitions <= 0) return { start: head.length, partition: undefined }
  const dot = subject.indexOf('.', head.length)
  const token = subject.slice(head.length, dot < 0 ? subject.length : dot)
  const p = Number(token)
  // Canonical decimal only (`07` or `+1` are not what Ferry writes), in range, followed by more tokens.
  if (!/^(0|[1-9][0-9]{0,9})$/.test(token) || p >= partitions || dot < 0 || dot === subject.length - 1) {
    throw new FerryError('FERRY_ERR_CODEC_SUBJECT', `subject "${subject}" is not under "${head}<p>." with a partition p in [0, ${partitions})`)
  }
  return { start: dot + 1, partition: p }
}

/**
 * Recovers the MQTT topic from a subject made by {@link topicToSubject}. `partitions`: the gateway's
 * --partitions; when > 0 the subject must carry a partition token in [0, partitions) (`<prefix>.up.<p>.…`),
 * which is skipped; 0 (the default) reads the layout without it. The two layouts cannot be told apart
 * from the subject alone (a topic's first level may be a number), so the caller says which it reads.
 * Throws FERRY_ERR_CODEC_SUBJECT when the subject is not under `<prefix>.up.` or is malformed, or `partitions` is not an integer >= 0.
 */
export function subjectToTopic(prefix: string, subject: string, partitions = 0): string {
  const { start } = afterPartition(subject, `${prefix}.up.`, partitions)
  return subject
    .slice(start)
    .split('.')
    .map((t) => unescapeLevel(t, subject))
    .join('/')
}

/**
 * The partition token of an uplink (`<prefix>.up.<p>.…`) or event (`<prefix>.events.<p>.…`) subject of a
 * gateway with --partitions `partitions` (> 0). Throws FERRY_ERR_CODEC_SUBJECT when it has none in range.
 */
export function subjectPartition(prefix: string, subject: string, partitions: number): number {
  if (!Number.isSafeInteger(partitions) || partitions < 1) throw new FerryError('FERRY_ERR_CODEC_SUBJECT', `partitions must be an integer >= 1, got ${partitions}`)
  const events = `${prefix}.events.`
  const { partition } = afterPartition(subject, subject.startsWith(events) ? events : `${prefix}.up.`, partitions)
  return partition ?? 0
}

/**
 * The device token of an event subject (`<prefix>.events.<device>.<event>`, or with `partitions` > 0
 * `<prefix>.events.<p>.<device>.<event>`); undefined when it is not one. Throws FERRY_ERR_CODEC_SUBJECT when `partitions` is not an integer >= 0.
 */
export function eventSubjectDevice(prefix: string, subject: string, partitions = 0): string | undefined {
  checkPartitions(partitions)
  let start: number
  try {
    start = afterPartition(subject, `${prefix}.events.`, partitions).start
  } catch {
    return undefined
  }
  const dot = subject.indexOf('.', start)
  const token = subject.slice(start, dot < 0 ? subject.length : dot)
  return token === '' ? undefined : token
}

/**
 * A device id (the MQTT client id) as one subject token: the level rule, plus `/` as `%2F`, so a
 * client id holding `/` stays one token. Used in `<prefix>.events.<device>.…`, `<prefix>.cmd.<device>.…`
 * and `<prefix>.rpc.<device>.…`.
 */
export function deviceToken(clientId: string): string {
  return escapeLevel(clientId, true)
}

/** Reverses {@link deviceToken}. Throws FERRY_ERR_CODEC_SUBJECT on a stray `%`; accepts non-canonical escapes (see {@link canonicalDevice}). */
export function tokenToDevice(token: string): string {
  return unescapeLevel(token, token)
}

/** The text of one token when it holds only valid escapes, else undefined; never throws. */
function tryUnescape(token: string): string | undefined {
  if (token === '%') return ''
  if (!token.includes('%')) return token
  if (/%(?![0-9A-F]{2})/.test(token)) return undefined
  return token.replace(/%([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16)))
}

/**
 * The client id in a device token, only when the token is exactly what {@link deviceToken} makes of
 * it (`deviceToken(id) === token`); else undefined, never a throw. `%64ev1` and `dev%31` name no
 * device: a NATS permission on `<prefix>.rpc.dev1.>` then covers every way to reach dev1.
 */
export function canonicalDevice(token: string): string | undefined {
  const id = tryUnescape(token)
  return id !== undefined && deviceToken(id) === token ? id : undefined
}

/**
 * The topic levels of subject tokens, each only in the exact form {@link topicToSubject} writes it;
 * else the reason, naming the first token that is not (never a throw).
 */
export function canonicalLevels(tokens: readonly string[]): string[] | { readonly problem: string } {
  const levels: string[] = []
  for (const t of tokens) {
    const level = tryUnescape(t)
    if (level === undefined) return { problem: `token "${t}" has a "%" that is not an escape %XX (upper-case hex)` }
    if (escapeLevel(level) !== t) return { problem: `token "${t}" is not in canonical form (Ferry writes it "${escapeLevel(level)}")` }
    levels.push(level)
  }
  return levels
}

/** Log entries with topics under this prefix are Ferry's own events about a device (never a device's publish: `$` topics are refused). */
export const EVENT_TOPIC_PREFIX = '$ferry/events/'

/**
 * The subject of an event about a device: `<prefix>.events.<device>.<event>`, or with `partition`
 * (partitionOf of the client id) `<prefix>.events.<partition>.<device>.<event>`.
 */
export function eventSubject(prefix: string, clientId: string, event: string, partition?: number): string {
  return partition === undefined
    ? `${prefix}.events.${deviceToken(clientId)}.${escapeLevel(event)}`
    : `${prefix}.events.${partition}.${deviceToken(clientId)}.${escapeLevel(event)}`
}

/** Topic levels (as MQTT writes them) of the subject tokens after `skip` tokens; each token unescaped. */
export function tokensToLevels(subject: string, skip: number): string[] {
  return subject.split('.').slice(skip).map((t) => unescapeLevel(t, subject))
}

/** Entries each memo of {@link UplinkSubjects} holds; past it, the memo starts again. */
const SUBJECT_MEMO_MAX = 10_000

/** A memoised topic: its subject without partitions, or its levels and the last client's subject. */
interface TopicMemo {
  /** The whole subject (partitions 0), or the escaped levels (partitions > 0). */
  readonly levels: string
  /** Partitions > 0: the client id `subject` was made for (a topic is mostly one device's). */
  clientId: string | undefined
  subject: string
}

/**
 * The uplink subjects of one forwarder, memoised (bounded): per topic its subject, or with partitions its
 * escaped levels and the subject of the last client that used it; per client id its `<prefix>.up.<p>.`.
 * A topic used by one device (`devices/<id>/…`) costs one lookup and a string compare per message. Same
 * subjects as topicToSubject.
 */
export class UplinkSubjects {
  private readonly topics = new Map<string, TopicMemo>()
  /** client id → `<prefix>.up.<p>.` (partitions > 0). */
  private readonly heads = new Map<string, string>()

  /** `partitions`: --partitions (0 = no partition token). */
  constructor(
    private readonly prefix: string,
    readonly partitions = 0,
  ) {
    if (partitions !== 0) partitionOf('', partitions) // validates
  }

  /** The subject of a message from `clientId` on `topic`. */
  of(topic: string, clientId: string): string {
    let m = this.topics.get(topic)
    if (m === undefined) {
      const levels = this.partitions > 0 ? topicLevels(topic) : topicToSubject(this.prefix, topic)
      m = { levels, clientId: undefined, subject: levels }
      if (this.topics.size >= SUBJECT_MEMO_MAX) this.topics.clear()
      this.topics.set(topic, m)
    }
    if (this.partitions === 0 || m.clientId === clientId) return m.subject
    let head = this.heads.get(clientId)
    if (head === undefined) {
      head = `${this.prefix}.up.${partitionOf(clientId, this.partitions)}.`
      if (this.heads.size >= SUBJECT_MEMO_MAX) this.heads.clear()
      this.heads.set(clientId, head)
    }
    m.clientId = clientId
    m.subject = head + m.levels
    return m.subject
  }
}
