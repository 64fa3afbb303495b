// Canary devices for hostile tests: steady QoS 1 publishers with a ledger of PUBACKs and their latency, checked against the stream afterwards.
import fs from 'node:fs'
import type { IClientOptions, MqttClient } from 'mqtt'
import { CONTENT_TYPE_CBOR, decodeCbor, topicToSubject, uplinkContentType } from '../../src/codec/index.js'
import { connectClient } from './mqtt.js'
import { readStream } from './stream.js'
import type { StoredMessage } from './stream.js'

/** A device publishing `{device, seq, ts}` at QoS 1 on `<topicRoot>/<id>/telemetry` at a fixed rate. */
export interface Canary {
  readonly id: string
  readonly topic: string
  readonly client: MqttClient
  /** seq → PUBACK latency in ms (publish call to PUBACK callback). */
  readonly acked: Map<number, number>
  /** Publishes made so far. */
  sent(): number
  /** Times the connection closed while the canary was still publishing. */
  disconnects(): number
  /** Stops publishing, waits up to `timeoutMs` for the PUBACKs still owed, then closes the client. Idempotent. */
  stop(timeoutMs?: number): Promise<void>
}

/** Connects a canary (no reconnect: a canary that is dropped shows up in `disconnects()` and in missing PUBACKs). */
export async function startCanary(port: number, id: string, ratePerSec = 50, opts: IClientOptions & { topic?: string } = {}): Promise<Canary> {
  const { topic: topicOpt, ...clientOpts } = opts
  const client = await connectClient(port, id, clientOpts)
  client.on('error', () => {})
  const topic = topicOpt ?? `canary/${id}/telemetry`
  const acked = new Map<number, number>()
  let next = 0
  let inflight = 0
  let running = true
  let stopped = false
  let dropped = 0
  let drained: (() => void) | undefined
  client.on('close', () => {
    if (running) dropped++
  })
  const timer = setInterval(() => {
    const seq = ++next
    const started = performance.now()
    inflight++
    client.publish(topic, JSON.stringify({ device: id, seq, ts: Date.now() }), { qos: 1 }, (err) => {
      inflight--
      if (!err) acked.set(seq, performance.now() - started)
      if (!running && inflight === 0) drained?.()
    })
  }, 1000 / ratePerSec)
  return {
    id,
    topic,
    client,
    acked,
    sent: () => next,
    disconnects: () => dropped,
    async stop(timeoutMs = 10_000) {
      if (stopped) return
      stopped = true
      running = false
      clearInterval(timer)
      if (inflight > 0) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, timeoutMs)
          drained = () => {
            clearTimeout(t)
            resolve()
          }
        })
      }
      await client.endAsync(true).catch(() => {})
    },
  }
}

/** Resolves once every canary has `n` PUBACKs, or rejects after `timeoutMs` (the gateway is not answering). */
export async function waitForAcks(canaries: readonly Canary[], n: number, timeoutMs = 10_000): Promise<void> {
  const until = Date.now() + timeoutMs
  while (canaries.some((c) => c.acked.size < n)) {
    if (Date.now() > until) throw new Error(`canaries got ${canaries.map((c) => c.acked.size).join('/')} PUBACKs, wanted ${n} each within ${timeoutMs} ms`)
    await new Promise((r) => setTimeout(r, 20))
  }
}

export interface CanaryCheck {
  /** `<id>:<seq>` PUBACKed but not in the stream. */
  readonly missing: string[]
  /** `<id>:<seq>` in the stream more than once. */
  readonly duplicates: string[]
  /** The whole stream as last read (for further assertions by the test). */
  readonly messages: StoredMessage[]
}

function decodeCanary(m: StoredMessage): { device?: unknown; seq?: unknown } | undefined {
  try {
    const v = uplinkContentType(m.headers['Content-Type']) === CONTENT_TYPE_CBOR ? decodeCbor(m.data) : JSON.parse(Buffer.from(m.data).toString('utf8'))
    return typeof v === 'object' && v !== null ? (v as { device?: unknown; seq?: unknown }) : undefined
  } catch {
    return undefined
  }
}

/**
 * Reads the stream until every PUBACKed canary message is in it (or `timeoutMs` passes) and
 * reports what is missing or stored twice. Messages count as a canary's only on its exact subject.
 */
export async function checkCanaries(url: string, canaries: readonly Canary[], timeoutMs = 15_000, prefix = 'ferry'): Promise<CanaryCheck> {
  const bySubject = new Map(canaries.map((c) => [topicToSubject(prefix, c.topic), c]))
  const until = Date.now() + timeoutMs
  for (;;) {
    const messages = await readStream(url)
    const seen = new Map<string, number>()
    for (const m of messages) {
      const c = bySubject.get(m.subject)
      if (!c) continue
      const v = decodeCanary(m)
      const k = `${String(v?.device)}:${String(v?.seq)}`
      seen.set(k, (seen.get(k) ?? 0) + 1)
    }
    const missing = canaries.flatMap((c) => [...c.acked.keys()].filter((s) => !seen.has(`${c.id}:${s}`)).map((s) => `${c.id}:${s}`))
    if (missing.length === 0 || Date.now() > until) {
      const duplicates = [...seen].filter(([, n]) => n > 1).map(([k]) => k)
      return { missing, duplicates, messages }
    }
    await new Promise((r) => setTimeout(r, 200))
  }
}

/** The `q` quantile (0..1) of `values` (nearest rank); NaN when empty. */
export function quantile(values: Iterable<number>, q: number): number {
  const v = [...values].sort((a, b) => a - b)
  if (v.length === 0) return NaN
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil(q * v.length) - 1))]!
}

/** Resident set size of process `pid` in bytes, from /proc/<pid>/status (VmRSS). */
export function rssBytes(pid: number): number {
  const m = /^VmRSS:\s+(\d+)\s+kB$/m.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  if (!m) throw new Error(`no VmRSS in /proc/${pid}/status`)
  return Number(m[1]) * 1024
}
