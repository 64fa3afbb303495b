// Review of issue 13 (requests from devices): answers a device has not acknowledged are bounded too.
// A device that publishes requests (here each refused at once: its topic names another device) and
// does not PUBACK the answers must not make the gateway hold an answer delivery per request for 30 s
// each: that is unbounded memory, and beyond 65,535 it reuses packet identifiers still in use
// [MQTT-2.3.1-4]. A raw MQTT 3.1.1 client (mqtt-packet) that never PUBACKs.
import net from 'node:net'
import mqttPacket from 'mqtt-packet'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

const REQUESTS = 70_000

describe('requests from devices - unacknowledged answers', () => {
  let nats: NatsServer
  let gw: GatewayProcess

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', tempDir('ferry-req-flood-'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0'])
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('requests - a device that never PUBACKs its answers never gets two in flight with one packet identifier', async () => {
    const sock = net.connect(gw.port, '127.0.0.1')
    await new Promise<void>((resolve) => sock.once('connect', () => resolve()))
    const parser = mqttPacket.parser({ protocolVersion: 4 })
    const inUse = new Set<number>()
    let answers = 0
    let reused = 0
    let connack = false
    parser.on('packet', (p) => {
      if (p.cmd === 'connack') connack = true
      if (p.cmd === 'publish' && p.qos === 1) {
        answers++
        if (inUse.has(p.messageId!)) reused++
        inUse.add(p.messageId!) // never acknowledged
      }
    })
    sock.on('data', (d) => parser.parse(d))
    sock.on('error', () => {})
    sock.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clean: true, clientId: 'flood', keepalive: 60 }))
    expect(await until(() => connack, 5000)).toBe(true)
    // QoS 0 requests naming another device: each answered "403" at once, without a pending slot.
    const chunk: Buffer[] = []
    for (let i = 0; i < REQUESTS; i++) {
      chunk.push(mqttPacket.generate({ cmd: 'publish', topic: `requests/other/config/get/${i}`, payload: Buffer.alloc(0), qos: 0, retain: false, dup: false }))
      if (chunk.length === 1000) sock.write(Buffer.concat(chunk.splice(0)))
    }
    sock.write(Buffer.concat(chunk.splice(0)))
    // Until every request is answered, or no answer has come for 2 s (the rest were not answered).
    let last = -1
    for (let quiet = 0; answers < REQUESTS && quiet < 2000; ) {
      await new Promise((r) => setTimeout(r, 250))
      quiet = answers === last ? quiet + 250 : 0
      last = answers
    }
    sock.destroy()
    // Bounded: far fewer answers in flight than requests, and never one packet id used twice at once.
    expect(reused).toBe(0)
    expect(answers).toBeGreaterThan(0)
    expect(answers).toBeLessThan(65_536)
  }, 90_000)
})
