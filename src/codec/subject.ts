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

/** Reverses {@link deviceToken}. */
export function tokenToDevice(token: string): string {
  return unescapeLevel(token, token)
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
