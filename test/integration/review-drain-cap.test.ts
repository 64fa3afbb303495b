// Review of i16-observe: the drain cap /readyz reports under a --drain-max-rate byte cap. The cap counts
// payload bytes; turned into messages per second it must use the payload per message, not the size of
// a record in the log (topic, client id, envelope and framing besides the payload): with small
// payloads that made the cap, and the drain estimate with it, several times off.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { until } from '../helpers/load.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

/** Payload bytes per message, and the cap in payload bytes per second: 32 messages per second. */
const PAYLOAD = 32
const CAP_BYTES = 1024
const MESSAGES = 200

interface Backlog {
  records: number
  forwardRatePerSecond: number
  drainEstimateSeconds: number | null
  drainCapPerSecond: number | null
}

describe('review - drain cap under a byte cap', () => {
  let nats: NatsServer
  let gw: GatewayProcess | undefined
  beforeAll(async () => {
    nats = await startNats()
  })
  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('drain cap - a byte cap becomes messages per second at the payload per message', async () => {
    gw = await spawnGateway(['--mqtt-listen', '127.0.0.1:0', '--data-dir', tempDir('ferry-review-cap-'), '--nats-url', nats.url, '--gateway-id', 'rvcap', '--drain-max-rate', '1KiB/s', '--presence', 'off'])
    const c = await connectClient(gw.port, 'review-cap-device-with-a-long-client-id')
    const payload = Buffer.alloc(PAYLOAD, 0x61)
    for (let i = 0; i < MESSAGES; i += 50) await Promise.all(Array.from({ length: 50 }, () => c.publishAsync('site/building-7/floor-3/sensor-42/temperature', payload, { qos: 1 })))
    await endClient(c)
    const base = `http://127.0.0.1:${gw.httpPort}`
    const seen: Backlog[] = []
    // While the backlog drains (at the cap, 32 messages per second: about 6 s), the cap /readyz gives.
    await until(
      async () => {
        const b = ((await (await fetch(`${base}/readyz`)).json()) as { backlog: Backlog }).backlog
        seen.push(b)
        return b.records > 0 && b.records < MESSAGES - 40 && b.drainCapPerSecond !== null && b.drainEstimateSeconds !== null
      },
      20_000,
      () => `a draining backlog in /readyz: ${JSON.stringify(seen.slice(-3))}`,
      200,
    )
    const b = seen.at(-1)!
    const expected = CAP_BYTES / PAYLOAD
    expect(b.drainCapPerSecond!).toBeGreaterThan(expected * 0.8)
    expect(b.drainCapPerSecond!).toBeLessThan(expected * 1.2)
    // The estimate: the backlog at the cap (the forward rate is at the cap), not several times that.
    expect(b.drainEstimateSeconds!).toBeLessThan((b.records / expected) * 1.5)
  }, 40_000)
})
