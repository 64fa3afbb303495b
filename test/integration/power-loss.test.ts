// Power loss under --fsync batch (issue 10, test 10): the checkpoint keeps the highest written seq even
// while NATS is down, so a tail cut by power loss is counted (power_loss) and its seqs are never reused.
//
// A power loss is simulated: kill -9 once the checkpoint covers what was acknowledged, then cut the
// last K records off the last segment at a record boundary (what the page cache did not write back).
import fs from 'node:fs'
import path from 'node:path'
import { crc32 } from 'node:zlib'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor } from '../../src/codec/index.js'
import { SEGMENT_HEADER_BYTES } from '../../src/log/format.js'
import { frameOffsets, segmentFiles } from '../helpers/damage.js'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

const FSYNC_INTERVAL_MS = 200

let nats: NatsServer
beforeAll(async () => {
  nats = await startNats()
  await nats.stop() // upstream is down through the power loss
})
afterAll(async () => {
  await nats?.[Symbol.asyncDispose]()
})

/**
 * The seq floor of the checkpoint file (README "On-disk format": two 4 KiB slots, the valid one with
 * the highest generation wins; floor at offset 24), or undefined when no slot is valid.
 */
function checkpointFloor(dataDir: string): number | undefined {
  let buf: Buffer
  try {
    buf = fs.readFileSync(path.join(dataDir, 'checkpoint'))
  } catch {
    return undefined
  }
  let best: { gen: number; floor: number } | undefined
  for (const at of [0, 4096]) {
    const s = buf.subarray(at, at + 56)
    if (s.length < 56 || s.toString('latin1', 0, 4) !== 'FRCP' || s.readUInt16LE(4) !== 1) continue
    if (s.readUInt32LE(52) !== crc32(s.subarray(0, 52))) continue
    const gen = Number(s.readBigUInt64LE(8))
    if (!best || gen > best.gen) best = { gen, floor: Number(s.readBigUInt64LE(24)) }
  }
  return best?.floor
}

async function until(what: string, timeoutMs: number, cond: () => boolean | Promise<boolean>, gw: GatewayProcess): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (gw.child.exitCode !== null) throw new Error(`gateway exited (${gw.child.exitCode}) while waiting for: ${what}\n${gw.output().slice(-3000)}`)
    if (await cond()) return
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}`)
    await new Promise((r) => setTimeout(r, 25))
  }
}

async function drops(gw: GatewayProcess, reason: string): Promise<number> {
  const port = /"msg":"HTTP listening","address":"[^"]*:(\d+)"/.exec(gw.output())![1]
  const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
  const m = new RegExp(`^ferry_drops_total\\{reason="${reason}"\\} (\\S+)$`, 'm').exec(text)
  return m ? Number(m[1]) : 0
}

/** JSON log lines of the gateway. */
function logLines(gw: GatewayProcess): Array<Record<string, unknown>> {
  return gw
    .output()
    .split('\n')
    .filter((l) => l.startsWith('{'))
    .map((l) => JSON.parse(l) as Record<string, unknown>)
}

type Cut = 'record boundary' | 'torn record' | 'whole last segment'

describe('power loss', () => {
  // Where the power loss cut the log: after record N-K, inside record N-K+1, or everything of the
  // last segment (its file kept only the header).
  const cuts: Cut[] = ['record boundary', 'torn record', 'whole last segment']
  for (const [i, cut] of cuts.entries()) {
    const name = `ploss${i + 1}`
    const stream = name.toUpperCase()
    it(`power loss - fsync batch, NATS down, ${cut}: the lost tail is counted as power_loss with its seq range, and its seqs are never reused`, async () => {
      const N = cut === 'whole last segment' ? 700 : 200
      const M = 20
      const dataDir = tempDir()
      const args = [
        '--mqtt-listen', '127.0.0.1:0',
        '--data-dir', dataDir,
        '--nats-url', nats.url,
        '--gateway-id', name,
        '--fsync', 'batch',
        '--fsync-interval-ms', String(FSYNC_INTERVAL_MS),
        '--log-segment-bytes', '64KiB', // ~500 records a segment: 700 make two
        '--max-record-bytes', '16KiB',
        '--presence', 'off', // only device records: seqs 1..N are the N publishes
        '--stream', stream,
        '--subject-prefix', name,
      ]
      let gw = await spawnGateway(args)
      try {
        const c = await connectClient(gw.port, 'ploss-dev')
        expect(await publishSeries(c, 'ploss-dev', N, 20, 1)).toHaveLength(N)
        await endClient(c)
        // At least one durable checkpoint per fsync interval while records are written, NATS or not.
        await until(`the checkpoint's seq floor reaches ${N} (written every ${FSYNC_INTERVAL_MS} ms while records are written)`, 25 * FSYNC_INTERVAL_MS, () => (checkpointFloor(dataDir) ?? 0) >= N, gw)
        expect(checkpointFloor(dataDir)).toBe(N)
        await gw.kill('SIGKILL')

        // The power loss: the last K records never reached the disk.
        const files = segmentFiles(dataDir)
        const last = files.at(-1)!
        const offsets = frameOffsets(last) // unsealed after kill -9: data frames only
        const K = cut === 'whole last segment' ? offsets.length : 7
        if (cut === 'whole last segment') {
          expect(files.length).toBe(2)
          fs.truncateSync(last, SEGMENT_HEADER_BYTES)
        } else {
          expect(files.length).toBe(1)
          expect(offsets).toHaveLength(N)
          fs.truncateSync(last, offsets[N - K]! + (cut === 'torn record' ? 45 : 0))
        }
        const stat = JSON.parse((await runFerry(['log', 'stat', dataDir, '--json'])).stdout) as { lastSeq: number }
        expect(stat.lastSeq).toBe(N - K)
        expect(checkpointFloor(dataDir)).toBe(N)

        gw = await spawnGateway(args)
        await until('power_loss drops counted', 5000, async () => (await drops(gw, 'power_loss')) > 0, gw)
        expect(await drops(gw, 'power_loss')).toBe(K)
        const warned = logLines(gw).filter((l) => l.level === 'warn' && String(l.msg).includes('missing'))
        expect(warned).toContainEqual(expect.objectContaining({ firstSeq: N - K + 1, lastSeq: N }))

        const c2 = await connectClient(gw.port, 'ploss-dev')
        expect(await publishSeries(c2, 'ploss-dev', M, 5, N + 1)).toHaveLength(M)
        await endClient(c2)
        await nats.start()
        expect(await waitForCount(nats.url, N - K + M, 30_000, stream)).toBe(N - K + M)
        const msgs = await readStream(nats.url, stream)
        const ids = msgs.map((m) => {
          const [gateway, epoch, seq] = m.headers['Nats-Msg-Id']!.split(':')
          return { gateway, epoch: Number(epoch), seq: Number(seq), device: (decodeCbor(m.data) as { seq: number }).seq }
        })
        // What survived the cut went up with its old seqs; the new messages got seqs above the floor.
        expect(ids.slice(0, N - K).map((x) => [x.device, x.seq])).toEqual(Array.from({ length: N - K }, (_, i) => [i + 1, i + 1]))
        const fresh = ids.slice(N - K)
        expect(fresh.map((x) => x.device)).toEqual(Array.from({ length: M }, (_, i) => N + 1 + i))
        expect(fresh.every((x) => x.seq > N)).toBe(true)
        expect(fresh.every((x) => x.epoch > ids[0]!.epoch)).toBe(true)
        expect(new Set(msgs.map((m) => m.headers['Nats-Msg-Id'])).size).toBe(msgs.length)
        const dump = (await runFerry(['log', 'dump', dataDir, '--from', String(N - K + 1), '--json'])).stdout.trim().split('\n')
        expect(dump.map((l) => (JSON.parse(l) as { seq: number }).seq)).toEqual(Array.from({ length: M }, (_, i) => N + 1 + i))
        // Counted once, as power_loss: not again as corrupt when the forwarder passes the gap.
        expect(await drops(gw, 'power_loss')).toBe(K)
        expect(await drops(gw, 'corrupt')).toBe(0)
        expect(await gw.kill('SIGTERM')).toBe(0)
      } finally {
        await gw.kill('SIGKILL')
        await nats.stop()
        fs.rmSync(dataDir, { recursive: true, force: true })
      }
    })
  }
})
