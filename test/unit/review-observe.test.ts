// Review of issue 16's observability and tools (i16-observe): `ferry dlq` over a data directory with
// class logs. The dead letters of every class share DIR/dead-letter.jsonl, each line naming its class
// ("class", absent = normal) and carrying the seq it had in its class log (seqs are per class).
// Health's 'starved class' rule: a class held back by the priority gate is not judged for that time.
import fs from 'node:fs'
import path from 'node:path'
import { afterEach, beforeEach, describe, expect, it, vi } from 'vitest'
import { logTools } from '../../src/cli/log-tools.js'
import { decodeEntry, encodeEntry } from '../../src/codec/index.js'
import { formatDeadLetter, parseDeadLetters } from '../../src/forward/dead-letter.js'
import { Health } from '../../src/health/index.js'
import type { UpstreamHealth } from '../../src/health/index.js'
import { deadlineIn } from '../../src/lifecycle.js'
import { LogReader, NO_LOG_METRICS, scanLog } from '../../src/log/index.js'
import type { RingLog } from '../../src/log/index.js'
import { createMetrics } from '../../src/metrics/index.js'
import { openLog, tempDir } from '../helpers/log.js'

const body = (topic: string): Buffer => encodeEntry({ clientId: 'dev', topic, qos: 1, retain: false, packetId: 1, payload: Buffer.from('x') })

async function topicsIn(dir: string): Promise<string[]> {
  const out: string[] = []
  await scanLog(dir, 0, (r) => {
    out.push(decodeEntry(r.body).topic)
    return true
  })
  return out
}

describe('review i16-observe - dlq over class logs', () => {
  let dir: string
  beforeEach(async () => {
    vi.spyOn(process.stdout, 'write').mockImplementation(() => true)
    vi.spyOn(process.stderr, 'write').mockImplementation(() => true)
    dir = tempDir('ferry-review-dlq-')
    // A normal log in DIR and a high log in DIR/high, one forwarded record each (seq 1 in both).
    for (const [d, topic] of [
      [dir, 'telemetry/a'],
      [path.join(dir, 'high'), 'alarms/a'],
    ] as const) {
      fs.mkdirSync(d, { recursive: true })
      const log = await openLog(d, { metrics: NO_LOG_METRICS })
      await log.append(body(topic))
      await log.close()
    }
    // Seq 1 of class normal and seq 1 of class high were dead-lettered.
    const base = { seq: 1, epoch: 1, ts: 1, deadAt: 2, reason: 'rejected' }
    fs.writeFileSync(path.join(dir, 'dead-letter.jsonl'), formatDeadLetter({ ...base, body: body('telemetry/a') }) + formatDeadLetter({ ...base, body: body('alarms/a'), className: 'high' }))
  })
  afterEach(() => {
    vi.restoreAllMocks()
  })

  it('dlq replay - each dead letter goes back to the log of its own class', async () => {
    expect(await logTools('dlq', ['replay', dir])).toBe(0)
    expect(await topicsIn(dir)).toEqual(['telemetry/a', 'telemetry/a'])
    expect(await topicsIn(path.join(dir, 'high'))).toEqual(['alarms/a', 'alarms/a'])
    expect(fs.readFileSync(path.join(dir, 'dead-letter.jsonl'), 'utf8')).toBe('')
  })

  it('dlq replay --class high - only the dead letters of class high, into its log; the others stay', async () => {
    expect(await logTools('dlq', ['replay', dir, '--class', 'high'])).toBe(0)
    expect(await topicsIn(dir)).toEqual(['telemetry/a'])
    expect(await topicsIn(path.join(dir, 'high'))).toEqual(['alarms/a', 'alarms/a'])
    const left = parseDeadLetters(fs.readFileSync(path.join(dir, 'dead-letter.jsonl'), 'utf8'))
    expect(left.map((l) => [l.className ?? 'normal', decodeEntry(l.body).topic])).toEqual([['normal', 'telemetry/a']])
  })

  it('dlq purge --seq - a seq that two classes share is ambiguous without --class: nothing is removed', async () => {
    expect(await logTools('dlq', ['purge', dir, '--seq', '1'])).toBe(2)
    expect(parseDeadLetters(fs.readFileSync(path.join(dir, 'dead-letter.jsonl'), 'utf8'))).toHaveLength(2)
    expect(await logTools('dlq', ['purge', dir, '--seq', '1', '--class', 'normal'])).toBe(0)
    const left = parseDeadLetters(fs.readFileSync(path.join(dir, 'dead-letter.jsonl'), 'utf8'))
    expect(left.map((l) => l.className)).toEqual(['high'])
  })
})

describe('review i16-observe - health, a class the gate held back', () => {
  const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))
  async function until(f: () => boolean, ms = 5000): Promise<void> {
    const end = Date.now() + ms
    while (!f()) {
      if (Date.now() > end) throw new Error('condition not met in time')
      await sleep(20)
    }
  }
  const opened: RingLog[] = []
  let h: Health | undefined
  afterEach(async () => {
    await h?.close(deadlineIn(1000))
    for (const l of opened.splice(0)) await l.close()
  })

  it('a class that has just become the most important with records is not degraded for the time a more important class held it back', async () => {
    const high = await openLog(tempDir(), { metrics: NO_LOG_METRICS })
    const low = await openLog(tempDir(), { metrics: NO_LOG_METRICS })
    opened.push(high, low)
    const ackTimeoutMs = 1500
    const up = (lastAckAtMs: number): UpstreamHealth => ({ connected: true, lastAckAtMs, problem: '', ackTimeoutMs })
    // The high forwarder acknowledges; low's has had no PubAck since the start: the gate holds it behind high.
    const lowLastAck = Date.now()
    h = new Health({
      logs: [
        { name: 'high', log: high, openReader: (s) => new LogReader(high, s), upstream: () => up(Date.now()) },
        { name: 'low', log: low, openReader: (s) => new LogReader(low, s), upstream: () => up(lowLastAck) },
      ],
      dataDir: high.opts.dir,
      segmentBytes: 64 * 1024,
      mqttListening: () => true,
      upstream: () => up(Date.now()),
      metrics: createMetrics(),
      stallMs: 30_000,
    })
    const hh = h
    await high.append(Buffer.from('h'))
    await low.append(Buffer.from('l'))
    await until(() => hh.readiness.classes.low!.records === 1 && hh.readiness.classes.high!.records === 1)
    // Held back behind high for well over --ack-timeout-ms: not judged (as the rule says).
    await sleep(2500)
    expect(hh.readiness.checks.upstream.status).toBe('ok')
    // High is acknowledged: low is now first. At that sample it has waited no time of its own.
    high.ack(1)
    await until(() => hh.readiness.classes.high!.records === 0)
    expect(hh.readiness.checks.upstream).toEqual({ status: 'ok', detail: 'acknowledging; 1 records to forward (low 1)' })
    // Still no PubAck of its own past --ack-timeout-ms from then: degraded, naming it.
    await until(() => hh.readiness.checks.upstream.status === 'degraded', 6000)
    expect(hh.readiness.checks.upstream.detail).toMatch(/^class low: no PubAck for \d+ s with 1 records waiting while other classes are acknowledged$/)
  })
})
