// Observability with --priority: a gateway with three classes, NATS down, devices publishing to each
// class. /metrics has the per-class backlog gauges (records, bytes, oldest age) next to the sums, and
// every record drop reason per class from 0; /readyz and /status.json show the classes and name them
// in the upstream detail; then NATS comes back and every class's backlog goes to 0. Last, the data
// directory tools (ferry log stat|dump, ferry replay) on the class logs of the stopped gateway.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { MqttClient } from 'mqtt'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

const CLASSES = ['high', 'normal', 'low'] as const
const RECORD_REASONS = ['discard_old', 'discard_new', 'expired', 'dead_letter', 'corrupt', 'disk_full', 'no_descriptors', 'power_loss', 'refused', 'device_quota', 'rate_limited']

interface ClassBacklog {
  records: number
  bytes: number
  oldestAgeSeconds: number
}
interface ReadyBody {
  status: string
  checks: { upstream: { status: string; detail: string } }
  backlog: { records: number; oldestAgeSeconds: number; drainCapPerSecond: number | null; drainEstimateCapped: boolean }
  classes: Record<string, ClassBacklog>
}

/** Publishes `count` QoS 1 messages to `topic` with up to 20 in flight. */
async function publishTo(c: MqttClient, topic: string, count: number): Promise<void> {
  for (let i = 0; i < count; i += 20) {
    await Promise.all(Array.from({ length: Math.min(20, count - i) }, (_, k) => c.publishAsync(topic, JSON.stringify({ n: i + k, level: 'x'.repeat(40) }), { qos: 1 })))
  }
}

describe('priority status', () => {
  let nats: NatsServer
  let gw: GatewayProcess | undefined
  let base: string
  const dir = tempDir('ferry-priority-status-')

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', dir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--presence', 'off', '--priority', 'alarms/#=high,+/+/telemetry=low'])
    base = `http://127.0.0.1:${gw.httpPort}`
  }, 30_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  const metrics = async (): Promise<string> => (await fetch(`${base}/metrics`)).text()
  const value = (text: string, series: string): number => {
    const line = text.split('\n').find((l) => l.startsWith(`${series} `))
    return line === undefined ? NaN : Number(line.slice(series.length + 1))
  }

  it('priority status - per-class gauges, readiness and status per class while NATS is down; all back to 0 when it returns', async () => {
    await expect.poll(async () => ((await (await fetch(`${base}/readyz`)).json()) as ReadyBody).status, { timeout: 15_000 }).toBe('ok')
    const before = await metrics()
    // Every class from the start: backlog gauges at 0 and the record drops per class at 0.
    for (const cls of CLASSES) {
      expect(value(before, `ferry_log_class_backlog_records{class="${cls}"}`)).toBe(0)
      expect(value(before, `ferry_log_class_oldest_unforwarded_age_seconds{class="${cls}"}`)).toBe(0)
      for (const reason of RECORD_REASONS) expect(value(before, `ferry_drops_total{class="${cls}",reason="${reason}"}`), `${cls} ${reason}`).toBe(0)
    }
    expect(value(before, 'ferry_forward_drain_paced_seconds_total')).toBe(0)
    // Downlink-only reasons carry no class.
    expect(before).toContain('ferry_drops_total{reason="outbound_queue_full"} 0\n')
    expect(before).not.toMatch(/ferry_drops_total\{class="[a-z]+",reason="outbound_queue_full"\}/)

    await nats.stop()
    const c = await connectClient(gw!.port, 'prio-dev')
    try {
      // Oldest first: low (telemetry), then normal (status), then high (alarms).
      await publishSeries(c, 'prio-dev', 200)
      await publishTo(c, 'devices/prio-dev/status', 50)
      await publishTo(c, 'alarms/site-1/fire', 30)
    } finally {
      await endClient(c)
    }

    const want = { high: 30, normal: 50, low: 200 }
    await expect.poll(async () => value(await metrics(), 'ferry_log_backlog_records'), { timeout: 10_000 }).toBe(280)
    const text = await metrics()
    for (const cls of CLASSES) {
      expect(value(text, `ferry_log_class_backlog_records{class="${cls}"}`)).toBe(want[cls])
      expect(value(text, `ferry_log_class_backlog_bytes{class="${cls}"}`)).toBeGreaterThan(want[cls] * 40)
      expect(value(text, `ferry_log_class_oldest_unforwarded_age_seconds{class="${cls}"}`)).toBeGreaterThan(0)
    }
    // The sums and the oldest over the classes.
    const bytes = CLASSES.reduce((a, cls) => a + value(text, `ferry_log_class_backlog_bytes{class="${cls}"}`), 0)
    expect(value(text, 'ferry_log_backlog_bytes')).toBe(bytes)
    const ageLow = value(text, 'ferry_log_class_oldest_unforwarded_age_seconds{class="low"}')
    expect(ageLow).toBeGreaterThanOrEqual(value(text, 'ferry_log_class_oldest_unforwarded_age_seconds{class="high"}'))
    expect(Math.abs(value(text, 'ferry_log_oldest_unforwarded_age_seconds') - ageLow)).toBeLessThan(0.5)

    // /readyz: failing (NATS down), the classes, and the detail names the backlog of each.
    await expect.poll(async () => (await fetch(`${base}/readyz`)).status, { timeout: 15_000 }).toBe(503)
    const ready = (await (await fetch(`${base}/readyz`)).json()) as ReadyBody
    expect(Object.keys(ready.classes)).toEqual(['high', 'normal', 'low'])
    for (const cls of CLASSES) {
      expect(ready.classes[cls]!.records).toBe(want[cls])
      expect(ready.classes[cls]!.bytes).toBeGreaterThan(want[cls] * 40)
      expect(ready.classes[cls]!.oldestAgeSeconds).toBeGreaterThan(0)
    }
    expect(ready.backlog.records).toBe(280)
    expect(ready.backlog.drainCapPerSecond).toBeNull()
    expect(ready.checks.upstream.status).toBe('failing')
    expect(ready.checks.upstream.detail).toMatch(/^not connected to NATS; buffering 280 records in the log \(high 30, normal 50, low 200\)/)
    const status = (await (await fetch(`${base}/status.json`)).json()) as { readiness: ReadyBody }
    expect(Object.fromEntries(Object.entries(status.readiness.classes).map(([k, v]) => [k, v.records]))).toEqual(want)
    expect(await (await fetch(`${base}/`)).text()).toContain('Backlog by priority class')

    // NATS returns: every class drains to 0, readiness ok.
    await nats.start()
    await expect.poll(async () => value(await metrics(), 'ferry_log_backlog_records'), { timeout: 20_000 }).toBe(0)
    const after = await metrics()
    for (const cls of CLASSES) {
      expect(value(after, `ferry_log_class_backlog_records{class="${cls}"}`)).toBe(0)
      expect(value(after, `ferry_log_class_oldest_unforwarded_age_seconds{class="${cls}"}`)).toBe(0)
    }
    await expect.poll(async () => ((await (await fetch(`${base}/readyz`)).json()) as ReadyBody).status, { timeout: 15_000 }).toBe('ok')
    const done = (await (await fetch(`${base}/readyz`)).json()) as ReadyBody
    expect(Object.values(done.classes).map((x) => x.records)).toEqual([0, 0, 0])
  }, 60_000)

  it('priority status - the data directory tools show and handle each class log', async () => {
    expect(await gw!.kill('SIGTERM')).toBe(0)
    gw = undefined
    const stat = await runFerry(['log', 'stat', dir, '--json'])
    expect(stat.code).toBe(0)
    const s = JSON.parse(stat.stdout) as { records: number; backlog: number; classes: Record<string, { records: number; backlog: number; dir: string }> }
    expect(Object.keys(s.classes)).toEqual(['high', 'normal', 'low'])
    expect(Object.fromEntries(Object.entries(s.classes).map(([k, v]) => [k, v.records]))).toEqual({ high: 30, normal: 50, low: 200 })
    expect(Object.values(s.classes).map((v) => v.backlog)).toEqual([0, 0, 0])
    expect(s.records).toBe(50) // the top level is class normal's, as without classes
    const text = await runFerry(['log', 'stat', dir])
    expect(text.stdout).toMatch(/^priority classes {2}high 0, normal 0, low 0 record\(s\) not yet forwarded/)
    expect(text.stdout).toContain('== class high ==')
    expect(text.stdout).toContain('== class low ==')

    const high = await runFerry(['log', 'dump', dir, '--class', 'high', '--limit', '2', '--json'])
    expect(high.code).toBe(0)
    const recs = high.stdout.trim().split('\n').map((l) => JSON.parse(l) as { seq: number; topic: string; class?: string })
    expect(recs.map((r) => [r.seq, r.topic, r.class])).toEqual([
      [1, 'alarms/site-1/fire', undefined],
      [2, 'alarms/site-1/fire', undefined],
    ])
    const all = await runFerry(['log', 'dump', dir, '--limit', '1', '--json'])
    expect(all.stdout.trim().split('\n').map((l) => (JSON.parse(l) as { class: string; topic: string }).class)).toEqual(['high', 'normal', 'low'])

    const ambiguous = await runFerry(['replay', '--data-dir', dir, '--from', '1'])
    expect(ambiguous.code).toBe(2)
    expect(ambiguous.stderr).toContain('give --class with --from')
    expect((await runFerry(['log', 'stat', dir, '--class', 'urgent'])).code).toBe(2)
    const replay = await runFerry(['replay', '--data-dir', dir, '--from', '1', '--class', 'high'])
    expect(replay.code).toBe(0)
    expect(replay.stdout).toContain('the gateway will forward seq 1 … 30 again at its next start (30 record(s))')
    const after = JSON.parse((await runFerry(['log', 'stat', dir, '--json'])).stdout) as { classes: Record<string, { backlog: number }> }
    expect(Object.values(after.classes).map((v) => v.backlog)).toEqual([30, 0, 0])
    const since = await runFerry(['replay', '--data-dir', dir, '--since', '2000-01-01T00:00:00Z'])
    expect(since.code).toBe(0)
    expect(since.stdout).toMatch(/^class normal: the gateway will forward seq 1 … 50 again/m)
    expect(since.stdout).toMatch(/^class low: the gateway will forward seq 1 … 200 again/m)
    const all3 = JSON.parse((await runFerry(['log', 'stat', dir, '--json'])).stdout) as { classes: Record<string, { backlog: number }> }
    expect(Object.values(all3.classes).map((v) => v.backlog)).toEqual([30, 50, 200])
  }, 30_000)
})
