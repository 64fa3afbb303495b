// Readiness tells the truth quickly (issue 13): with nats-server frozen (SIGSTOP) under load, the
// connection stays up but nothing is acknowledged. Within --ack-timeout-ms and a little, /readyz and
// /status.json show the upstream check degraded ("no PubAck for N s") and no drain estimate, and
// the status page (headless Chromium) says so; after SIGCONT it is ok again. Bundled gateway.
import fs from 'node:fs'
import { chromium } from 'playwright-core'
import type { Browser } from 'playwright-core'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Readiness } from '../../src/health/index.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p))
const ACK_TIMEOUT_MS = 2000

/** Publishes QoS 1 with up to 20 in flight until stopped; resolves with the count acknowledged. */
function load(c: MqttClient): { stop: () => Promise<number> } {
  let running = true
  let acked = 0
  let seq = 0
  const lanes = Array.from({ length: 20 }, async () => {
    while (running) {
      await c.publishAsync('devices/stall-dev/telemetry', JSON.stringify({ seq: ++seq, t: 21.5 }), { qos: 1 })
      acked++
      await new Promise((r) => setTimeout(r, 5)) // about 4,000 msg/s at most: load, not a flood
    }
  })
  return {
    stop: async () => {
      running = false
      await Promise.all(lanes)
      return acked
    },
  }
}

describe('readiness when upstream stops acknowledging', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let browser: Browser
  let base: string

  beforeAll(async () => {
    if (!CHROMIUM) throw new Error('chromium is not installed: apt-get install -y chromium (.ci/run does)')
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', tempDir(), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--presence', 'off', '--ack-timeout-ms', String(ACK_TIMEOUT_MS)])
    base = `http://127.0.0.1:${gw.httpPort}`
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] })
  }, 60_000)

  afterAll(async () => {
    await browser?.close()
    nats?.signal('SIGCONT')
    await gw?.kill('SIGTERM')
    await nats?.[Symbol.asyncDispose]()
  })

  it('readyz - nats-server frozen under load: upstream degraded within --ack-timeout-ms and a little, "no PubAck for N s", drain estimate null; ok again after SIGCONT', async () => {
    const readyz = async (): Promise<{ code: number; body: Readiness }> => {
      const r = await fetch(`${base}/readyz`)
      return { code: r.status, body: (await r.json()) as Readiness }
    }
    const status = async (): Promise<Readiness> => ((await (await fetch(`${base}/status.json`)).json()) as { readiness: Readiness }).readiness
    const page = await browser.newPage({ viewport: { width: 1024, height: 900 } })
    await page.goto(`${base}/`)
    await expect.poll(() => page.locator('[data-field="status"]').textContent(), { timeout: 15_000 }).toBe('ok')

    const c = await connectClient(gw.port, 'stall-dev')
    const traffic = load(c)
    // Flowing: acknowledging, ok.
    await expect.poll(async () => (await readyz()).body.checks.upstream.status, { timeout: 10_000 }).toBe('ok')
    await expect.poll(() => page.locator('[data-field="upstream"]').textContent(), { timeout: 10_000 }).toBe('connected, acknowledging')
    await new Promise((r) => setTimeout(r, 1500)) // let the load settle (a sync point is not the aim: time under load is)

    nats.signal('SIGSTOP')
    const frozenAt = Date.now()
    let degraded: { code: number; body: Readiness } | undefined
    while (Date.now() - frozenAt < 15_000) {
      const r = await readyz()
      if (r.body.checks.upstream.status !== 'ok') {
        degraded = r
        break
      }
      await new Promise((r) => setTimeout(r, 100))
    }
    const seenAfterMs = Date.now() - frozenAt
    console.log(`nats-server frozen: /readyz upstream ${degraded?.body.checks.upstream.status} after ${seenAfterMs} ms (--ack-timeout-ms ${ACK_TIMEOUT_MS}): ${degraded?.body.checks.upstream.detail}`)
    expect(degraded).toBeDefined()
    expect(seenAfterMs).toBeGreaterThanOrEqual(ACK_TIMEOUT_MS - 100)
    expect(seenAfterMs).toBeLessThan(ACK_TIMEOUT_MS + 2500) // the 1 s sampling and the start of the wait
    expect(degraded!.code).toBe(200) // degraded, not failing: that comes after --ready-stall-ms (30 s)
    expect(degraded!.body.checks.upstream.status).toBe('degraded')
    expect(degraded!.body.checks.upstream.detail).toMatch(/^connected but no PubAck for \d+ s with \d+ records waiting/)
    expect(degraded!.body.backlog.records).toBeGreaterThan(0)
    expect(degraded!.body.backlog.drainEstimateSeconds).toBeNull()
    const doc = await status()
    expect(doc.checks.upstream.status).toBe('degraded')
    expect(doc.checks.upstream.detail).toContain('no PubAck for')
    expect(doc.backlog.drainEstimateSeconds).toBeNull()
    // The page says it in words, within a poll of the page (1 s).
    await expect.poll(() => page.locator('[data-field="upstream"]').textContent(), { timeout: 3000 }).toMatch(/no PubAck for \d+ s/)
    expect(await page.locator('[data-field="upstream"]').getAttribute('data-state')).toBe('degraded')
    await expect.poll(() => page.locator('[data-field="drain"]').textContent(), { timeout: 3000 }).toBe('not draining')
    // N grows with the wait.
    await new Promise((r) => setTimeout(r, 2000))
    const later = /no PubAck for (\d+) s/.exec((await readyz()).body.checks.upstream.detail)
    expect(Number(later?.[1])).toBeGreaterThanOrEqual(4)

    nats.signal('SIGCONT')
    await expect.poll(async () => (await readyz()).body.checks.upstream.status, { timeout: 20_000 }).toBe('ok')
    const sent = await traffic.stop()
    expect(sent).toBeGreaterThan(0)
    await expect.poll(() => page.locator('[data-field="upstream"]').textContent(), { timeout: 5000 }).toBe('connected, acknowledging')
    await endClient(c)
    await page.close()
  }, 60_000)
})
