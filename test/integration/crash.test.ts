// Crash: SIGKILL the bundled gateway under load, restart it, and check that every PUBACKed message is in the stream exactly once.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import { decodeCbor } from '../../src/codec/index.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { freePort, startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

let nats: NatsServer
beforeAll(async () => {
  nats = await startNats()
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

/** A device that publishes numbered QoS 1 messages until stopped, reconnecting like firmware, and keeps a ledger of PUBACKed seqs. */
function device(port: number, id: string): { client: MqttClient; acked: Set<number>; stop: () => Promise<void>; sent: () => number } {
  const client = mqtt.connect(`mqtt://127.0.0.1:${port}`, { clientId: id, reconnectPeriod: 100, connectTimeout: 2000, clean: true })
  client.on('error', () => {})
  const acked = new Set<number>()
  let next = 1
  let inflight = 0
  let running = true
  let drained: (() => void) | undefined
  const pump = (): void => {
    while (running && inflight < 10) {
      const seq = next++
      inflight++
      client.publish(`devices/${id}/telemetry`, JSON.stringify({ device: id, seq, ts: Date.now() }), { qos: 1 }, (err) => {
        inflight--
        if (!err) acked.add(seq)
        if (!running && inflight === 0) drained?.()
        else setImmediate(pump)
      })
    }
  }
  client.on('connect', pump)
  return {
    client,
    acked,
    sent: () => next - 1,
    stop: () =>
      new Promise<void>((resolve) => {
        running = false
        if (inflight === 0) resolve()
        else drained = resolve
      }),
  }
}

describe('crash', () => {
  it('crash - SIGKILL under load three times: every PUBACKed message is in the stream, none twice', async () => {
    const port = await freePort()
    const args = ['--mqtt-listen', `127.0.0.1:${port}`, '--data-dir', tempDir(), '--nats-url', nats.url, '--gateway-id', 'crash']
    let gw: GatewayProcess = await spawnGateway(args)
    try {
      const devices = Array.from({ length: 5 }, (_, i) => device(port, `crash-${i}`))
      const total = (): number => devices.reduce((s, d) => s + d.acked.size, 0)
      for (let round = 0; round < 3; round++) {
        const target = total() + 1500
        const until = Date.now() + 20_000
        while (total() < target && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
        expect(total()).toBeGreaterThanOrEqual(target)
        await gw.kill('SIGKILL')
        gw = await spawnGateway(args)
      }
      await Promise.all(devices.map((d) => d.stop()))
      await Promise.all(devices.map((d) => d.client.endAsync()))
      const acked = total()
      const sent = devices.reduce((s, d) => s + d.sent(), 0)
      expect(acked).toBe(sent) // every publish was eventually acknowledged
      await waitForCount(nats.url, acked, 60_000)
      // Give any late resend a moment to show up as a duplicate before we count.
      await new Promise((r) => setTimeout(r, 500))
      const msgs = await readStream(nats.url)
      const seen = new Map<string, number>()
      for (const m of msgs) {
        const v = decodeCbor(m.data) as { device: string; seq: number }
        const k = `${v.device}:${v.seq}`
        seen.set(k, (seen.get(k) ?? 0) + 1)
      }
      const missing: string[] = []
      for (const d of devices) for (const s of d.acked) if (!seen.has(`crash-${devices.indexOf(d)}:${s}`)) missing.push(`${devices.indexOf(d)}:${s}`)
      const dups = [...seen].filter(([, n]) => n > 1).map(([k]) => k)
      expect(missing).toEqual([])
      expect(dups).toEqual([])
      expect(msgs.length).toBe(acked)
      expect(await gw.kill('SIGTERM')).toBe(0)
    } finally {
      await gw.kill('SIGKILL')
    }
  })
})
