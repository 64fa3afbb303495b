// The status page in a real headless Chromium (Debian's chromium, driven by playwright-core): it
// loads without internet, its numbers match /metrics, and it shows an upstream outage (backlog
// rising, upstream down). A screenshot is saved under the test's temp directory. With --priority it
// shows the backlog of each class; without, no class table.
import fs from 'node:fs'
import path from 'node:path'
import { chromium } from 'playwright-core'
import type { Browser, Page } from 'playwright-core'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { waitForCount } from '../helpers/stream.js'

const CHROMIUM = ['/usr/bin/chromium', '/usr/bin/chromium-browser'].find((p) => fs.existsSync(p))

async function metric(base: string, name: string): Promise<number> {
  const text = await (await fetch(`${base}/metrics`)).text()
  const m = new RegExp(`^${name} (\\S+)$`, 'm').exec(text)
  return m ? Number(m[1]) : NaN
}

async function field(page: Page, name: string, attr = 'data-value'): Promise<string | null> {
  return page.locator(`[data-field="${name}"]`).getAttribute(attr)
}

describe('status page', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let browser: Browser
  let base: string
  const shots = tempDir('ferry-status-page-')

  beforeAll(async () => {
    if (!CHROMIUM) throw new Error('chromium is not installed: apt-get install -y chromium (.ci/run does)')
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', tempDir(), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--presence', 'off'])
    base = `http://127.0.0.1:${/"msg":"HTTP listening","address":"[^"]*:(\d+)"/.exec(gw.output())![1]}`
    browser = await chromium.launch({ executablePath: CHROMIUM, args: ['--no-sandbox', '--disable-gpu'] })
  }, 60_000)

  afterAll(async () => {
    await browser?.close()
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('page - loads offline, matches /metrics, and shows an outage: upstream down, backlog rising', async () => {
    const page = await browser.newPage({ viewport: { width: 390, height: 844 } }) // a phone
    const external: string[] = []
    page.on('request', (r) => {
      if (!r.url().startsWith(base)) external.push(r.url())
    })
    await page.goto(`${base}/`)
    await expect.poll(() => page.locator('[data-field="status"]').textContent(), { timeout: 15_000 }).toBe('ok')

    const c = await connectClient(gw.port, 'page-dev')
    await publishSeries(c, 'page-dev', 300)
    await waitForCount(nats.url, 300)
    await expect.poll(async () => Number(await field(page, 'forwarded')), { timeout: 10_000 }).toBe(await metric(base, 'ferry_forward_messages_total'))
    expect(Number(await field(page, 'clients'))).toBe(await metric(base, 'ferry_mqtt_clients'))
    expect(await page.locator('[data-field="upstream"]').getAttribute('data-state')).toBe('ok')
    // The slow-down (--max-forward-lag, default 2 s): the lag against its bound, not slowed, nothing held.
    expect(await page.locator('[data-field="lag"]').textContent()).toMatch(/ s \/ 2 s$/)
    expect(await field(page, 'slowed')).toBe('0')
    expect(await field(page, 'held')).toBe('0')

    // Outage: NATS stops, the device keeps publishing; the page shows upstream down and the backlog.
    await nats.stop()
    await publishSeries(c, 'page-dev', 500, 20, 301)
    await expect.poll(() => page.locator('[data-field="upstream"]').getAttribute('data-state'), { timeout: 15_000 }).toBe('failing')
    await expect.poll(() => page.locator('[data-field="status"]').textContent(), { timeout: 5000 }).toBe('failing')
    const backlog = await metric(base, 'ferry_log_backlog_records')
    expect(backlog).toBeGreaterThanOrEqual(500)
    await expect.poll(async () => Number(await field(page, 'backlog')), { timeout: 5000 }).toBe(backlog)
    await expect(page.locator('[data-check="upstream"]').textContent()).resolves.toContain('not connected to NATS')
    expect(await field(page, 'slowed'), 'an outage is absorbed by the log, not slowed down').toBe('0')
    // The backlog chart has drawn a rising line (the last point higher than the first).
    await expect.poll(() => page.locator('#backlog path').first().getAttribute('d'), { timeout: 10_000 }).toMatch(/ L/)
    const shot = path.join(shots, 'status-page-outage.png')
    await page.screenshot({ path: shot, fullPage: true })
    expect(fs.statSync(shot).size).toBeGreaterThan(10_000)
    console.log(`status page screenshot: ${shot}`)

    await nats.start()
    await expect.poll(() => page.locator('[data-field="status"]').textContent(), { timeout: 20_000 }).toBe('ok')
    await expect.poll(async () => Number(await field(page, 'backlog')), { timeout: 20_000 }).toBe(0)
    expect(external).toEqual([]) // no CDN, nothing outside the gateway
    await endClient(c)
    await page.close()
  }, 90_000)

  it('page - without --priority: one class (normal) in /metrics and /readyz, no class table, no drain cap', async () => {
    const text = await (await fetch(`${base}/metrics`)).text()
    for (const g of ['ferry_log_class_backlog_records', 'ferry_log_class_backlog_bytes', 'ferry_log_class_oldest_unforwarded_age_seconds']) {
      expect(text.split('\n').filter((l) => l.startsWith(`${g}{`))).toEqual([expect.stringMatching(new RegExp(`^${g}\\{class="normal"\\} \\d`))])
    }
    expect(text).not.toMatch(/^ferry_drops_total\{class=/m)
    expect(Object.keys(((await (await fetch(`${base}/readyz`)).json()) as { classes: object }).classes)).toEqual(['normal'])
    const page = await browser.newPage()
    await page.goto(`${base}/`)
    await expect.poll(() => page.locator('[data-field="status"]').textContent(), { timeout: 15_000 }).toBe('ok')
    expect(await page.locator('#classes-section').isVisible()).toBe(false)
    expect(await page.locator('[data-card="drain-cap"]').isVisible()).toBe(false)
    await page.close()
  }, 30_000)

  it('page - with --priority: the backlog of each class (records, bytes, oldest waiting) during an outage, then empty', async () => {
    const prio = await spawnGateway(['--data-dir', tempDir(), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--presence', 'off', '--priority', 'alarms/#=high,+/+/telemetry=low'])
    try {
      const url = `http://127.0.0.1:${prio.httpPort}`
      const page = await browser.newPage({ viewport: { width: 390, height: 844 } })
      await page.goto(`${url}/`)
      await expect.poll(() => page.locator('[data-field="status"]').textContent(), { timeout: 15_000 }).toBe('ok')
      await expect.poll(() => page.locator('#classes-section').isVisible(), { timeout: 5000 }).toBe(true)
      expect(await page.locator('#classes tr').evaluateAll((rows) => rows.map((r) => r.getAttribute('data-class')))).toEqual(['high', 'normal', 'low'])

      await nats.stop()
      const c = await connectClient(prio.port, 'class-dev')
      await publishSeries(c, 'class-dev', 120) // devices/class-dev/telemetry: low
      for (let i = 0; i < 15; i++) await c.publishAsync('alarms/site/smoke', JSON.stringify({ i }), { qos: 1 })
      await endClient(c)
      const cell = (cls: string, col: string): Promise<string | null> => page.locator(`#classes tr[data-class="${cls}"] td[data-col="${col}"]`).getAttribute('data-value')
      await expect.poll(async () => [await cell('high', 'records'), await cell('normal', 'records'), await cell('low', 'records')], { timeout: 10_000 }).toEqual(['15', '0', '120'])
      expect(Number(await cell('low', 'bytes'))).toBeGreaterThan(120 * 40)
      await expect.poll(async () => Number(await cell('low', 'age')), { timeout: 5000 }).toBeGreaterThan(0)
      expect(await page.locator('#classes tr[data-class="low"] td[data-col="bytes"]').textContent()).toMatch(/ (B|KiB)$/)
      const shot = path.join(shots, 'status-page-classes.png')
      await page.screenshot({ path: shot, fullPage: true })
      console.log(`status page screenshot (classes): ${shot}`)

      await nats.start()
      await expect.poll(async () => [await cell('high', 'records'), await cell('low', 'records')], { timeout: 20_000 }).toEqual(['0', '0'])
      await page.close()
    } finally {
      await prio.kill('SIGTERM')
    }
  }, 60_000)
})
