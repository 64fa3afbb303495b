// Conformance at CONNECT for both protocol versions (issue 13, "Conformance and refusals"): keepalive 0
// is accepted by default and the socket has TCP keepalive; --max-keepalive bounds non-zero values
// (3.1.1: CONNACK 2, MQTT 5: Server Keep Alive); a zero-length client id with CleanSession 0 gets
// CONNACK 2 [MQTT-3.1.3-8], with CleanSession 1 a generated id. Paho (its own defaults), mqtt.js
// and raw packets where no client lets us send what is tested. The bundled gateway, real nats-server.
import { execFileSync } from 'node:child_process'
import net from 'node:net'
import path from 'node:path'
import mqtt from 'mqtt'
import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { runPaho } from '../helpers/paho.js'

/** Sends one raw CONNECT and resolves with the CONNACK code (or 'closed'). */
function rawConnack(port: number, connect: Partial<mqttPacket.IConnectPacket> | Buffer, protocolVersion: 4 | 5 = 4): Promise<number | 'closed'> {
  const sock = net.connect(port, '127.0.0.1')
  const parser = mqttPacket.parser({ protocolVersion })
  return new Promise((resolve) => {
    parser.on('packet', (p: Packet) => {
      if (p.cmd !== 'connack') return
      sock.destroy()
      resolve(p.reasonCode ?? p.returnCode ?? -1)
    })
    sock.on('data', (b: Buffer) => parser.parse(b))
    sock.on('close', () => resolve('closed'))
    sock.write(Buffer.isBuffer(connect) ? connect : mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion, clientId: 'x', clean: true, keepalive: 60, ...connect }, { protocolVersion }))
  })
}

/** CONNECT with a zero-length client id and CleanSession 0, keepalive 60 (mqtt-packet refuses to encode it). */
const EMPTY_ID_PERSISTENT = { 4: Buffer.from('100c00044d5154540400003c0000', 'hex'), 5: Buffer.from('100d00044d5154540500003c000000', 'hex') }

describe('conformance - CONNECT for MQTT 3.1.1 and 5 (bundled gateway, default limits)', () => {
  let nats: NatsServer
  let gw: GatewayProcess

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', path.join(tempDir('ferry-conf-'), 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0'])
  }, 30_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('conformance - keepalive 0 is accepted by default (paho 3.1.1 and 5, mqtt.js) and the socket has TCP keepalive on', async () => {
    const p3 = await runPaho({ port: gw.port, version: 4, clientId: 'ka0-paho3', keepalive: 0, publish: [{ topic: 'devices/ka0/t', payload: '{"a":1}', qos: 1 }] })
    expect(p3.connack).toBe(0)
    expect(p3.published).toEqual([1])
    const p5 = await runPaho({ port: gw.port, version: 5, clientId: 'ka0-paho5', keepalive: 0 })
    expect(p5.connack).toBe(0)
    expect(p5.connackProps.ServerKeepAlive).toBe(3600) // MQTT 5: the bound, as Server Keep Alive
    const c = mqtt.connect(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'ka0-mqttjs', keepalive: 0, reconnectPeriod: 0 })
    await new Promise((r) => c.once('connect', r))
    // The gateway's side of this connection has a keepalive timer (ss shows "timer:(keepalive,…)").
    const local = (c.stream as net.Socket).localPort
    const ss = execFileSync('ss', ['-tnoH', 'state', 'established', `( dport = :${local} )`], { encoding: 'utf8' })
    expect(ss).toContain('keepalive')
    await endClient(c)
  })

  it('conformance - a non-zero keepalive above --max-keepalive: CONNACK 2 for 3.1.1 (paho, mqtt.js), Server Keep Alive for MQTT 5', async () => {
    const p3 = await runPaho({ port: gw.port, version: 4, clientId: 'ka-big-paho3', keepalive: 7200 })
    expect(p3.connack).toBe(2)
    expect(await rawConnack(gw.port, { clientId: 'ka-big-raw', keepalive: 7200 })).toBe(2)
    const p5 = await runPaho({ port: gw.port, version: 5, clientId: 'ka-big-paho5', keepalive: 7200 })
    expect(p5.connack).toBe(0)
    expect(p5.connackProps.ServerKeepAlive).toBe(3600)
  })

  it('conformance - a zero-length client id: CleanSession 0 gets CONNACK 2 [MQTT-3.1.3-8]; CleanSession 1 gets a generated id (paho 3.1.1)', async () => {
    expect(await rawConnack(gw.port, EMPTY_ID_PERSISTENT[4])).toBe(2)
    expect(await rawConnack(gw.port, { clientId: '', clean: true })).toBe(0)
    const p = await runPaho({ port: gw.port, version: 4, clientId: '', clean: true, publish: [{ topic: 'devices/anon/t', payload: '{"a":1}', qos: 1 }] })
    expect(p.connack).toBe(0)
    expect(p.published).toEqual([1])
    // MQTT 5 allows it with either Clean Start: an Assigned Client Identifier (mqtt5-connect.test.ts).
    expect(await rawConnack(gw.port, EMPTY_ID_PERSISTENT[5], 5)).toBe(0)
  })
})
