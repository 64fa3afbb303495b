// Classifies a JetStream PubAck without JSON parsing in the common case (the forwarder's hot path).
//
// nats-server 2.9 writes PubAcks by hand: `{"stream":"S", "seq":1}`, with `,"duplicate": true`
// appended for a duplicate; errors are `{"error":{"code":400,"err_code":10054,"description":"..."}}`
// (clustered servers marshal the same fields without spaces). Keys end with a colon; a stream name
// or domain never contains `":`, so searching for `"error":` cannot be fooled by a stream named
// "error".
//
// A PubAck must name the configured stream. Publishes carry `Nats-Expected-Stream` (except under
// --uplink-headers compact), so JetStream itself refuses to store them in another stream (err_code
// 10060); under compact this check is the only guard. A reply naming another stream is a forgery
// (anyone who can publish on Ferry's inbox), or under compact a store in another stream, and proves
// nothing. Both are failures, not
// permanent ones: the message is kept and sent again, never dead-lettered for it. A forger naming the
// right stream cannot be told apart here: NATS permissions must keep others off the inbox (README).

const ERROR_KEY = Buffer.from('"error":')
const DUPLICATE_KEY = Buffer.from('"duplicate":')
const STREAM_KEY = Buffer.from('{"stream":')

/** JetStream's "expected stream does not match" (a publish carrying Nats-Expected-Stream captured by another stream). */
const STREAM_NOT_MATCH = 10060

export type PubAckResult =
  | { readonly kind: 'stored' | 'duplicate' }
  | { readonly kind: 'error'; readonly reason: string; readonly permanent: boolean; readonly wrongStream?: true }

/** The stream a PubAck must name, with its fast-path prefix precomputed. */
export interface ExpectedStream {
  readonly name: string
  readonly prefix: Buffer
}

/** Builds the {@link ExpectedStream} of `name` (once per forwarder). */
export function expectStream(name: string): ExpectedStream {
  return { name, prefix: Buffer.from(`{"stream":${JSON.stringify(name)},`) }
}

const STORED: PubAckResult = Object.freeze({ kind: 'stored' })
const DUPLICATE: PubAckResult = Object.freeze({ kind: 'duplicate' })
const QUOTE = 0x22
const ERROR_TAIL = Buffer.from('error":')
const DUPLICATE_TAIL = Buffer.from('duplicate":')

/** True when `body` holds `key` at `at`. */
function holdsAt(body: Uint8Array, at: number, key: Uint8Array): boolean {
  if (at + key.length > body.length) return false
  for (let i = 0; i < key.length; i++) if (body[at + i] !== key[i]) return false
  return true
}

/**
 * The common PubAck, decided in JavaScript (no native indexOf calls, no allocation): it starts with
 * `expected`'s prefix and holds no `"error":` key. STORED or DUPLICATE, or undefined for anything else
 * (then the general path decides, with the same result it always gave).
 */
function fastPubAck(body: Uint8Array, expected: ExpectedStream): PubAckResult | undefined {
  const { prefix } = expected
  if (!holdsAt(body, 0, prefix)) return undefined
  let duplicate = false
  // The prefix holds no such key (a stream name's quotes are escaped there), so the scan starts after it.
  for (let i = prefix.length; i < body.length; i++) {
    if (body[i] !== QUOTE) continue
    if (holdsAt(body, i + 1, ERROR_TAIL)) return undefined
    if (holdsAt(body, i + 1, DUPLICATE_TAIL)) duplicate = true
  }
  return duplicate ? DUPLICATE : STORED
}

/**
 * What a reply to a JetStream publish says: stored, duplicate (also stored), or an error (4xx = permanent). A PubAck
 * naming a stream other than `expected`, and JetStream's refusal to store in another stream, are non-permanent errors
 * with `wrongStream`.
 */
export function classifyPubAck(data: Uint8Array, expected: ExpectedStream): PubAckResult {
  const fast = fastPubAck(data, expected)
  if (fast !== undefined) return fast
  const body = Buffer.isBuffer(data) ? data : Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  if (body.indexOf(ERROR_KEY) >= 0) {
    let parsed: { error?: { code?: number; err_code?: number; description?: string } }
    try {
      parsed = JSON.parse(body.toString()) as typeof parsed
    } catch {
      return { kind: 'error', reason: 'unparseable PubAck', permanent: false }
    }
    const code = parsed.error?.code ?? 500
    if (parsed.error?.err_code === STREAM_NOT_MATCH) {
      return { kind: 'error', reason: `JetStream error ${code}/${STREAM_NOT_MATCH}: ${parsed.error.description ?? ''} (another stream captures the subject; expected "${expected.name}")`, permanent: false, wrongStream: true }
    }
    return { kind: 'error', reason: `JetStream error ${code}/${parsed.error?.err_code ?? 0}: ${parsed.error?.description ?? ''}`, permanent: code >= 400 && code < 500 }
  }
  if (body.indexOf(STREAM_KEY) !== 0) {
    // Not a PubAck (something else answered on the subject): no proof that JetStream stored it.
    return { kind: 'error', reason: `unexpected reply: ${body.subarray(0, 80).toString()}`, permanent: false }
  }
  const { prefix } = expected
  if (body.length < prefix.length || body.compare(prefix, 0, prefix.length, 0, prefix.length) !== 0) {
    // Another stream, or the same name written differently (escapes, spacing): decide on the parsed value.
    let stream: unknown
    try {
      stream = (JSON.parse(body.toString()) as { stream?: unknown }).stream
    } catch {
      return { kind: 'error', reason: 'unparseable PubAck', permanent: false }
    }
    if (stream !== expected.name) {
      return { kind: 'error', reason: `PubAck names stream ${JSON.stringify(stream).slice(0, 80)}, not "${expected.name}" (forged, or not from JetStream)`, permanent: false, wrongStream: true }
    }
  }
  // The field is only present when true.
  return body.indexOf(DUPLICATE_KEY) >= 0 ? DUPLICATE : STORED
}
