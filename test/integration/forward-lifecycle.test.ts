// The forwarder as a Component (src/lifecycle.ts): close(deadline) and closed(), against a real
// nats-server and a real ring log; and closed() reporting the log's failure when forwarding stops under it.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PayloadPolicy, encodeEntry } from '../../src/codec/index.js'
import { DeadLetters, Forwarder } from '../../src/forward/index.js'
import { deadlineIn } from '../../src/lifecycle.js'
import { LogReader, nodeFs } from '../../src/log/index.js'
import type { LogFs, RingLog } from '../../src/log/index.js'
import { silentLogger } from '../../src/logger.js'
import { createMetrics } from '../../src/metrics/index.js'
import { openLog, tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { waitForCount } from '../helpers/stream.js'

let nats: NatsServer
beforeAll(async () => {
  nats = await startNats()
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

async function until(cond: () => boolean, ms = 15_000): Promise<void> {
  const end = performance.now() + ms
  while (!cond()) {
    if (performance.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 20))
  }
}

function forwarderOn(log: RingLog, dir: string, stream: string): Forwarder {
  return new Forwarder({
    servers: [nats.url],
    stream,
    subjectPrefix: stream.toLowerCase(),
    gatewayId: 'gw-life',
    payloads: new PayloadPolicy(false, []),
    maxInflight: 64,
    maxInflightBytes: 1 << 20,
    ackTimeoutMs: 5000,
    maxAttempts: 3,
    logger: silentLogger,
    metrics: createMetrics(),
    log,
    reader: new LogReader(log, log.acked + 1),
    deadLetters: new DeadLetters(dir),
    liveLaneMinBacklog: 0,
    openReader: (fromSeq) => new LogReader(log, fromSeq),
  })
}

const entry = (i: number): Buffer => encodeEntry({ clientId: 'dev-1', topic: 'life/t', qos: 1, retain: false, packetId: 0, encoding: 3, payload: Buffer.from(`m${i}`) })

describe('forward lifecycle', () => {
  it('forward lifecycle - close(deadline) waits for PubAcks, closed() settles undefined, a second close waits for the same', async () => {
    const dir = tempDir()
    const log = await openLog(dir)
    const fwd = forwarderOn(log, dir, 'LIFE1')
    fwd.start()
    for (let i = 0; i < 20; i++) await log.append(entry(i))
    await waitForCount(nats.url, 20, 15_000, 'LIFE1')
    await until(() => log.acked === 20)
    let settled = false
    void fwd.closed().then(() => (settled = true))
    await new Promise((r) => setTimeout(r, 50))
    expect(settled).toBe(false)
    const first = fwd.close(deadlineIn(5000))
    const second = fwd.close(deadlineIn(0))
    await Promise.all([first, second])
    expect(await fwd.closed()).toBeUndefined()
    expect(fwd.isConnected).toBe(false)
    await log.close()
  })

  it('forward lifecycle - forwarding stops when the ring log fails, and closed() settles with its error', async () => {
    const dir = tempDir()
    let failSync = false
    const fs: LogFs = {
      ...nodeFs,
      fdatasync: async (fd) => {
        if (failSync) throw Object.assign(new Error('EIO: i/o error, fdatasync'), { code: 'EIO' })
        return nodeFs.fdatasync(fd)
      },
    }
    const log = await openLog(dir, { fs })
    const fwd = forwarderOn(log, dir, 'LIFE2')
    fwd.start()
    await log.append(entry(1))
    await waitForCount(nats.url, 1, 15_000, 'LIFE2')
    failSync = true
    await expect(log.append(entry(2))).rejects.toThrow()
    expect(log.failure).toBeDefined()
    const err = await fwd.closed()
    expect(err).toBe(log.failure)
    // close() after the failure is harmless and resolves at once.
    await fwd.close(deadlineIn(1000))
    await log.close().catch(() => {})
  })
})
