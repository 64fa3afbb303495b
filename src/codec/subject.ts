// MQTT topic ↔ NATS subject mapping: one token per topic level, with a reversible escape rule.
//
// Rule (documented in README, "Topic to subject mapping"):
// - subject = `<prefix>.up.<level1>.<level2>...`, one NATS token per MQTT topic level;
// - inside a level, the bytes `%`, `.`, `*`, `>`, and every byte <= 0x20 or == 0x7f
//   (space, tab, CR, LF, other controls) are written as `%XX`, two upper-case hex digits;
// - an empty level (as in `a//b` or `/a`) is written as the single token `%`.
// A `%` followed by two hex digits only ever comes from an escape, and `%` alone only from an
// empty level, so decoding is unambiguous. Other characters (including UTF-8) pass unchanged.
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

/** Maps an MQTT topic to the NATS subject Ferry publishes it on: `<prefix>.up.<escaped levels>`. */
export function topicToSubject(prefix: string, topic: string): string {
  return `${prefix}.up.${topic.split('/').map((l) => escapeLevel(l)).join('.')}`
}

/**
 * Recovers the MQTT topic from a subject made by {@link topicToSubject}.
 * Throws FERRY_ERR_CODEC_SUBJECT when the subject is not under `<prefix>.up.` or is malformed.
 */
export function subjectToTopic(prefix: string, subject: string): string {
  const head = `${prefix}.up.`
  if (!subject.startsWith(head) || subject.length === head.length) {
    throw new FerryError('FERRY_ERR_CODEC_SUBJECT', `subject "${subject}" is not under "${head}"`)
  }
  return subject
    .slice(head.length)
    .split('.')
    .map((t) => unescapeLevel(t, subject))
    .join('/')
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

/** The subject of an event about a device: `<prefix>.events.<device>.<event>`. */
export function eventSubject(prefix: string, clientId: string, event: string): string {
  return `${prefix}.events.${deviceToken(clientId)}.${escapeLevel(event)}`
}

/** Topic levels (as MQTT writes them) of the subject tokens after `skip` tokens; each token unescaped. */
export function tokensToLevels(subject: string, skip: number): string[] {
  return subject.split('.').slice(skip).map((t) => unescapeLevel(t, subject))
}
