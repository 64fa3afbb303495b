// Review of issue 16 ingress: over --device-max-rate a QoS 0 publisher's socket is paused ("its
// socket is not read meanwhile", README): what the device sends while paused is not read, so it is
// neither stored nor held in memory faster than the rate. A device that keeps sending in many small
// writes (each wakes the socket up) must stay paused too: aedes counts each 'readable' event as one
// publish answered, so it read on while publishes were held, and the holds (each keeping its packet)
// grew with whatever the device sent: --device-max-rate neither slowed a QoS 0 flooder nor bounded
// the memory it takes.
// Bundled gateway, real nats-server, raw MQTT 3.1.1 over TCP (mqtt-packet).
import net from 'node:net'
import path from 'node:path'
import mqttPacket from 'mqtt-packet'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { packetLog } from '../helpers/packets.js'

const RATE = 10

async function metric(g: GatewayProcess, name: string, ...labels: string[]): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.httpPort}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) if (labels.every((l) => (m[1] ?? '').includes(l))) sum += Number(m[2])
  return sum
}

describe('device rate (review) - a QoS 0 publisher over the rate stays paused', () => {
  let nats: NatsServer
  let gw: GatewayProcess

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', path.join(tempDir('ferry-review-qos0-pause-'), 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--presence', 'off', '--device-max-rate', String(RATE)])
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.[Symbol.asyncDispose]()
  })

  it('device rate - QoS 0 sent in many small writes: read no faster than the rate (plus a burst and what one read holds)', async () => {
    const log = packetLog(4, 10_000)
    const s = net.connect(gw.port, '127.0.0.1')
    s.on('data', (b: Buffer) => log.parse(b))
    try {
      await new Promise<void>((resolve) => s.once('connect', () => resolve()))
      s.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: 'qos0-pause', clean: true, keepalive: 0 }))
      await log.next((p) => p.cmd === 'connack')
      const before = await metric(gw, 'ferry_mqtt_received_messages_total', 'qos="0"')
      const t0 = performance.now()
      // 300 writes of one publish, ~3 ms apart (~1 s or more): 30 times the rate.
      for (let i = 0; i < 300; i++) {
        s.write(mqttPacket.generate({ cmd: 'publish', topic: 'rate/qos0p', payload: Buffer.from(`m${i}`), qos: 0, retain: false, dup: false }))
        await new Promise((r) => setTimeout(r, 3))
      }
      const elapsedS = (performance.now() - t0) / 1000
      const read = (await metric(gw, 'ferry_mqtt_received_messages_total', 'qos="0"')) - before
      const holding = await metric(gw, 'ferry_ingress_device_rate_holding')
      // Paused: at most a burst (RATE) + RATE per second elapsed, plus what one read takes in (what
      // the device sent while the gateway was busy: ~100 ms of writes, several hundred ms on a loaded
      // machine: 127 read once in CI) and slack. Read on (the bug), nearly all 300 were read and ~280 held.
      expect(read).toBeLessThan(RATE + RATE * elapsedS + 200)
      // Held (each with its packet, payload included, in memory): about one read's worth, not all that was read.
      expect(holding).toBeLessThan(RATE + 200)
    } finally {
      s.destroy()
    }
  }, 30_000)
})
