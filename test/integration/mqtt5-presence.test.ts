// Presence `disconnected` events of MQTT 5 devices carry the DISCONNECT reason code (issue 13): the
// device's own (mosquitto_pub -V mqttv5, paho v5), or the one the gateway sent (0x8E on a takeover).
// 3.1.1 devices' events have none. Bundled gateway, real nats-server.
import { spawn } from 'node:child_process'
import path from 'node:path'
import mqtt from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor } from '../../src/codec/index.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { runPaho } from '../helpers/paho.js'
import { reapAtExit } from '../helpers/reap.js'
import { readStream } from '../helpers/stream.js'

describe('mqtt5 - presence reason codes (bundled gateway)', () => {
  let nats: NatsServer
  let gw: GatewayProcess

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', path.join(tempDir('ferry-v5pres-'), 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0'])
  }, 30_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  /** The disconnected events of `device`, once `n` are stored. */
  async function disconnects(device: string, n: number): Promise<{ reason?: string; reasonCode?: number }[]> {
    let out: { reason?: string; reasonCode?: number }[] = []
    for (let i = 0; i < 100; i++) {
      out = (await readStream(nats.url, 'FERRY', 'events')).filter((m) => m.subject === `ferry.events.${device}.disconnected`).map((m) => decodeCbor(m.data) as { reason?: string; reasonCode?: number })
      if (out.length >= n) break
      await new Promise((r) => setTimeout(r, 100))
    }
    return out
  }

  it('presence - a v5 DISCONNECT reason code (mosquitto_pub, paho) and the gateway\'s 0x8E on a takeover are in the event; none for 3.1.1', async () => {
    const child = reapAtExit(spawn('mosquitto_pub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(gw.port), '-i', 'pres-mosq', '-t', 'devices/pres-mosq/t', '-m', '{}', '-q', '1'], { stdio: 'ignore' }))
    await new Promise((r) => child.once('exit', r))
    expect(await disconnects('pres-mosq', 1)).toMatchObject([{ reason: 'clean', reasonCode: 0 }])
    const p = await runPaho({ port: gw.port, version: 5, clientId: 'pres-paho' })
    expect(p.connack).toBe(0)
    expect(await disconnects('pres-paho', 1)).toMatchObject([{ reason: 'clean', reasonCode: 0 }])
    const first = mqtt.connect(`mqtt://127.0.0.1:${gw.port}`, { protocolVersion: 5, clientId: 'pres-take', reconnectPeriod: 0 })
    await new Promise((r) => first.once('connect', r))
    const told = new Promise<number | undefined>((resolve) => first.once('disconnect', (d) => resolve(d.reasonCode)))
    const second = await runPaho({ port: gw.port, version: 5, clientId: 'pres-take' })
    expect(second.connack).toBe(0)
    expect(await told).toBe(0x8e)
    first.end(true)
    const take = await disconnects('pres-take', 2)
    expect(take[0]).toMatchObject({ reason: 'takeover', reasonCode: 0x8e })
    const v3 = await connectClient(gw.port, 'pres-v3')
    await v3.endAsync() // sends DISCONNECT
    const [e] = await disconnects('pres-v3', 1)
    expect(e).toMatchObject({ reason: 'clean' })
    expect(e?.reasonCode).toBeUndefined()
  })
})
