// ferry_log_oldest_unforwarded_age_seconds is the age of the oldest record not yet acknowledged *now*: records
// acknowledged since the last look do not count (it used to read the previous second's oldest record, so under
// steady load with records always in flight it showed about 1 s more than the real lag).
import { describe, expect, it } from 'vitest'
import { Health } from '../../src/health/index.js'
import { deadlineIn } from '../../src/lifecycle.js'
import { LogReader } from '../../src/log/index.js'
import { createMetrics } from '../../src/metrics/index.js'
import { openLog, tempDir } from '../helpers/log.js'

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

describe('health - oldest unforwarded age', () => {
  it('oldest age - a record acknowledged since the last sample no longer counts', async () => {
    const log = await openLog(tempDir())
    const health = new Health({
      log,
      dataDir: log.opts.dir,
      segmentBytes: log.opts.segmentBytes,
      mqttListening: () => true,
      upstream: () => ({ connected: true, lastAckAtMs: Date.now(), problem: '' }),
      openReader: (fromSeq) => new LogReader(log, fromSeq),
      metrics: createMetrics(),
    })
    try {
      const first = await log.append(Buffer.from('a'))
      await sleep(1300) // one sample saw `first` as the oldest
      log.ack(first)
      await log.append(Buffer.from('b'))
      const appendedAt = Date.now()
      await sleep(1100) // the next sample
      const age = health.readiness.backlog.oldestAgeSeconds
      expect(health.readiness.backlog.records).toBe(1)
      // The age of `b` (about 1 s), not of the acknowledged `a` (about 2.4 s).
      expect(age).toBeLessThanOrEqual((Date.now() - appendedAt) / 1000 + 0.05)
      expect(age).toBeGreaterThan(0)
    } finally {
      await health.close(deadlineIn(1000))
      await log.close()
    }
  })
})
