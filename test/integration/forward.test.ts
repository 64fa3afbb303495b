// Forwarding edge cases: a stream that does not capture our subjects, and messages JetStream rejects for good.
import fs from 'node:fs'
import path from 'node:path'
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeEntry } from '../../src/codec/index.js'
import { memoryLogger, startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

let nats: NatsServer
beforeAll(async () => {
  nats = await startNats()
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

async function withJsm<T>(fn: (jsm: Awaited<ReturnType<typeof jetstreamManager>>) => Promise<T>): Promise<T> {
  const nc = await connect({ servers: nats.url })
  try {
    return await fn(await jetstreamManager(nc))
  } finally {
    await nc.close()
  }
}

async function until(cond: () => boolean, ms = 15_000): Promise<void> {
  const end = Date.now() + ms
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 20))
  }
}

describe('forward', () => {
  it('stream - an existing stream that does not capture <prefix>.up.> is reported; messages wait in the log until it is fixed', async () => {
    await withJsm((jsm) => jsm.streams.add({ name: 'WRONG', subjects: ['elsewhere.>'] }))
    const lines: string[] = []
    const gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'nats.stream': 'WRONG', 'nats.subjectPrefix': 'wrong', presence: 'off' }, memoryLogger(lines))
    try {
      await until(() => lines.some((l) => l.includes('FERRY_ERR_FORWARD_STREAM')))
      const line = lines.find((l) => l.includes('FERRY_ERR_FORWARD_STREAM'))!
      expect(line).toContain('does not capture \\"wrong.up.>\\"')
      const c = await connectClient(gw.ingress.address.port, 'waiting')
      await c.publishAsync('a/b', '{"n":1}', { qos: 1 })
      await endClient(c)
      expect(gw.log.durableSeq - gw.log.acked).toBe(1)
      await withJsm((jsm) => jsm.streams.update('WRONG', { subjects: ['elsewhere.>', 'wrong.up.>'] }))
      expect(await waitForCount(nats.url, 1, 20_000, 'WRONG')).toBe(1)
    } finally {
      await gw.close()
    }
  })

  it('dead letter - a message the stream rejects permanently is moved aside, counted, and does not wedge the log', async () => {
    await withJsm((jsm) => jsm.streams.add({ name: 'DL', subjects: ['dl.up.>'], max_msg_size: 300 }))
    const dir = tempDir()
    const gw = await startGateway({ 'log.dataDir': dir, 'nats.url': nats.url, 'nats.stream': 'DL', 'nats.subjectPrefix': 'dl', presence: 'off' })
    try {
      const c = await connectClient(gw.ingress.address.port, 'dl-dev')
      await c.publishAsync('t/small', 'one', { qos: 1 })
      await c.publishAsync('t/big', Buffer.alloc(1000, 7), { qos: 1 })
      await c.publishAsync('t/small', 'two', { qos: 1 })
      await endClient(c)
      expect(await waitForCount(nats.url, 2, 20_000, 'DL')).toBe(2)
      expect((await readStream(nats.url, 'DL')).map((m) => Buffer.from(m.data).toString())).toEqual(['one', 'two'])
      await until(() => gw.metrics.drops.get({ reason: 'dead_letter' }) === 1)
      await until(() => gw.log.acked === gw.log.durableSeq)
      const lines = fs.readFileSync(path.join(dir, 'dead-letter.jsonl'), 'utf8').trim().split('\n')
      expect(lines).toHaveLength(1)
      const dead = JSON.parse(lines[0]!) as { seq: number; reason: string; entry: string }
      expect(dead.seq).toBe(2)
      expect(dead.reason).toMatch(/400/)
      expect(decodeEntry(Buffer.from(dead.entry, 'base64')).topic).toBe('t/big')
    } finally {
      await gw.close()
    }
  })

  it('limits - the largest publish the default --max-record-bytes accepts still fits NATS max_payload with its headers', async () => {
    const gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'nats.stream': 'BIG', 'nats.subjectPrefix': 'big' })
    try {
      const clientId = 'x'.repeat(200)
      const topic = 'big/payload'
      const payload = Buffer.alloc(gw.config.log.maxRecordBytes - 7 - clientId.length - topic.length, 0xff)
      const c = await connectClient(gw.ingress.address.port, clientId)
      await c.publishAsync(topic, payload, { qos: 1 })
      await endClient(c)
      expect(await waitForCount(nats.url, 1, 20_000, 'BIG')).toBe(1)
      expect(gw.metrics.drops.get({ reason: 'dead_letter' })).toBe(0)
    } finally {
      await gw.close()
    }
  })
})
