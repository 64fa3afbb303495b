// Configuration: sizes with units, every problem reported together, precedence, frozen result.
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig, parseBytes } from '../../src/config/index.js'
import { ConfigError } from '../../src/errors.js'
import { tempDir } from '../helpers/log.js'

const load = (argv: string[], env: Record<string, string> = {}) => loadConfig({ argv, env, hostname: 'edge-01.local' })

describe('config', () => {
  it('config - sizes accept plain bytes and binary/decimal units', () => {
    expect(parseBytes('512MiB')).toBe(512 * 1024 * 1024)
    expect(parseBytes('2GiB')).toBe(2 * 1024 ** 3)
    expect(parseBytes('64KiB')).toBe(65536)
    expect(parseBytes('1GB')).toBe(1e9)
    expect(parseBytes(4096)).toBe(4096)
    expect(parseBytes('12abc')).toBeUndefined()
    expect(parseBytes('1.5B')).toBeUndefined()
  })

  it('config - defaults, gateway id from the host name, frozen', () => {
    const c = load([])
    expect(c.mqtt).toEqual({ host: '127.0.0.1', port: 1883 })
    expect(c.log.maxBytes).toBe(1024 ** 3)
    expect(c.log.discard).toBe('old')
    expect(c.log.fsync).toBe('always')
    expect(c.nats.url).toEqual(['nats://127.0.0.1:4222'])
    expect(c.gatewayId).toBe('edge-01-local')
    expect(Object.isFrozen(c) && Object.isFrozen(c.log)).toBe(true)
  })

  it('config - precedence is flags > environment > file > defaults', () => {
    const file = path.join(tempDir(), 'ferry.yaml')
    fs.writeFileSync(file, 'log:\n  maxBytes: 2GiB\n  fsync: batch\nnats.stream: FROMFILE\ngatewayId: file-gw\n')
    const c = load(['--config', file, '--fsync', 'none'], { FERRY_STREAM: 'FROMENV' })
    expect(c.log.maxBytes).toBe(2 * 1024 ** 3)
    expect(c.log.fsync).toBe('none')
    expect(c.nats.stream).toBe('FROMENV')
    expect(c.gatewayId).toBe('file-gw')
  })

  it('config - all problems are collected, each naming key, value and expectation', () => {
    const file = path.join(tempDir(), 'ferry.json')
    fs.writeFileSync(file, JSON.stringify({ log: { segmentBytes: '1KiB', unknownKey: 1 } }))
    let err: unknown
    try {
      load(['--config', file, '--discard', 'maybe', '--mqtt-listen', 'nohost'], { FERRY_CBOR: 'perhaps' })
    } catch (e) {
      err = e
    }
    expect(err).toBeInstanceOf(ConfigError)
    const problems = (err as ConfigError).problems.join('\n')
    expect(problems).toContain("unknown option 'log.unknownKey' (file)")
    expect(problems).toContain("'log.segmentBytes' (config file) must be a size in [65536, 1073741824]")
    expect(problems).toContain("'log.discard' (flag --discard) must be one of \"old\", \"new\", got \"maybe\"")
    expect(problems).toContain("'mqtt.listen' (flag --mqtt-listen) must be HOST:PORT")
    expect(problems).toContain("'codec.cbor' (environment FERRY_CBOR) must be one of true, false, on, off")
    expect((err as ConfigError).code).toBe('FERRY_ERR_CONFIG_INVALID')
  })

  it('config - without --log-segment-bytes the segment size follows from --log-max-bytes (an eighth, 1 MiB to 64 MiB)', () => {
    const MiB = 1024 * 1024
    const KiB = 1024
    // An eighth of the bound less 32 KiB (checkpoint, lock, directories), rounded down to 4 KiB.
    expect(load([]).log.segmentBytes).toBe(64 * MiB - 4 * KiB) // the default bound, 1 GiB: 16 segments and the reserve
    expect(load(['--log-max-bytes', '8MiB']).log.segmentBytes).toBe(1 * MiB) // at least 1 MiB: a default max-size publish fits
    expect(load(['--log-max-bytes', '16MiB']).log.segmentBytes).toBe(2 * MiB - 4 * KiB)
    expect(load(['--log-max-bytes', '100MiB']).log.segmentBytes).toBe(Math.floor((100 * MiB - 32 * KiB) / 8 / 4096) * 4096)
    expect(load(['--log-max-bytes', '1000000000']).log.segmentBytes % 4096).toBe(0)
    expect(load(['--log-max-bytes', '64GiB']).log.segmentBytes).toBe(64 * MiB - 4 * KiB)
    expect(load([], { FERRY_LOG_MAX_BYTES: '24MiB' }).log.segmentBytes).toBe(3 * MiB - 4 * KiB)
    for (const bound of ['3MiB', '16MiB', '1GiB', '5GiB']) {
      // Eight segments, or as many as fit, and the reserve stay within the bound.
      const c = load(['--log-max-bytes', bound]).log
      const segments = Math.min(8, Math.floor((c.maxBytes - 32 * KiB) / c.segmentBytes))
      expect(segments).toBeGreaterThanOrEqual(2)
      expect(segments * c.segmentBytes + 32 * KiB).toBeLessThanOrEqual(c.maxBytes)
    }
    // Given explicitly, it is used as given (and checked).
    expect(load(['--log-max-bytes', '8MiB', '--log-segment-bytes', '3MiB']).log.segmentBytes).toBe(3 * MiB)
    const file = path.join(tempDir(), 'ferry.yaml')
    fs.writeFileSync(file, 'log:\n  maxBytes: 8MiB\n  segmentBytes: 2MiB\n')
    expect(load(['--config', file]).log.segmentBytes).toBe(2 * MiB)
  })

  it('config - a log bound and segment size that cannot work are refused, naming the keys', () => {
    const problems = (argv: string[]): string => {
      try {
        load(argv)
      } catch (e) {
        expect(e).toBeInstanceOf(ConfigError)
        return (e as ConfigError).problems.join('\n')
      }
      return ''
    }
    // Explicit: 8 MiB cannot hold 2 segments of 64 MiB.
    expect(problems(['--log-max-bytes', '8MiB', '--log-segment-bytes', '64MiB'])).toContain("'log.maxBytes' (8388608) must be at least 2 x 'log.segmentBytes' (67108864)")
    // Explicit segment too small for the default largest publish.
    expect(problems(['--log-segment-bytes', '512KiB'])).toContain("'log.maxRecordBytes' (1047552) must fit in one segment")
    // Derived: below 2 MiB + 32 KiB the derived 1 MiB segment does not fit twice; the message says how it was derived.
    const small = problems(['--log-max-bytes', '2MiB'])
    expect(small).toContain("'log.maxBytes' (2097152) must be at least 2 x 'log.segmentBytes' (1048576, derived from 'log.maxBytes'")
    expect(small).toContain('+ 32768 for the checkpoint and directories')
    expect(small).toContain('--log-segment-bytes')
    // A small bound works with small segments and records given explicitly.
    expect(load(['--log-max-bytes', '1MiB', '--log-segment-bytes', '256KiB', '--max-record-bytes', '64KiB']).log.segmentBytes).toBe(256 * 1024)
  })

  it('config - raw topic filters are validated', () => {
    expect(load(['--raw-topics', 'firmware/#, +/raw/+']).codec.rawTopics).toEqual(['firmware/#', '+/raw/+'])
    expect(load(['--shutdown-timeout', '2.5s']).shutdownTimeoutMs).toBe(2500)
    expect(load(['--shutdown-timeout', '1500']).shutdownTimeoutMs).toBe(1500)
    expect(load(['--shutdown-timeout', '1m']).shutdownTimeoutMs).toBe(60_000)
    expect(() => load(['--shutdown-timeout', '11m'])).toThrow(/'shutdownTimeoutMs' \(flag --shutdown-timeout\) must be a duration/)
    expect(load(['--allow-anonymous', '--mqtt-listen', '0.0.0.0:1883']).auth.allowAnonymous).toBe(true)
    expect(load([]).codec.rawTopics).toEqual([])
    expect(() => load(['--raw-topics', 'a/#/b'])).toThrow(/'codec.rawTopics' \(flag --raw-topics\) must be MQTT topic filters/)
  })

  it('config - subject prefix and stream names are checked', () => {
    expect(() => load(['--subject-prefix', 'ferry.*'])).toThrow(/'nats.subjectPrefix' must be NATS subject tokens/)
    expect(() => load(['--stream', 'A.B'])).toThrow(/'nats.stream' must be a stream name/)
    expect(load(['--subject-prefix', 'ferry.site1']).nats.subjectPrefix).toBe('ferry.site1')
  })
})
