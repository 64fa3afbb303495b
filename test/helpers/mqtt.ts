// MQTT client helpers (the real `mqtt` package) for tests.
import mqtt from 'mqtt'
import type { IClientOptions, MqttClient } from 'mqtt'

/** Connects and waits for CONNACK. */
export async function connectClient(port: number, clientId: string, opts: IClientOptions = {}): Promise<MqttClient> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId, reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve())
    c.once('error', reject)
  })
  return c
}

/** Publishes `count` JSON messages {device, seq} at QoS 1 with up to `window` in flight; resolves with the acked seqs. */
export async function publishSeries(c: MqttClient, device: string, count: number, window = 20, from = 1): Promise<number[]> {
  const acked: number[] = []
  let next = from
  const end = from + count
  await new Promise<void>((resolve, reject) => {
    let inflight = 0
    const pump = (): void => {
      while (inflight < window && next < end) {
        const seq = next++
        inflight++
        const payload = JSON.stringify({ device, seq, temp: 20 + (seq % 10) / 10, ok: true })
        c.publish(`devices/${device}/telemetry`, payload, { qos: 1 }, (err) => {
          inflight--
          if (err) return reject(err)
          acked.push(seq)
          if (acked.length === count) resolve()
          else pump()
        })
      }
    }
    pump()
  })
  return acked
}

export async function endClient(c: MqttClient): Promise<void> {
  await c.endAsync(true).catch(() => {})
}

/** Resolves true when the connection is closed (or already was) within `ms`, false otherwise. */
export function closedWithin(c: MqttClient, ms: number): Promise<boolean> {
  return new Promise((resolve) => {
    if (!c.connected) return resolve(true)
    const t = setTimeout(() => resolve(false), ms)
    c.once('close', () => {
      clearTimeout(t)
      resolve(true)
    })
  })
}
