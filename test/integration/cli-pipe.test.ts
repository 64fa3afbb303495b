// `ferry log dump` into a pipe that is read slowly: the whole output arrives (the process waits for stdout to drain
// before it exits; it used to exit with the first 64 KiB pipe buffer written and the rest lost).
import { execFile } from 'node:child_process'
import { promisify } from 'node:util'
import { describe, expect, it } from 'vitest'
import { encodeEntry } from '../../src/codec/index.js'
import { openLog, tempDir } from '../helpers/log.js'

const RECORDS = 1500

describe('ferry log dump into a slow pipe', () => {
  it('writes every record before it exits', async () => {
    const dir = tempDir('ferry-pipe-')
    const log = await openLog(dir, { maxBytes: 64 * 1024 * 1024, segmentBytes: 4 * 1024 * 1024 })
    for (let i = 1; i <= RECORDS; i++) {
      await log.append(encodeEntry({ clientId: 'pipe-dev', topic: 'devices/pipe-dev/t', qos: 1, retain: false, packetId: i, encoding: 0, payload: Buffer.from(JSON.stringify({ i, pad: 'x'.repeat(80) })) }))
    }
    await log.close()
    // The reader starts reading only after 1 s: by then the dump has written all it can and returned.
    const { stdout } = await promisify(execFile)('sh', ['-c', `${process.execPath} dist/ferry.cjs log dump '${dir}' --json --limit 100000 | (sleep 1; wc -l)`], { timeout: 30_000 })
    expect(Number(stdout.trim())).toBe(RECORDS)
  }, 40_000)
})
