// MQTT 5 properties end to end with a client we did not write (mosquitto_pub -V mqttv5, properties
// with -D): kept in the log at ingest, forwarded as headers.
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { unescapeHeaderName } from '../../src/codec/index.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

const run = promisify(execFile)

describe('properties v5 - mosquitto_pub end to end', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', tempDir('ferry-v5p-'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--stream', 'V5P', '--subject-prefix', 'v5p', '--presence', 'off'])
  })
  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('properties v5 - user properties, content type and expiry arrive as headers (mosquitto_pub -V mqttv5)', async () => {
    const before = Date.now()
    await run('mosquitto_pub', ['-V', 'mqttv5', '-h', '127.0.0.1', '-p', String(gw.port), '-i', 'mosq-v5', '-q', '1', '-t', 'devices/mosq-v5/csv', '-m', '1,2,3',
      '-D', 'publish', 'user-property', 'unit', 'C', '-D', 'publish', 'user-property', 'a b', 'x y',
      '-D', 'publish', 'content-type', 'text/csv', '-D', 'publish', 'message-expiry-interval', '600',
      '-D', 'publish', 'response-topic', 'devices/mosq-v5/replies', '-D', 'publish', 'correlation-data', 'abc'])
    expect(await waitForCount(nats.url, 1, 10_000, 'V5P')).toBe(1)
    const [m] = await readStream(nats.url, 'V5P')
    const h = m!.headers
    expect(h['Content-Type']).toBe('text/csv')
    expect(Buffer.from(m!.data).toString()).toBe('1,2,3')
    expect(h['Ferry-Prop-unit']).toBe('C')
    expect(unescapeHeaderName('a%20b')).toBe('a b')
    expect(h['Ferry-Prop-a%20b']).toBe('x y')
    const expires = Date.parse(h['Ferry-Expires'] ?? '')
    expect(expires).toBeGreaterThanOrEqual(before + 600_000)
    expect(expires).toBeLessThanOrEqual(Date.now() + 600_000)
    expect(h['Ferry-Response-Topic']).toBe('devices/mosq-v5/replies')
    expect(Buffer.from(h['Ferry-Correlation-Data'] ?? '', 'base64').toString()).toBe('abc')
  })
})
