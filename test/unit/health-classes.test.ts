// Health over one ring log per priority class: per-class backlog (records, bytes, oldest age) in the
// readiness and as ferry_log_class_* gauges, the sums and the oldest over the classes, details that name
// the class concerned, and the drain estimate under the --drain-max-rate cap.
import { afterEach, describe, expect, it } from 'vitest'
import { Health } from '../../src/health/index.js'
import type { HealthLog, UpstreamHealth } from '../../src/health/index.js'
import { deadlineIn } from '../../src/lifecycle.js'
import { LogReader, NO_LOG_METRICS } from '../../src/log/index.js'
import type { RingLog } from '../../src/log/index.js'
import { createMetrics, exportClassDrops } from '../../src/metrics/index.js'
import type { Metrics } from '../../src/metrics/index.js'
import { openLog, tempDir } from '../helpers/log.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

/** Polls `f` until it returns true, for at most `ms`. */
async function until(f: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms
  while (!f()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await sleep(50)
  }
}

const connected = (lastAckAtMs = Date.now()): UpstreamHealth => ({ connected: true, lastAckAtMs, problem: '', ackTimeoutMs: 300 })

describe('health - priority classes', () => {
  const opened: RingLog[] = []
  const healths: Health[] = []
  afterEach(async () => {
    for (const h of healths.splice(0)) await h.close(deadlineIn(1000))
    for (const l of opened.splice(0)) await l.close()
  })

  async function classLogs(names: string[]): Promise<Record<string, RingLog>> {
    const out: Record<string, RingLog> = {}
    for (const n of names) {
      const log = await openLog(tempDir(), { metrics: NO_LOG_METRICS })
      opened.push(log)
      out[n] = log
    }
    return out
  }

  function health(
    logs: Record<string, RingLog>,
    o: { metrics?: Metrics; upstream?: () => UpstreamHealth; perClass?: Record<string, () => UpstreamHealth>; stallMs?: number; drainCap?: (avg: number) => number } = {},
  ): Health {
    const list: HealthLog[] = Object.entries(logs).map(([name, log]) => ({
      name,
      log,
      openReader: (fromSeq) => new LogReader(log, fromSeq),
      ...(o.perClass?.[name] ? { upstream: o.perClass[name] } : {}),
    }))
    const h = new Health({
      logs: list,
      dataDir: Object.values(logs)[0]!.opts.dir,
      segmentBytes: 64 * 1024,
      mqttListening: () => true,
      upstream: o.upstream ?? (() => connected()),
      metrics: o.metrics ?? createMetrics(),
      ...(o.stallMs !== undefined ? { stallMs: o.stallMs } : {}),
      ...(o.drainCap ? { drainCap: o.drainCap } : {}),
    })
    healths.push(h)
    return h
  }

  it('classes - records, bytes and oldest age per class; sums and the oldest over the classes; gauges per class', async () => {
    const logs = await classLogs(['high', 'normal', 'low'])
    const metrics = createMetrics()
    await logs.low!.append(Buffer.alloc(100, 1))
    await logs.low!.append(Buffer.alloc(100, 2))
    await sleep(300) // low's records are older than high's
    await logs.high!.append(Buffer.alloc(50, 3))
    const h = health(logs, { metrics, upstream: () => ({ connected: false, lastAckAtMs: 0, problem: '' }) })
    await sleep(1100) // one sample
    const r = h.readiness
    expect(Object.keys(r.classes)).toEqual(['high', 'normal', 'low'])
    expect(r.classes.high!.records).toBe(1)
    expect(r.classes.normal).toEqual({ records: 0, bytes: 0, oldestAgeSeconds: 0 })
    expect(r.classes.low!.records).toBe(2)
    expect(r.classes.low!.bytes).toBeGreaterThanOrEqual(200)
    expect(r.classes.high!.bytes).toBeGreaterThanOrEqual(50)
    expect(r.backlog.records).toBe(3)
    expect(r.classes.low!.oldestAgeSeconds).toBeGreaterThan(r.classes.high!.oldestAgeSeconds + 0.2)
    expect(r.backlog.oldestAgeSeconds).toBeGreaterThanOrEqual(r.classes.low!.oldestAgeSeconds - 0.05)
    expect(r.checks.upstream).toEqual({ status: 'failing', detail: 'not connected to NATS; buffering 3 records in the log (high 1, low 2)' })

    const text = metrics.registry.render()
    const gauge = (name: string, cls: string): number => Number(new RegExp(`^${name}\\{class="${cls}"\\} (\\S+)$`, 'm').exec(text)?.[1])
    expect(gauge('ferry_log_class_oldest_unforwarded_age_seconds', 'low')).toBeGreaterThan(gauge('ferry_log_class_oldest_unforwarded_age_seconds', 'high'))
    expect(gauge('ferry_log_class_oldest_unforwarded_age_seconds', 'normal')).toBe(0)
    const oldest = Number(/^ferry_log_oldest_unforwarded_age_seconds (\S+)$/m.exec(text)?.[1])
    // Each gauge reads the clock when it is rendered (the aggregate first): allow those few ms.
    expect(oldest).toBeGreaterThanOrEqual(gauge('ferry_log_class_oldest_unforwarded_age_seconds', 'low') - 0.05)

    // Acknowledged: each class back to 0.
    logs.low!.ack(2)
    logs.high!.ack(1)
    await until(() => h.readiness.backlog.records === 0)
    expect(Object.values(h.readiness.classes).map((c) => c.records)).toEqual([0, 0, 0])
    expect(h.readiness.classes.low!.oldestAgeSeconds).toBe(0)
  })

  it('classes - one log (the single-log form): one class, normal, and the details as before', async () => {
    const log = await openLog(tempDir(), { metrics: NO_LOG_METRICS })
    opened.push(log)
    const metrics = createMetrics()
    const h = new Health({
      log,
      dataDir: log.opts.dir,
      segmentBytes: 64 * 1024,
      mqttListening: () => true,
      upstream: () => ({ connected: false, lastAckAtMs: 0, problem: '' }),
      openReader: (fromSeq) => new LogReader(log, fromSeq),
      metrics,
    })
    healths.push(h)
    await log.append(Buffer.from('x'))
    await until(() => h.readiness.backlog.records === 1)
    expect(Object.keys(h.readiness.classes)).toEqual(['normal'])
    expect(h.readiness.checks.upstream.detail).toBe('not connected to NATS; buffering 1 records in the log')
    expect(metrics.registry.render()).toMatch(/^ferry_log_class_oldest_unforwarded_age_seconds\{class="normal"\} \d/m)
    expect(h.readiness.backlog.drainCapPerSecond).toBeNull()
    expect(h.readiness.backlog.drainEstimateCapped).toBe(false)
  })

  it('classes - the forwarders of some classes down: the detail names them', async () => {
    const logs = await classLogs(['high', 'normal', 'low'])
    await logs.normal!.append(Buffer.from('n'))
    const down = { connected: false, lastAckAtMs: 0, problem: '' }
    let lowUp = true
    const h = health(logs, { upstream: () => down, perClass: { high: () => connected(), normal: () => down, low: () => (lowUp ? connected() : down) } })
    await until(() => h.readiness.backlog.records === 1)
    await sleep(1100)
    expect(h.readiness.checks.upstream.detail).toBe('not connected to NATS (forwarder of class normal); buffering 1 records in the log (normal 1)')
    lowUp = false
    await sleep(1100)
    expect(h.readiness.checks.upstream.detail).toBe('not connected to NATS (forwarders of classes normal, low); buffering 1 records in the log (normal 1)')
  })

  it('classes - a class waiting without PubAck while the others are acknowledged: degraded (not failing), naming the class', async () => {
    const logs = await classLogs(['high', 'normal', 'low'])
    const stuckSince = Date.now()
    // high acknowledges (live traffic, no backlog); normal's forwarder has not had a PubAck since; low is behind normal.
    const h = health(logs, { stallMs: 2000, perClass: { high: () => connected(), normal: () => connected(stuckSince), low: () => connected(stuckSince) } })
    await logs.normal!.append(Buffer.from('n'))
    await logs.low!.append(Buffer.from('l'))
    await until(() => h.readiness.checks.upstream.status === 'degraded')
    expect(h.readiness.checks.upstream.detail).toMatch(/^class normal: no PubAck for \d+ s with 1 records waiting while other classes are acknowledged$/)
    // Past the stall: still degraded, the gateway as a whole is acknowledging.
    await sleep(2500)
    expect(h.readiness.checks.upstream.status).toBe('degraded')
    expect(h.readiness.status).toBe('degraded')
    // normal acknowledged: low still waits, and low is judged now (it was behind normal until then).
    logs.normal!.ack(1)
    await until(() => h.readiness.classes.normal!.records === 0)
    await sleep(1100)
    expect(h.readiness.checks.upstream.detail).toMatch(/^class low: no PubAck for \d+ s with 1 records waiting/)
  })

  it('classes - a class behind a more important backlog is not called stalled', async () => {
    const logs = await classLogs(['high', 'low'])
    const lowSince = Date.now() // low has had no PubAck since: it waits for high
    const h = health(logs, { stallMs: 2000, perClass: { high: () => connected(), low: () => connected(lowSince) } })
    await logs.high!.append(Buffer.from('h'))
    await logs.low!.append(Buffer.from('l'))
    await sleep(2500)
    expect(h.readiness.checks.upstream).toEqual({ status: 'ok', detail: 'acknowledging; 2 records to forward (high 1, low 1)' })
  })

  it('drain estimate - the backlog over the cap when the cap is lower than the forward rate; status says it is capped', async () => {
    const logs = await classLogs(['normal'])
    for (let i = 0; i < 100; i++) await logs.normal!.append(Buffer.alloc(200, i))
    const metrics = createMetrics()
    const seen: number[] = []
    const h = health(logs, {
      metrics,
      drainCap: (avg) => {
        seen.push(avg)
        return 4
      },
    })
    // JetStream acknowledges about 50 records a second (of other records: the backlog stays at 100).
    const acks = setInterval(() => metrics.forwarded.inc(10), 200)
    try {
      await until(() => h.readiness.backlog.drainEstimateSeconds !== null && h.readiness.backlog.forwardRatePerSecond > 20)
      const b = h.readiness.backlog
      expect(b.drainCapPerSecond).toBe(4)
      expect(b.drainEstimateSeconds).toBe(25) // 100 records at 4/s, not at ~50/s
      expect(b.drainEstimateCapped).toBe(true)
      expect(Number(/^ferry_forward_drain_estimate_seconds (\S+)$/m.exec(metrics.registry.render())?.[1])).toBe(25)
      // The cap was asked at the backlog's average record size (200 bytes and the framing).
      expect(seen.at(-1)).toBeGreaterThanOrEqual(200)
      expect(seen.at(-1)).toBeLessThan(300)
    } finally {
      clearInterval(acks)
    }
  })

  it('drain estimate - a cap above the forward rate leaves the estimate at the rate, not capped; Infinity is no cap', async () => {
    const logs = await classLogs(['normal'])
    for (let i = 0; i < 100; i++) await logs.normal!.append(Buffer.alloc(100, i))
    const metrics = createMetrics()
    let cap = 1000
    const h = health(logs, { metrics, drainCap: () => cap })
    const acks = setInterval(() => metrics.forwarded.inc(10), 200)
    try {
      await until(() => h.readiness.backlog.drainEstimateSeconds !== null && h.readiness.backlog.forwardRatePerSecond > 20)
      const b = h.readiness.backlog
      expect(b.drainCapPerSecond).toBe(1000)
      expect(b.drainEstimateCapped).toBe(false)
      expect(b.drainEstimateSeconds).toBeCloseTo(100 / b.forwardRatePerSecond, 0)
      cap = Infinity
      await sleep(1100)
      expect(h.readiness.backlog.drainCapPerSecond).toBeNull()
      expect(h.readiness.backlog.drainEstimateCapped).toBe(false)
    } finally {
      clearInterval(acks)
    }
  })

  it('recent drops - name the class of labelled record drops; drops without a class as before', async () => {
    const logs = await classLogs(['high', 'low'])
    const metrics = createMetrics()
    const h = health(logs, { metrics })
    metrics.drops.inc(5, { reason: 'discard_old', class: 'low' })
    metrics.drops.inc(2, { reason: 'expired', class: 'high' })
    metrics.drops.inc(1, { reason: 'outbound_queue_full' })
    await until(() => h.recentDrops.length === 3)
    const seen = h.recentDrops.map(({ reason, count, class: c }) => ({ reason, count, class: c }))
    expect(seen).toHaveLength(3)
    expect(seen).toEqual(
      expect.arrayContaining([
        { reason: 'discard_old', count: 5, class: 'low' },
        { reason: 'expired', count: 2, class: 'high' },
        { reason: 'outbound_queue_full', count: 1, class: undefined },
      ]),
    )
    expect('class' in h.recentDrops.find((d) => d.reason === 'outbound_queue_full')!).toBe(false)
  })

  it('drops - with --priority every record drop reason is exported per class from 0; downlink-only reasons are not', () => {
    const metrics = createMetrics()
    exportClassDrops(metrics.drops, ['high', 'normal'])
    const text = metrics.registry.render()
    for (const cls of ['high', 'normal']) {
      for (const reason of ['discard_old', 'discard_new', 'expired', 'dead_letter', 'corrupt', 'disk_full', 'no_descriptors', 'power_loss', 'refused', 'device_quota', 'rate_limited']) {
        expect(text).toContain(`ferry_drops_total{class="${cls}",reason="${reason}"} 0\n`)
      }
    }
    expect(text).not.toContain('class="low"')
    expect(text).not.toMatch(/class="[a-z]+",reason="(outbound_queue_full|events_not_captured|qos0_overload)"/)
    // The same series a labelled increment uses.
    metrics.drops.inc(3, { reason: 'discard_old', class: 'high' })
    expect(metrics.registry.render()).toContain('ferry_drops_total{class="high",reason="discard_old"} 3\n')
    // Without --priority nothing is added: the reason-only series as they were.
    expect(createMetrics().registry.render()).not.toMatch(/^ferry_drops_total\{class=/m)
  })
})
