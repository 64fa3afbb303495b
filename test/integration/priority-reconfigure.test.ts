// A backlog stored under one --priority is forwarded after a restart with another one (or none): a
// class log left on disk (<data-dir>/low) is opened and drained, never left behind.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import fs from 'node:fs'
import path from 'node:path'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
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

describe('priority reconfigure', () => {
  it('priority - a class log stored under an earlier --priority is still forwarded after a restart without that class', async () => {
    const dir = tempDir('ferry-prio-reconf-')
    const common = ['--mqtt-listen', '127.0.0.1:0', '--data-dir', dir, '--nats-url', nats.url, '--presence', 'off', '--gateway-id', 'reconf']
    await nats.stop()
    const first = await spawnGateway([...common, '--priority', '+/+/telemetry=low,alarms/#=high'])
    const c = await connectClient(first.port, 'rc-dev')
    try {
      for (let i = 1; i <= 50; i++) await c.publishAsync('s/rc-dev/telemetry', JSON.stringify({ i }), { qos: 1 })
      for (let i = 1; i <= 5; i++) await c.publishAsync('alarms/rc-dev', JSON.stringify({ i }), { qos: 1 })
      for (let i = 1; i <= 10; i++) await c.publishAsync('s/rc-dev/status', JSON.stringify({ i }), { qos: 1 })
    } finally {
      await endClient(c)
      await first.kill('SIGTERM')
    }
    await nats.start()
    // No --priority now: the high and low logs on disk are drained all the same, each record once.
    const second = await spawnGateway(common)
    try {
      expect(await waitForCount(nats.url, 65, 20_000)).toBe(65)
      const topics = (await readStream(nats.url)).map((m) => m.subject)
      expect(topics.filter((s) => s.endsWith('.telemetry'))).toHaveLength(50)
      expect(topics.filter((s) => s.includes('.alarms.'))).toHaveLength(5)
      expect(topics.filter((s) => s.endsWith('.status'))).toHaveLength(10)
    } finally {
      await second.kill('SIGTERM')
    }
  }, 60_000)

  it('priority - a bound too small for the class logs left on disk is refused at start (exit 2) naming the directory and the fix', async () => {
    const dir = tempDir('ferry-prio-bound-left-')
    fs.mkdirSync(path.join(dir, 'low', 'segments'), { recursive: true })
    // Two segments and the reserve satisfy the config check for one class; with low's log on disk it needs three.
    const r = await runFerry(['run', '--data-dir', dir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--log-segment-bytes', '64KiB', '--log-max-bytes', '160KiB', '--max-record-bytes', '16KiB'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("'log.maxBytes'")
    expect(r.stderr).toContain(path.join(dir, 'low'))
    expect(r.stderr).toContain('raise --log-max-bytes to at least')
  }, 30_000)
})
