// Review of issue 13 (conf): explicit log bounds that worked before the 32 KiB data-directory reserve.
import { describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/config/index.js'

const load = (argv: string[]) => loadConfig({ argv, env: {}, hostname: 'edge-01.local' })
const MiB = 1024 * 1024

describe('config - explicit log bounds from before the directory reserve', () => {
  it('config - a bound of exactly two explicit segments still starts (it did before issue 13)', () => {
    // The old message itself asked for "at least 2 x 'log.segmentBytes'": configs written to it must keep working.
    expect(load(['--log-max-bytes', '128MiB', '--log-segment-bytes', '64MiB']).log.segmentBytes).toBe(64 * MiB)
    expect(load(['--log-segment-bytes', '512MiB']).log.segmentBytes).toBe(512 * MiB) // default 1 GiB bound
    // Two segments less a byte still cannot work.
    expect(() => load(['--log-max-bytes', String(128 * MiB - 1), '--log-segment-bytes', '64MiB'])).toThrow(/at least 2 x 'log.segmentBytes'/)
  })
})
