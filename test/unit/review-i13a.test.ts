// Review of issue 13: explicit log bounds that worked before the 32 KiB data-directory reserve; request
// topic templates under a prefix that devices also publish data on.
import { describe, expect, it } from 'vitest'
import { loadConfig } from '../../src/config/index.js'
import { parseRequestTemplate, parseRequestTopic } from '../../src/downlink/index.js'

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

describe('requests - a template under a prefix devices also publish data on', () => {
  it('requests - with --request-topic devices/{device}/req/{service}/{method}, telemetry under devices/ is not a request (not dropped)', () => {
    const t = parseRequestTemplate('devices/{device}/req/{service}/{method}')
    // Ordinary telemetry of device d1: must go to the log, not be acknowledged and dropped as a malformed request.
    for (const topic of ['devices/d1/temp', 'devices/d1/status/battery/level', 'devices/d1/a/b/c/d']) {
      expect(parseRequestTopic(t, topic, true), topic).toBeUndefined()
      expect(parseRequestTopic(t, topic, false), topic).toBeUndefined()
    }
    // Requests still are, and a 3.1.1 request without its correlation id is still malformed.
    expect(parseRequestTopic(t, 'devices/d1/req/config/get/c1', true)).toEqual({ device: 'd1', service: 'config', method: 'get', correlationId: 'c1' })
    expect(parseRequestTopic(t, 'devices/d1/req/config/get', false)).toEqual({ device: 'd1', service: 'config', method: 'get' })
    expect(parseRequestTopic(t, 'devices/d1/req/config/get', true)).toBe('malformed')
  })
})
