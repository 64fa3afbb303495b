// Classifies a JetStream PubAck without JSON parsing in the common case (the forwarder's hot path).
//
// nats-server 2.9 writes PubAcks by hand: `{"stream":"S", "seq":1}`, with `,"duplicate": true`
// appended for a duplicate; errors are `{"error":{"code":400,"err_code":10054,"description":"..."}}`
// (clustered servers marshal the same fields without spaces). Keys end with a colon; a stream name
// or domain never contains `":`, so searching for `"error":` cannot be fooled by a stream named
// "error".

const ERROR_KEY = Buffer.from('"error":')
const DUPLICATE_KEY = Buffer.from('"duplicate":')
const STREAM_KEY = Buffer.from('{"stream":')

export type PubAckResult =
  | { readonly kind: 'stored' | 'duplicate' }
  | { readonly kind: 'error'; readonly reason: string; readonly permanent: boolean }

/** What a reply to a JetStream publish says: stored, duplicate (also stored), or an error (4xx = permanent). */
export function classifyPubAck(body: Buffer): PubAckResult {
  if (body.indexOf(ERROR_KEY) >= 0) {
    let parsed: { error?: { code?: number; err_code?: number; description?: string } }
    try {
      parsed = JSON.parse(body.toString()) as typeof parsed
    } catch {
      return { kind: 'error', reason: 'unparseable PubAck', permanent: false }
    }
    const code = parsed.error?.code ?? 500
    return { kind: 'error', reason: `JetStream error ${code}/${parsed.error?.err_code ?? 0}: ${parsed.error?.description ?? ''}`, permanent: code >= 400 && code < 500 }
  }
  if (body.indexOf(STREAM_KEY) !== 0) {
    // Not a PubAck (something else answered on the subject): no proof that JetStream stored it.
    return { kind: 'error', reason: `unexpected reply: ${body.subarray(0, 80).toString()}`, permanent: false }
  }
  // The field is only present when true.
  return { kind: body.indexOf(DUPLICATE_KEY) >= 0 ? 'duplicate' : 'stored' }
}
