// Review of issue 13 (requests from devices): `Ferry-Device` must be the authenticated identity,
// never what the device claims. With --auth-file, the identity is the username whose password
// verified; the client id is chosen by the device. A device logged in as "alice" that picks the client
// id "bob" (bob not connected) must not be able to ask cloud services as "bob".
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

function passwd(file: string, device: string, password: string): Promise<number | null> {
  const child = spawn(process.execPath, ['dist/ferry.cjs', 'passwd', file, device], { stdio: ['pipe', 'ignore', 'ignore'] })
  child.stdin.end(`${password}\n`)
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)))
}

async function client(port: number, id: string, username: string): Promise<{ c: MqttClient; got: string[] }> {
  const got: string[] = []
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, clientId: id, username, password: `pw-${username}` })
  c.on('message', (topic, payload) => got.push(`${topic} ${payload.toString()}`))
  c.on('error', () => {})
  await new Promise<void>((resolve, reject) => {
    c.once('connect', () => resolve())
    c.once('close', () => reject(new Error(`${id} could not connect`)))
  })
  return { c, got }
}

describe('requests from devices - identity', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let nc: NatsConnection
  const calls: string[] = []

  beforeAll(async () => {
    nats = await startNats()
    const dir = tempDir('ferry-req-identity-')
    const authFile = path.join(dir, 'devices.passwd')
    for (const d of ['alice', 'bob']) expect(await passwd(authFile, d, `pw-${d}`)).toBe(0)
    // The README's advice for requests: each device reads its own answers (%c), writes its own requests.
    const aclFile = path.join(dir, 'devices.acl')
    fs.writeFileSync(aclFile, 'pattern write requests/%c/#\npattern read devices/%c/requests/reply/#\n', { mode: 0o600 })
    gw = await spawnGateway(['--data-dir', path.join(dir, 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--auth-file', authFile, '--acl-file', aclFile])
    nc = await connect({ servers: nats.url })
    nc.subscribe('ferry.svc.token.get', {
      callback: (_err, m) => {
        const device = m.headers?.get('Ferry-Device') ?? ''
        calls.push(device)
        m.respond(`secret-of-${device}`)
      },
    })
    await nc.flush()
  }, 60_000)

  afterAll(async () => {
    await nc?.close()
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('requests - a device logged in as alice under the client id "bob" is not asked for as bob', async () => {
    const alice = await client(gw.port, 'bob', 'alice')
    await alice.c.publishAsync('requests/bob/token/get/1', '', { qos: 1 })
    expect(await until(() => alice.got.length > 0, 5000)).toBe(true)
    // Either refused (403) or asked as alice; never bob's token.
    expect(calls).not.toContain('bob')
    expect(calls).toEqual(['alice'])
    expect(alice.got.join('\n')).not.toContain('secret-of-bob')
    await endClient(alice.c)
  }, 20_000)
})
