// Reads a JetStream stream back (every message, in stream order) for assertions.
import { connect } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'

export interface StoredMessage {
  readonly seq: number
  readonly subject: string
  readonly headers: Record<string, string>
  readonly data: Uint8Array
}

/** Number of messages in the stream (0 when it does not exist). */
export async function streamCount(url: string, stream = 'FERRY'): Promise<number> {
  const nc = await connect({ servers: url })
  try {
    const jsm = await jetstreamManager(nc)
    return (await jsm.streams.info(stream)).state.messages
  } catch {
    return 0
  } finally {
    await nc.close()
  }
}

/** Polls until the stream holds at least `n` messages or the deadline passes; returns the count. */
export async function waitForCount(url: string, n: number, timeoutMs = 30_000, stream = 'FERRY'): Promise<number> {
  const until = Date.now() + timeoutMs
  for (;;) {
    const c = await streamCount(url, stream)
    if (c >= n || Date.now() > until) return c
    await new Promise((r) => setTimeout(r, 100))
  }
}

/** Every message of the stream, in order. */
export async function readStream(url: string, stream = 'FERRY'): Promise<StoredMessage[]> {
  const nc = await connect({ servers: url })
  try {
    const jsm = await jetstreamManager(nc)
    const total = (await jsm.streams.info(stream)).state.messages
    const out: StoredMessage[] = []
    if (total === 0) return out
    const js = jetstream(nc)
    const consumer = await js.consumers.get(stream) // ordered consumer
    const iter = await consumer.consume()
    for await (const m of iter) {
      const headers: Record<string, string> = {}
      if (m.headers) for (const [k, v] of m.headers) headers[k] = v[0] ?? ''
      out.push({ seq: m.seq, subject: m.subject, headers, data: m.data })
      if (out.length >= total) break
    }
    return out
  } finally {
    await nc.close()
  }
}
