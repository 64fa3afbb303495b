// Steady QoS 1 load from several devices, every publish and PUBACK written to an AckLedger.
import type { MqttClient } from 'mqtt'
import type { AckLedger } from './ack-ledger.js'
import { connectClient } from './mqtt.js'

export interface LoadOptions {
  /** Device (client) ids. */
  readonly devices: readonly string[]
  /** Topic of a device's messages. Default `load/<id>/telemetry`. */
  readonly topicOf?: (device: string) => string
  /** Publishes per second per device. Default 200. */
  readonly ratePerSec?: number
  /** Most unacknowledged publishes per device. Default 20. */
  readonly window?: number
}

export interface Load {
  readonly clients: ReadonlyMap<string, MqttClient>
  /** PUBACKs received so far, all devices. */
  acked(): number
  /** Publishes handed to MQTT so far, all devices. */
  sent(): number
  /** Connections that closed while the load was running (the gateway dropped a device). */
  drops(): number
  /** Stops publishing, waits up to `timeoutMs` for the PUBACKs still owed, then closes the clients. Idempotent. */
  stop(timeoutMs?: number): Promise<void>
}

const TICK_MS = 20

/** Connects every device and starts publishing `{device, seq, ts, pad}` JSON at the given rate. */
export async function startLoad(port: number, ledger: AckLedger, opts: LoadOptions): Promise<Load> {
  const rate = opts.ratePerSec ?? 200
  const window = opts.window ?? 20
  const topicOf = opts.topicOf ?? ((d: string) => `load/${d}/telemetry`)
  const clients = new Map<string, MqttClient>()
  for (const d of opts.devices) {
    const c = await connectClient(port, d)
    c.on('error', () => {})
    clients.set(d, c)
  }
  let running = true
  let stopped = false
  let acked = 0
  let sent = 0
  let drops = 0
  let inflightAll = 0
  let drained: (() => void) | undefined
  const state = opts.devices.map((d) => ({ d, c: clients.get(d)!, topic: topicOf(d), next: 1, inflight: 0, credit: 0 }))
  for (const s of state) {
    s.c.on('close', () => {
      if (running) drops++
    })
  }
  const timer = setInterval(() => {
    for (const s of state) {
      s.credit = Math.min(s.credit + (rate * TICK_MS) / 1000, rate) // at most a second of catch-up
      while (s.credit >= 1 && s.inflight < window && s.c.connected) {
        s.credit--
        const seq = s.next++
        s.inflight++
        inflightAll++
        sent++
        ledger.sent(s.d, seq, s.topic)
        s.c.publish(s.topic, JSON.stringify({ device: s.d, seq, ts: Date.now(), pad: 'x'.repeat(40) }), { qos: 1 }, (err) => {
          s.inflight--
          inflightAll--
          if (!err) {
            acked++
            ledger.acked(s.d, seq)
          }
          if (!running && inflightAll === 0) drained?.()
        })
      }
    }
  }, TICK_MS)
  return {
    clients,
    acked: () => acked,
    sent: () => sent,
    drops: () => drops,
    async stop(timeoutMs = 15_000) {
      if (stopped) return
      stopped = true
      running = false
      clearInterval(timer)
      if (inflightAll > 0) {
        await new Promise<void>((resolve) => {
          const t = setTimeout(resolve, timeoutMs)
          drained = () => {
            clearTimeout(t)
            resolve()
          }
        })
      }
      await Promise.all([...clients.values()].map((c) => c.endAsync(true).catch(() => {})))
    },
  }
}

/** Polls `cond` every `everyMs` until it holds; throws `what` after `timeoutMs`. */
export async function until(cond: () => boolean | Promise<boolean>, timeoutMs: number, what: string | (() => string | Promise<string>), everyMs = 50): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (await cond()) return
    if (Date.now() > deadline) throw new Error(`timed out after ${timeoutMs} ms waiting for ${typeof what === 'string' ? what : await what()}`)
    await new Promise((r) => setTimeout(r, everyMs))
  }
}

/**
 * Publishes seqs `from`..`from + count - 1` of `device` on `topic` at QoS 1 with up to `window`
 * unacknowledged, each `{device, seq, tag?}` written to the ledger; resolves once all are PUBACKed.
 */
export async function publishTracked(
  client: MqttClient,
  ledger: AckLedger,
  opts: { device: string; topic: string; count: number; from?: number; window?: number; tag?: string },
): Promise<void> {
  const { device, topic, count } = opts
  const from = opts.from ?? 1
  const window = opts.window ?? 100
  let next = from
  let done = 0
  await new Promise<void>((resolve, reject) => {
    let inflight = 0
    const pump = (): void => {
      while (inflight < window && next < from + count) {
        const seq = next++
        inflight++
        ledger.sent(device, seq, topic)
        const payload = JSON.stringify(opts.tag === undefined ? { device, seq } : { device, seq, tag: opts.tag })
        client.publish(topic, payload, { qos: 1 }, (err) => {
          inflight--
          if (err) return reject(err)
          ledger.acked(device, seq)
          if (++done === count) resolve()
          else pump()
        })
      }
    }
    pump()
  })
}
