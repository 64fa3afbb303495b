// Helpers to open a ring log in a temp directory for tests.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { silentLogger } from '../../src/logger.js'
import { createMetrics } from '../../src/metrics/index.js'
import type { Metrics } from '../../src/metrics/index.js'
import { RingLog } from '../../src/log/index.js'
import type { RingLogOptions } from '../../src/log/index.js'

export function tempDir(prefix = 'ferry-test-'): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), prefix))
}

export async function openLog(
  dir: string,
  over: Partial<RingLogOptions> = {},
  metrics: Metrics = createMetrics(),
): Promise<RingLog> {
  return RingLog.open({
    dir,
    segmentBytes: 64 * 1024,
    maxBytes: 1024 * 1024,
    discard: 'old',
    fsync: 'always',
    fsyncIntervalMs: 20,
    maxRecordBytes: 8 * 1024,
    checkpointIntervalMs: 50,
    logger: silentLogger,
    metrics,
    ...over,
  })
}
