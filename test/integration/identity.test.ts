// Identifiers at their byte limits (issue 11, item 10): a client id longer than a log entry can hold
// is refused at CONNECT, and nothing a client sends can throw past its handler and end the process.
import path from 'node:path'
import fc from 'fast-check'
import mqtt from 'mqtt'
import type { IClientOptions, MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Gateway } from '../../src/gateway.js'
import { spawnGateway, startGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { checkCanaries, startCanary } from '../helpers/canary.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

/** Connects; resolves with the client, the CONNACK refusal code, or 'closed' without a CONNACK. */
function tryConnect(port: number, opts: IClientOptions): Promise<MqttClient | number | 'closed'> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  return new Promise((resolve) => {
    c.once('connect', () => resolve(c))
    c.once('close', () => resolve('closed'))
    c.once('error', (err) => {
      c.end(true)
      const code = (err as { code?: unknown }).code
      resolve(typeof code === 'number' ? code : 'closed')
    })
  })
}

describe('identity - client ids bounded in bytes (bundled gateway)', () => {
  let nats: NatsServer
  let gw: GatewayProcess

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', path.join(tempDir('ferry-id-'), 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0'])
  }, 30_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('identity - a 260-byte client id of 130 "é" gets CONNACK 2; the gateway stays up and a canary is unaffected', async () => {
    const canary = await startCanary(gw.port, 'canary-id', 50)
    const longId = 'é'.repeat(130)
    expect(longId.length).toBe(130)
    expect(Buffer.byteLength(longId)).toBe(260)
    for (let i = 0; i < 5; i++) expect(await tryConnect(gw.port, { clientId: longId })).toBe(2)
    // The longest id that fits (255 bytes, multi-byte characters) is accepted and can publish.
    const fits = 'é'.repeat(127) + 'a'
    expect(Buffer.byteLength(fits)).toBe(255)
    const ok = await tryConnect(gw.port, { clientId: fits })
    expect(typeof ok).toBe('object')
    await (ok as MqttClient).publishAsync('devices/long/t', '{"a":1}', { qos: 1 })
    await endClient(ok as MqttClient)
    expect(gw.child.exitCode).toBe(null)
    expect(gw.output()).toContain('connection refused: client id too long')
    await canary.stop()
    expect(canary.disconnects()).toBe(0)
    expect(canary.acked.size).toBe(canary.sent())
    const check = await checkCanaries(nats.url, [canary])
    expect(check.missing).toEqual([])
    expect(check.duplicates).toEqual([])
  }, 30_000)
})

describe('identity - nothing a client sends ends the process (in-process gateway, fast-check)', () => {
  let nats: NatsServer
  let gw: Gateway

  beforeAll(async () => {
    nats = await startNats()
    gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'log.maxRecordBytes': 4096, 'limits.maxTopicBytes': 256 })
  }, 30_000)

  afterAll(async () => {
    await gw?.close()
    await nats?.[Symbol.asyncDispose]()
  })

  /** A string of about `bytes` UTF-8 bytes made of 1-, 2-, 3- and 4-byte characters. */
  const nearBytes = (bytes: number, unit: fc.Arbitrary<string>): fc.Arbitrary<string> =>
    fc.tuple(fc.integer({ min: -4, max: 4 }), unit, fc.constantFrom('a', 'é', '€', '😀')).map(([delta, prefix, ch]) => {
      let s = prefix
      while (Buffer.byteLength(s) + Buffer.byteLength(ch) <= bytes + delta) s += ch
      return s
    })

  it('identity - client ids, usernames, topics and payloads at the byte limits never end the gateway', async () => {
    const port = gw.ingress.address.port
    const canary = await connectClient(port, 'fc-canary')
    let canaryClosed = false
    canary.on('close', () => (canaryClosed = true))
    const text = fc.string({ unit: 'binary', maxLength: 4 })
    await fc.assert(
      fc.asyncProperty(
        fc.oneof(nearBytes(255, text), nearBytes(256, text), fc.string({ unit: 'binary', maxLength: 40 })),
        fc.option(fc.oneof(nearBytes(255, text), nearBytes(1024, text), fc.string({ unit: 'binary', maxLength: 20 }))),
        fc.oneof(nearBytes(256, text), fc.string({ unit: 'binary', minLength: 1, maxLength: 20 })),
        fc.oneof(fc.integer({ min: 3500, max: 4200 }), fc.integer({ min: 0, max: 16 })),
        fc.constantFrom<0 | 1>(0, 1),
        async (clientId, username, topic, payloadBytes, qos) => {
          const c = await tryConnect(port, { clientId, ...(username === null ? {} : { username }), password: 'x' })
          if (typeof c === 'object') {
            const closed = new Promise<void>((resolve) => c.once('close', () => resolve()))
            // Either acknowledged (or sent, QoS 0) or refused by closing this client; never a crash.
            await Promise.race([c.publishAsync(topic, Buffer.alloc(payloadBytes, 0x7b), { qos }).catch(() => {}), closed])
            c.end(true)
          }
          // The gateway still serves another device.
          await canary.publishAsync('devices/fc-canary/t', '{}', { qos: 1 })
        },
      ),
      { numRuns: 60 },
    )
    expect(canaryClosed).toBe(false)
    expect(gw.ingress.listening).toBe(true)
    await endClient(canary)
  }, 60_000)
})
