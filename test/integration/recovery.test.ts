// Recovery: a torn tail and bit flips mid-log → the gateway starts, skips and counts exactly the damaged records, forwards the rest.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor, encodeEntry } from '../../src/codec/index.js'
import { RECORD_HEADER_BYTES } from '../../src/log/format.js'
import { startGateway } from '../helpers/gateway.js'
import { appendTornFrame, flipBit, frameOffsets, segmentFiles, unseal } from '../helpers/damage.js'
import { openLog, tempDir } from '../helpers/log.js'
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

const LOG = { segmentBytes: 256 * 1024, maxBytes: 4 * 1024 * 1024, maxRecordBytes: 16 * 1024 }

async function writeRecords(dir: string, n: number): Promise<void> {
  const log = await openLog(dir, LOG)
  const all: Promise<number>[] = []
  for (let seq = 1; seq <= n; seq++) {
    const payload = Buffer.from(JSON.stringify({ seq, reading: seq * 1.5 }))
    all.push(log.append(encodeEntry({ clientId: 'rec', topic: 'devices/rec/telemetry', qos: 1, retain: false, packetId: seq, payload })))
  }
  await Promise.all(all)
  await log.close()
}

async function forwardAll(dir: string, stream: string, expected: number) {
  const gw = await startGateway({
    'log.dataDir': dir,
    'log.segmentBytes': LOG.segmentBytes,
    'log.maxBytes': LOG.maxBytes,
    'log.maxRecordBytes': LOG.maxRecordBytes,
    'nats.url': nats.url,
    'nats.stream': stream,
    'nats.subjectPrefix': stream.toLowerCase(),
  })
  try {
    expect(await waitForCount(nats.url, expected, 30_000, stream)).toBe(expected)
    const seqs = (await readStream(nats.url, stream)).map((m) => (decodeCbor(m.data) as { seq: number }).seq)
    return { seqs, corrupt: gw.metrics.drops.get({ reason: 'corrupt' }), recovery: gw.log.recovery }
  } finally {
    await gw.close()
  }
}

describe('recovery', () => {
  it('recovery - torn tail is truncated, one flipped bit mid-segment skips exactly that record', async () => {
    const dir = tempDir()
    await writeRecords(dir, 1000)
    const [file] = segmentFiles(dir)
    unseal(file!)
    const offsets = frameOffsets(file!)
    flipBit(file!, offsets[499]! + RECORD_HEADER_BYTES + 3) // a payload byte of seq 500
    appendTornFrame(file!, 40)
    const { seqs, corrupt, recovery } = await forwardAll(dir, 'RECA', 999)
    expect(seqs).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1).filter((s) => s !== 500))
    expect(corrupt).toBe(1)
    expect(recovery.truncatedBytes).toBe(40)
    expect(recovery.damagedRecords).toBe(1)
  })

  it('recovery - a flipped length field in a sealed segment: the framing resyncs and only that record is lost', async () => {
    const dir = tempDir()
    await writeRecords(dir, 1000)
    const [file] = segmentFiles(dir)
    const offsets = frameOffsets(file!)
    flipBit(file!, offsets[299]! + 5, 3) // bodyLen of seq 300: the frame now claims another length
    const { seqs, corrupt, recovery } = await forwardAll(dir, 'RECB', 999)
    expect(seqs).toEqual(Array.from({ length: 1000 }, (_, i) => i + 1).filter((s) => s !== 300))
    expect(corrupt).toBe(1)
    expect(recovery.scannedSegments).toBe(0) // the seal was trusted; the damage was found while reading
  })
})
