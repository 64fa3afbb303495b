// Review of issue 13: a client id's binding to an identity (src/auth/admission.ts) is "persistent"
// for every non-clean session and only a clean connect of the same identity ends it. An MQTT 5
// session expires (Session Expiry Interval, capped by --max-session-expiry), but the binding stays:
// the client id can never be used by another identity again, and each expired session (e.g. every
// connection with an empty client id, given an Assigned Client Identifier, and a Session Expiry)
// leaves one binding in memory for good. Bundled gateway, real nats-server, mqtt.js v5.
import { spawn } from 'node:child_process'
import path from 'node:path'
import mqtt from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

async function passwd(file: string, device: string, password: string): Promise<void> {
  const child = spawn(process.execPath, ['dist/ferry.cjs', 'passwd', file, device], { stdio: ['pipe', 'ignore', 'ignore'] })
  child.stdin.end(`${password}\n`)
  await new Promise((resolve) => child.once('exit', resolve))
}

/** CONNACK reason code of an MQTT 5 connect (0 accepted), then ends the client. */
function connack(port: number, opts: mqtt.IClientOptions): Promise<number> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { protocolVersion: 5, reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  return new Promise((resolve) => {
    c.once('connect', (p) => {
      c.end(false, { reasonCode: 0 }, () => resolve(p.reasonCode ?? 0))
    })
    c.once('error', (err) => {
      c.end(true)
      resolve((err as { code?: number }).code ?? -1)
    })
  })
}

describe('review - client id bindings of expired MQTT 5 sessions', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  beforeAll(async () => {
    nats = await startNats()
    const dir = tempDir('ferry-bind-')
    const authFile = path.join(dir, 'devices.passwd')
    await passwd(authFile, 'dev-a', 'secret-a')
    await passwd(authFile, 'dev-b', 'secret-b')
    gw = await spawnGateway(['--data-dir', path.join(dir, 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--auth-file', authFile])
  }, 30_000)
  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('after its MQTT 5 session expired, a client id may be used by another identity', async () => {
    expect(await connack(gw.port, { clientId: 'roaming-id', username: 'dev-a', password: 'secret-a', clean: false, properties: { sessionExpiryInterval: 1 } })).toBe(0)
    await new Promise((r) => setTimeout(r, 2000)) // the session (1 s) has expired
    expect(await connack(gw.port, { clientId: 'roaming-id', username: 'dev-b', password: 'secret-b', clean: true })).toBe(0)
  }, 15_000)
})
