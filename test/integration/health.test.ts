// Readiness and metrics through a real upstream outage and recovery, and a connected upstream whose
// stream refuses writes.
import { jetstreamManager } from '@nats-io/jetstream'
import { DiscardPolicy } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Gateway } from '../../src/gateway.js'
import type { Readiness } from '../../src/health/index.js'
import { startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

async function readyz(gw: Gateway): Promise<{ code: number; body: Readiness }> {
  const r = await fetch(`http://127.0.0.1:${gw.http.address.port}/readyz`)
  return { code: r.status, body: (await r.json()) as Readiness }
}

async function metric(gw: Gateway, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.http.address.port}/metrics`)).text()
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
  return m ? Number(m[1]) : NaN
}

async function until<T>(fn: () => Promise<T>, ok: (v: T) => boolean, ms = 15_000): Promise<T> {
  const end = Date.now() + ms
  for (;;) {
    const v = await fn()
    if (ok(v) || Date.now() > end) return v
    await new Promise((r) => setTimeout(r, 100))
  }
}

describe('readiness', () => {
  let nats: NatsServer

  beforeAll(async () => {
    nats = await startNats()
  })

  afterAll(async () => {
    await nats?.stop()
  })

  it('readyz - ok, then failing through an upstream outage with the backlog and its age, then ok again once drained', async () => {
    const gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url })
    try {
      const ok = await until(() => readyz(gw), (r) => r.body.status === 'ok')
      expect(ok.code).toBe(200)
      expect(Object.keys(ok.body.checks).sort()).toEqual(['disk', 'downlink', 'log', 'mqtt', 'upstream'])
      await nats.stop()
      const c = await connectClient(gw.ingress.address.port, 'ready-1')
      await publishSeries(c, 'ready-1', 200)
      await new Promise((r) => setTimeout(r, 1500))
      const down = await until(() => readyz(gw), (r) => r.body.checks.upstream.status === 'failing' && r.body.backlog.oldestAgeSeconds > 0)
      expect(down.code).toBe(503)
      expect(down.body.status).toBe('failing')
      expect(down.body.checks.upstream.detail).toMatch(/not connected to NATS; buffering \d+ records/)
      expect(down.body.checks.mqtt.status).toBe('ok') // devices are still served
      expect(down.body.backlog.records).toBeGreaterThanOrEqual(200)
      expect(down.body.backlog.oldestAgeSeconds).toBeGreaterThan(1)
      expect(await metric(gw, 'ferry_health_ready')).toBe(0)
      expect(await metric(gw, 'ferry_log_backlog_records')).toBeGreaterThanOrEqual(200)
      // 200 records of ~60 bytes stored, ~100 framed: the estimate lands in that range.
      expect(await metric(gw, 'ferry_log_backlog_bytes')).toBeGreaterThan(200 * 40)
      expect(await metric(gw, 'ferry_log_backlog_bytes')).toBeLessThan(200 * 400)
      await nats.start()
      const back = await until(() => readyz(gw), (r) => r.body.status === 'ok' && r.body.backlog.records === 0)
      expect(back.code).toBe(200)
      expect(back.body.backlog).toMatchObject({ records: 0, oldestAgeSeconds: 0, drainEstimateSeconds: 0 })
      expect(back.body.backlog.forwardRatePerSecond).toBeGreaterThan(0)
      expect(await metric(gw, 'ferry_health_ready')).toBe(1)
      await endClient(c)
    } finally {
      await gw.close()
    }
  }, 40_000)

  it('readyz - connected, but the stream refuses writes: failing after --ready-stall-ms, naming the reason', async () => {
    const nc = await connect({ servers: nats.url })
    const jsm = await jetstreamManager(nc)
    await jsm.streams.add({ name: 'FULL', subjects: ['full.up.>', 'full.events.>'], max_msgs: 1, discard: DiscardPolicy.New })
    await nc.close()
    const gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'nats.stream': 'FULL', 'nats.subjectPrefix': 'full', presence: 'off', readyStallMs: 1000, shutdownTimeoutMs: 500 })
    try {
      const c = await connectClient(gw.ingress.address.port, 'full-1')
      await publishSeries(c, 'full-1', 5)
      const r = await until(() => readyz(gw), (x) => x.body.checks.upstream.detail.includes('no PubAck'), 15_000)
      expect(r.code).toBe(503)
      expect(r.body.checks.upstream.detail).toMatch(/connected but no PubAck for \d+ s with 4 records waiting/)
      expect(r.body.checks.upstream.detail).toMatch(/maximum messages/i)
      await endClient(c)
    } finally {
      await gw.close()
    }
  }, 30_000)
})
