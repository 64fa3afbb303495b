// The downlink as a Component (src/lifecycle.ts): close(deadline) ends its connect loop at once,
// drains a live connection, and closed() settles undefined; against a real nats-server.
import { EventEmitter } from 'node:events'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PayloadPolicy } from '../../src/codec/index.js'
import { Commands, Downlink, Rpc } from '../../src/downlink/index.js'
import type { Devices } from '../../src/ingress/index.js'
import { deadlineIn } from '../../src/lifecycle.js'
import { silentLogger } from '../../src/logger.js'
import { createMetrics } from '../../src/metrics/index.js'
import { freePort, startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

let nats: NatsServer
beforeAll(async () => {
  nats = await startNats()
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

function downlinkTo(servers: string[]): Downlink {
  // No device ever connects in these tests: an empty registry that accepts listeners.
  const devices = Object.assign(new EventEmitter(), { list: () => [], deliver: () => Promise.resolve('offline' as const) }) as unknown as Devices
  const metrics = createMetrics()
  const commands = new Commands({ stream: 'LIFE_CMD', subjectPrefix: 'life', gatewayId: 'gw-life', topicTemplate: 'cmd/{device}/{name}', ackTimeoutMs: 5000, maxDeliver: 3, defaultTtlMs: 60_000, maxInflight: 4, devices, event: () => {}, logger: silentLogger, metrics })
  const rpc = new Rpc({ subjectPrefix: 'life', timeoutMs: 5000, maxPending: 4, devices, payloads: new PayloadPolicy(false, []), logger: silentLogger, metrics })
  return new Downlink(servers, {}, 'ferry-gw-life-downlink', commands, rpc, silentLogger)
}

async function until(cond: () => boolean, ms = 15_000): Promise<void> {
  const end = performance.now() + ms
  while (!cond()) {
    if (performance.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('downlink lifecycle', () => {
  it('downlink lifecycle - close(deadline) ends the connect loop at once while NATS is unreachable', async () => {
    const d = downlinkTo([`nats://127.0.0.1:${await freePort()}`])
    await new Promise((r) => setTimeout(r, 1200)) // a few attempts and backoff steps
    expect(d.health.connected).toBe(false)
    const t0 = performance.now()
    await d.close(deadlineIn(5000))
    expect(performance.now() - t0).toBeLessThan(1000)
    expect(await d.closed()).toBeUndefined()
  })

  it('downlink lifecycle - a connected downlink closes within its deadline and closed() settles undefined', async () => {
    const d = downlinkTo([nats.url])
    await until(() => d.health.connected && d.health.subscribed && d.health.commandsProblem === '')
    const t0 = performance.now()
    await Promise.all([d.close(deadlineIn(3000)), d.close(deadlineIn(0))])
    expect(performance.now() - t0).toBeLessThan(3000)
    expect(await d.closed()).toBeUndefined()
    expect(d.health.connected).toBe(false)
  })
})
