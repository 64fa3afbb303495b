// A small --log-max-bytes works on its own (issue 13): without --log-segment-bytes the segment size
// follows from the bound, so `--log-max-bytes 8MiB` starts, and under a load larger than the bound
// with NATS down the data directory stays within it and every eviction is counted. Bundled gateway.
import { execFileSync } from 'node:child_process'
import crypto from 'node:crypto'
import path from 'node:path'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

const MiB = 1024 * 1024
const BOUND = 8 * MiB

/** Bytes of the data directory as `du -sb` counts them: apparent sizes of every file and directory in it. */
const du = (dir: string): number => Number(execFileSync('du', ['-sb', dir], { encoding: 'utf8' }).split('\t')[0])
/** The same in allocated blocks (`du -s`). */
const duBlocks = (dir: string): number => Number(execFileSync('du', ['-s', '--block-size=1', dir], { encoding: 'utf8' }).split('\t')[0])

async function metric(g: GatewayProcess, name: string, label = ''): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${g.httpPort}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name}(\\{[^}]*\\})? (\\S+)$`, 'gm'))) if ((m[1] ?? '').includes(label)) sum += Number(m[2])
  return sum
}

describe('a small log bound on its own', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let dataDir: string

  beforeAll(async () => {
    nats = await startNats()
    await nats.stop() // upstream down for the whole test: everything stays in the log
    dataDir = path.join(tempDir('ferry-small-bound-'), 'data')
    gw = await spawnGateway(['--data-dir', dataDir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--log-max-bytes', '8MiB', '--presence', 'off'])
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.[Symbol.asyncDispose]()
  })

  it('bound - --log-max-bytes 8MiB alone starts with 1 MiB segments and keeps the data directory within 8 MiB under 20 MiB of load, counting drops', async () => {
    expect(gw.output()).toMatch(/"segmentBytes":1048576/) // the effective config in the startup log
    const c = await connectClient(gw.port, 'filler')
    // Small records fill each segment to within a few bytes: the worst case for the data directory's total.
    const payload = crypto.randomBytes(150).toString('base64') // 200 bytes of text that is not JSON: stored as sent
    const total = 80_000 // about 20 MiB
    let maxSeen = 0
    let maxBlocks = 0
    let acked = 0
    for (let i = 0; i < total; i += 500) {
      await Promise.all(Array.from({ length: 500 }, (_, k) => c.publishAsync(`devices/filler/t`, `${i + k} ${payload}`, { qos: 1 }).then(() => acked++)))
      maxSeen = Math.max(maxSeen, du(dataDir))
      maxBlocks = Math.max(maxBlocks, duBlocks(dataDir))
    }
    await endClient(c)
    const final = du(dataDir)
    const drops = await metric(gw, 'ferry_drops_total', 'reason="discard_old"')
    console.log(`small bound: ${acked} acknowledged, ${drops} evicted (discard_old), data directory at most ${maxSeen} bytes (du -sb; ${maxBlocks} in blocks) of ${BOUND}, at the end ${final}`)
    expect(acked).toBe(total)
    expect(maxSeen).toBeLessThanOrEqual(BOUND)
    expect(maxBlocks).toBeLessThanOrEqual(BOUND)
    expect(final).toBeLessThanOrEqual(BOUND)
    expect(drops).toBeGreaterThan(total / 2) // 20 MiB into 8: more than half is evicted
    // Each one counted: nothing was forwarded (NATS down), so what is not in the log was dropped.
    expect(drops).toBe(total - (await metric(gw, 'ferry_log_backlog_records')))
    expect(gw.child.exitCode).toBe(null)
  }, 120_000)
})
