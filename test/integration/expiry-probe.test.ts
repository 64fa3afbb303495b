// Review of issue 13's expiry drop: when the record recovery would send alone as its probe has
// expired, recovery must not end as if the probe had been stored (sending every other record at
// once, without a probe, to an upstream that still refuses them).
import { connect } from '@nats-io/transport-node'
import { jetstreamManager, jetstream } from '@nats-io/jetstream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PayloadPolicy, encodeEntry } from '../../src/codec/index.js'
import { DeadLetters, Forwarder } from '../../src/forward/index.js'
import { deadlineIn } from '../../src/lifecycle.js'
import { LogReader } from '../../src/log/index.js'
import type { Logger } from '../../src/logger.js'
import { createMetrics } from '../../src/metrics/index.js'
import { openLog, tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

let nats: NatsServer
beforeAll(async () => {
  nats = await startNats()
})
afterAll(async () => {
  await nats?.stop()
})

const STREAM = 'EXPPROBE'

describe('expiry - an expired probe', () => {
  it('recovery does not resume (nor resend everything at once) when its probe expired: the next record is the probe', async () => {
    const nc = await connect({ servers: nats.url })
    const jsm = await jetstreamManager(nc)
    // A full stream that refuses new messages (503 "maximum messages exceeded": not permanent).
    await jsm.streams.add({ name: STREAM, subjects: ['expprobe.up.>', 'expprobe.events.>'], max_msgs: 1, discard: 'new' })
    await jetstream(nc).publish('expprobe.up.fill', 'x')
    const infos: string[] = []
    const logger: Logger = { debug: () => {}, info: (m) => infos.push(m), warn: () => {}, error: () => {}, child: () => logger }
    const dir = tempDir('ferry-expiry-probe-')
    const log = await openLog(dir)
    const metrics = createMetrics()
    const fwd = new Forwarder({
      servers: [nats.url],
      stream: STREAM,
      subjectPrefix: STREAM.toLowerCase(),
      gatewayId: 'gw-probe',
      payloads: new PayloadPolicy(false, []),
      maxInflight: 64,
      maxInflightBytes: 1 << 20,
      ackTimeoutMs: 2000,
      maxAttempts: 3,
      logger,
      metrics,
      log,
      reader: new LogReader(log, log.acked + 1),
      deadLetters: new DeadLetters(dir),
      liveLaneMinBacklog: 0,
      openReader: (fromSeq) => new LogReader(log, fromSeq),
    })
    try {
      const base = { clientId: 'dev-1', topic: 't', qos: 1 as const, retain: false, packetId: 0, encoding: 3 as const }
      await log.append(encodeEntry({ ...base, payload: Buffer.from('a'), properties: { expiresAtMs: Date.now() + 1000 } }))
      for (const p of ['b', 'c', 'd']) await log.append(encodeEntry({ ...base, payload: Buffer.from(p) }))
      fwd.start()
      // Refused, refused again as the probe (with backoff); the probe expires after 1 s.
      await new Promise((r) => setTimeout(r, 4000))
      // Nothing was stored: recovery must not say it was, nor have resent b, c and d all together.
      expect(infos.filter((m) => m.startsWith('forwarding resumed'))).toEqual([])
      // Room again: the rest is stored, in order, and the cursor passes everything.
      await jsm.streams.update(STREAM, { subjects: ['expprobe.up.>', 'expprobe.events.>'], max_msgs: 10, discard: 'new' })
      expect(await waitForCount(nats.url, 4, 20_000, STREAM)).toBe(4)
      expect((await readStream(nats.url, STREAM)).slice(1).map((m) => Buffer.from(m.data).toString())).toEqual(['b', 'c', 'd'])
    } finally {
      await fwd.close(deadlineIn(2000))
      await log.close()
      await nc.close()
    }
  }, 60_000)
})
