// Device presence: connected/disconnected events through the ring log, in order with the device's
// data across an upstream outage; `ferry devices` lists who is connected.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor } from '../../src/codec/index.js'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

describe('presence', () => {
  let nats: NatsServer
  let gw: GatewayProcess

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', tempDir(), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0'])
    await waitForCount(nats.url, 0)
  }, 30_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  const httpPort = (): number => Number(/"msg":"HTTP listening","address":"[^"]*:(\d+)"/.exec(gw.output())![1])

  it('presence - connected / disconnected events keep their order with telemetry across an upstream outage', async () => {
    await nats.stop()
    const a = await connectClient(gw.port, 'pres-a')
    for (let i = 1; i <= 3; i++) await a.publishAsync('devices/pres-a/t', JSON.stringify({ i }), { qos: 1 })
    await a.endAsync() // sends DISCONNECT
    const b = await connectClient(gw.port, 'pres-a', { keepalive: 1, reconnectPeriod: 0 })
    await b.publishAsync('devices/pres-a/t', JSON.stringify({ i: 4 }), { qos: 1 })
    // Vanish without DISCONNECT: the socket dies, the gateway reports a lost connection.
    ;(b as unknown as { stream: { destroy(): void } }).stream.destroy()
    await new Promise((r) => setTimeout(r, 300))
    await nats.start()
    await waitForCount(nats.url, 4, 20_000)
    for (let i = 0; i < 100 && (await readStream(nats.url, 'FERRY', 'all')).filter((m) => m.subject.includes('pres-a')).length < 8; i++) await new Promise((r) => setTimeout(r, 100))
    const all = (await readStream(nats.url, 'FERRY', 'all')).filter((m) => m.subject.includes('pres-a'))
    const story = all.map((m) => {
      const v = decodeCbor(m.data) as { i?: number; event?: string; reason?: string }
      return m.subject.startsWith('ferry.events.') ? `${m.subject.split('.').pop()}${v.reason ? `:${v.reason}` : ''}` : `data:${v.i}`
    })
    expect(story).toEqual(['connected', 'data:1', 'data:2', 'data:3', 'disconnected:clean', 'connected', 'data:4', 'disconnected:connection_lost'])
    expect(all[0]!.subject).toBe('ferry.events.pres-a.connected')
    expect(all[0]!.headers['Content-Type']).toBe('application/cbor')
  })

  it('devices - ferry devices lists the connected devices with address and message counts', async () => {
    const c = await connectClient(gw.port, 'listed-1')
    await c.publishAsync('devices/listed-1/t', '{}', { qos: 1 })
    await c.publishAsync('devices/listed-1/t', '{}', { qos: 1 })
    const r = await runFerry(['devices', '--http', `127.0.0.1:${httpPort()}`])
    expect(r.code).toBe(0)
    const line = r.stdout.split('\n').find((l) => l.startsWith('listed-1'))
    expect(line).toMatch(/^listed-1\s+127\.0\.0\.1\s+\d{4}-\d\d-\d\d \d\d:\d\d:\d\d\s+\d+s\s+clean\s+2\s+0$/)
    const j = await runFerry(['devices', '--http', `127.0.0.1:${httpPort()}`, '--json'])
    expect((JSON.parse(j.stdout) as { clientId: string }[]).map((d) => d.clientId)).toContain('listed-1')
    await endClient(c)
    const gone = await runFerry(['devices', '--http', `127.0.0.1:${httpPort()}`])
    expect(gone.stdout).not.toContain('listed-1')
    expect((await runFerry(['devices', '--http', '127.0.0.1:1'])).code).toBe(1)
  })
})
