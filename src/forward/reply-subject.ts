// The reply subject of each publish names the record and the attempt, so that an answer to an older
// send of a record that was sent again since can be told apart (and ignored when it is a refusal).
//
// `<inbox>.<seq>` for the first send, `<inbox>.<seq>_<attempt>` for later ones (attempt >= 2). One
// wildcard subscription on `<inbox>.*` receives every PubAck.

/** The reply subject of send number `attempt` (1-based) of record `seq`. */
export function replySubject(inbox: string, seq: number, attempt: number): string {
  return attempt === 1 ? `${inbox}.${seq}` : `${inbox}.${seq}_${attempt}`
}

/** The record and attempt a reply on `subject` (under `<inbox>.`) answers; NaN seq when it names none. */
export function parseReplySubject(inbox: string, subject: string): { seq: number; attempt: number } {
  const token = subject.slice(inbox.length + 1)
  const cut = token.indexOf('_')
  return { seq: Number(cut < 0 ? token : token.slice(0, cut)), attempt: cut < 0 ? 1 : Number(token.slice(cut + 1)) }
}

/**
 * Only the record a reply on `subject` (under `<inbox>.`) answers, without allocating (the PubAck
 * path): the digits after the inbox up to `_` or the end; NaN when it names none.
 */
export function replySeq(inbox: string, subject: string): number {
  const from = inbox.length + 1
  let seq = 0
  let i = from
  for (; i < subject.length; i++) {
    const c = subject.charCodeAt(i)
    if (c === 0x5f) break // '_'
    if (c < 0x30 || c > 0x39) return Number.NaN
    seq = seq * 10 + (c - 0x30)
  }
  return i === from ? Number.NaN : seq
}
