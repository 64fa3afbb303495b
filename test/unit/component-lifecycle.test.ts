// The one component lifecycle on the log and on health: closed() settles with the failure that
// stopped the component, or with undefined after close(); close() is idempotent.
import { describe, expect, it } from 'vitest'
import { LogIoError } from '../../src/errors.js'
import { Health } from '../../src/health/index.js'
import { ClosedSignal, StartedComponents, deadlineIn } from '../../src/lifecycle.js'
import type { Component } from '../../src/lifecycle.js'
import { DirLock, LogReader, NO_LOG_METRICS, nodeFs } from '../../src/log/index.js'
import type { LogFs } from '../../src/log/index.js'
import { createMetrics } from '../../src/metrics/index.js'
import { openLog, tempDir } from '../helpers/log.js'

describe('component lifecycle', () => {
  it('lifecycle - log: closed() settles with the error of a failed fdatasync, before any close()', async () => {
    let fail = false
    const faulty: LogFs = { ...nodeFs, fdatasync: async (fd) => (fail ? Promise.reject(Object.assign(new Error('EIO'), { code: 'EIO' })) : nodeFs.fdatasync(fd)) }
    const log = await openLog(tempDir(), { fs: faulty, metrics: NO_LOG_METRICS })
    await log.append(Buffer.from('before'))
    let settled: Error | undefined | 'pending' = 'pending'
    void log.closed().then((err) => (settled = err))
    await Promise.resolve()
    expect(settled).toBe('pending')
    fail = true
    await expect(log.append(Buffer.from('during'))).rejects.toThrow(LogIoError)
    const err = await log.closed()
    expect(err).toBeInstanceOf(LogIoError)
    expect(err).toBe(log.failure)
    await log.close(deadlineIn(1000))
    expect(await log.closed()).toBe(err) // the first settlement stays
  })

  it('lifecycle - log: closed() settles with undefined after close(); close() is idempotent and releases the lock', async () => {
    const dir = tempDir()
    const log = await openLog(dir, { metrics: NO_LOG_METRICS })
    await log.append(Buffer.from('x'))
    const first = log.close(deadlineIn(1000))
    expect(log.close(deadlineIn(1000))).toBe(first)
    await first
    expect(await log.closed()).toBeUndefined()
    expect(DirLock.holder(dir)).toBeUndefined()
  })

  it('lifecycle - health: stops sampling at close(); closed() settles with undefined', async () => {
    const log = await openLog(tempDir())
    const health = new Health({
      log,
      dataDir: log.opts.dir,
      segmentBytes: log.opts.segmentBytes,
      mqttListening: () => true,
      upstream: () => ({ connected: true, lastAckAtMs: 0, problem: '' }),
      openReader: (fromSeq) => new LogReader(log, fromSeq),
      metrics: createMetrics(),
    })
    expect(health.readiness.checks.log.status).toBe('ok')
    await health.close(deadlineIn(1000))
    expect(await health.closed()).toBeUndefined()
    await log.close()
  })

  it('lifecycle - started components close in reverse start order; a close that rejects does not keep the others open', async () => {
    const closedOrder: string[] = []
    const part = (name: string, fails = false): Component => {
      const signal = new ClosedSignal()
      return {
        close: async () => {
          closedOrder.push(name)
          signal.resolve()
          if (fails) throw new Error(`${name} would not close`)
        },
        closed: () => signal.promise,
      }
    }
    const started = new StartedComponents()
    started.add('log', part('log'))
    started.add('ingress', part('ingress', true))
    started.add('http', part('http'))
    const errors: string[] = []
    await started.closeAll(deadlineIn(1000), (name, err) => errors.push(`${name}: ${(err as Error).message}`))
    expect(closedOrder).toEqual(['http', 'ingress', 'log'])
    expect(errors).toEqual(['ingress: ingress would not close'])
    expect(started.list.map((c) => c.name)).toEqual(['log', 'ingress', 'http'])
  })
})
