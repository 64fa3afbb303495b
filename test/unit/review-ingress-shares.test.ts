// Review of issue 16 ingress: the fair-share queues must not keep records JetStream acknowledged
// long ago. With many devices each under its share, no device is ever "over", and the queues were
// released only then (or at a /metrics scrape): they kept one entry per record ever stored, far more
// than the "16 bytes per unacknowledged record" the accounting promises.
import { describe, expect, it } from 'vitest'
import { DeviceShares } from '../../src/ingress/index.js'

describe('device shares (review)', () => {
  it('device shares - acknowledged records are released while every device stays under its share (no scrape, nobody over)', () => {
    const log = { acked: 0 }
    // 1 MiB share, 1,000 devices, 100,000 records of 100 bytes: each device stores 10 KB, far under its share.
    const shares = new DeviceShares(1024 * 1024, [['normal', log]])
    const devices = 1000
    let seq = 0
    for (let i = 0; i < 100_000; i++) {
      const id = `dev-${i % devices}`
      // The publish path: is the device over its share? Then its record is stored.
      expect(shares.over(id)).toBe(false)
      shares.reserve(id, 100)
      shares.settle(id, 100, 'normal', ++seq)
      // JetStream keeps up: everything stored so far is acknowledged.
      log.acked = seq - 1
    }
    // Only the last record is not acknowledged: the queues should hold about that, not 100,000 runs.
    expect(shares.over('dev-0')).toBe(false)
    expect(shares.entries).toBeLessThan(1000)
    expect(shares.totalBytes).toBeLessThan(100 * 1000)
  })
})
