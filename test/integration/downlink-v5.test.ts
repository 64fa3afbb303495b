// Downlink for MQTT 5 devices through the bundled gateway: a command carries its remaining TTL as
// Message Expiry Interval and its Ferry-Prop-* headers as User Properties (mosquitto_sub -V mqttv5),
// and RPC uses MQTT 5 request/response (Paho v5 answers on the Response Topic with the Correlation
// Data).
import { execFile, spawn } from 'node:child_process'
import fs from 'node:fs'
import { connect, headers } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import mqtt from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { until } from '../helpers/device.js'
import { NO_RESPONDERS, rpcStatus } from '../helpers/rpc.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { reapAtExit } from '../helpers/reap.js'

const PYTHON = fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3'

describe('downlink to MQTT 5 devices', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let nc: NatsConnection
  const dataDir = tempDir('ferry-downlink-v5-')

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', dataDir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--rpc-timeout-ms', '3000'])
    nc = await connect({ servers: nats.url })
    expect(await until(async () => (await jetstreamManager(nc)).streams.info('FERRY_CMD').then(() => true, () => false))).toBe(true)
  }, 30_000)

  afterAll(async () => {
    await nc?.close()
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('downlink - a command to a v5 device carries Message Expiry Interval (remaining TTL) and Ferry-Prop-* headers as User Properties (mosquitto_sub)', async () => {
    let out = ''
    const sub = reapAtExit(spawn('mosquitto_sub', ['-V', 'mqttv5', '-p', String(gw.port), '-i', 'v5-cmd', '-q', '1', '-t', 'commands/v5-cmd/#', '-C', '1', '-F', '%t|%E|%P|%p'], { stdio: ['ignore', 'pipe', 'pipe'] }))
    sub.stdout?.on('data', (d: Buffer) => (out += d.toString()))
    const h = headers()
    h.set('Ferry-TTL', '60s')
    h.set('Ferry-Prop-trace', 'abc')
    await jetstream(nc).publish('ferry.cmd.v5-cmd.config.set', '{"rate":5}', { headers: h })
    expect(await until(() => out.includes('\n'))).toBe(true)
    const [topic, expiry, props, payload] = out.trim().split('|')
    expect(topic).toBe('commands/v5-cmd/config/set')
    expect(Number(expiry)).toBeGreaterThan(50)
    expect(Number(expiry)).toBeLessThanOrEqual(60)
    expect(props).toContain('trace:abc')
    expect(payload).toBe('{"rate":5}')
    sub.kill()
  })

  it('downlink - RPC to a v5 device: the request has Response Topic and Correlation Data, the device answers there (Paho v5)', async () => {
    const script = `
import threading
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
done = threading.Event()
def on_message(c, u, m):
    p = Properties(PacketTypes.PUBLISH)
    p.CorrelationData = m.properties.CorrelationData
    c.publish(m.properties.ResponseTopic, b'{"ok":true}', qos=1, properties=p)
    done.set()
c = mqtt.Client(client_id='v5-rpc', protocol=mqtt.MQTTv5)
c.on_message = on_message
c.connect('127.0.0.1', ${gw.port}, 30)
c.subscribe('devices/v5-rpc/rpc/request/+', qos=1)
c.loop_start()
done.wait(15)
import time; time.sleep(0.5)
c.loop_stop()
c.disconnect()
`
    const device = new Promise<void>((resolve) => execFile(PYTHON, ['-c', script], { timeout: 20_000 }, () => resolve()))
    let status = ''
    let body = ''
    expect(
      await until(async () => {
        const r = await nc.request('ferry.rpc.v5-rpc.getConfig', '{}', { timeout: 4000 }).catch(() => undefined)
        status = r?.headers?.get('Ferry-Status') ?? ''
        body = r ? r.string() : ''
        return status.startsWith('200')
      }, 15_000),
    ).toBe(true)
    expect(status).toBe('200 OK')
    expect(body.length).toBeGreaterThan(0)
    await device
  })

  it('downlink - a request larger than the v5 device accepts (its Maximum Packet Size) is answered 413 at once, not after the timeout (mqtt.js v5)', async () => {
    const c = mqtt.connect(`mqtt://127.0.0.1:${gw.port}`, { protocolVersion: 5, clientId: 'v5-small', reconnectPeriod: 0, properties: { maximumPacketSize: 256 } })
    await new Promise<void>((resolve) => c.once('connect', () => resolve()))
    await c.subscribeAsync('devices/v5-small/rpc/request/+', { qos: 1 })
    const got: string[] = []
    c.on('message', (t) => got.push(t))
    // The gateway subscribes the device's requests a moment after the CONNACK: wait for it (a request
    // too large for the device is answered 413 without being delivered, so this sends it nothing).
    expect(await until(async () => (await rpcStatus(nc, 'ferry.rpc.v5-small.getLog', JSON.stringify({ pad: 'x'.repeat(1000) }))) !== NO_RESPONDERS)).toBe(true)
    const t0 = performance.now()
    const r = await nc.request('ferry.rpc.v5-small.getLog', JSON.stringify({ pad: 'x'.repeat(1000) }), { timeout: 5000 })
    expect(r.headers?.get('Ferry-Status')).toBe('413 request larger than the device accepts (its MQTT 5 Maximum Packet Size)')
    expect(performance.now() - t0).toBeLessThan(1000) // --rpc-timeout-ms is 3000
    // A request that fits still reaches it.
    void nc.request('ferry.rpc.v5-small.ping', '{}', { timeout: 5000 }).catch(() => {})
    expect(await until(() => got.length === 1)).toBe(true)
    c.end(true)
  })
})
