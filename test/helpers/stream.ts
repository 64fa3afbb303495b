// Reads a JetStream stream back (in stream order) for assertions. By default only device data,
// `<prefix>.up.>` (the tests' prefix is the stream name in lower case); `which: 'events'` reads
// Ferry's device events (`<prefix>.events.>`), `'all'` everything.
import { connect } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'

export interface StoredMessage {
  readonly seq: number
  readonly subject: string
  readonly headers: Record<string, string>
  readonly data: Uint8Array
}

export type Which = 'up' | 'events' | 'all'

function filterOf(stream: string, which: Which): string {
  return which === 'all' ? '>' : `${stream.toLowerCase()}.${which}.>`
}

/** Number of messages in the stream (0 when it does not exist), device data only by default. */
export async function streamCount(url: string, stream = 'FERRY', which: Which = 'up'): Promise<number> {
  const nc = await connect({ servers: url })
  try {
    const jsm = await jetstreamManager(nc)
    if (which === 'all') return (await jsm.streams.info(stream)).state.messages
    const subjects = (await jsm.streams.info(stream, { subjects_filter: filterOf(stream, which) })).state.subjects ?? {}
    return Object.values(subjects).reduce((a, b) => a + b, 0)
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

/** The stream's messages in order, device data only by default. */
export async function readStream(url: string, stream = 'FERRY', which: Which = 'up'): Promise<StoredMessage[]> {
  const total = await streamCount(url, stream, which)
  const out: StoredMessage[] = []
  if (total === 0) return out
  const nc = await connect({ servers: url })
  try {
    const js = jetstream(nc)
    const consumer = await js.consumers.get(stream, { filter_subjects: filterOf(stream, which) }) // ordered consumer
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
