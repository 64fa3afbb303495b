// Review of issue 15's partitions: what a consumer reads with the gateway's N.
import fs from 'node:fs'
import { describe, expect, it } from 'vitest'
import { eventSubjectDevice, subjectToTopic, uplinkClientId } from '../../src/codec/index.js'
import { OPTIONS } from '../../src/config/index.js'

describe('partitions review - the N a consumer passes', () => {
  it('partitions review - subjectToTopic, uplinkClientId and eventSubjectDevice refuse an N that is not an integer >= 0, as partitionOf and subjectPartition do', () => {
    // A consumer reading N from its environment gets NaN when it is unset (Number(undefined), parseInt('')):
    // read silently as "partitioned, any p", `ferry.up.7.x` of a gateway without partitions became topic `x`.
    for (const n of [Number.NaN, -1, 2.5, Number.POSITIVE_INFINITY]) {
      expect(() => subjectToTopic('ferry', 'ferry.up.7.x', n), String(n)).toThrow(/partitions must be an integer >= 0/)
      expect(() => uplinkClientId('ferry', 'ferry.up.7.devices.d1.x', undefined, n), String(n)).toThrow(/partitions must be an integer >= 0/)
      expect(() => eventSubjectDevice('ferry', 'ferry.events.7.d1.connected', n), String(n)).toThrow(/partitions must be an integer >= 0/)
    }
    // Valid N: unchanged.
    expect(subjectToTopic('ferry', 'ferry.up.7.x')).toBe('7/x')
    expect(subjectToTopic('ferry', 'ferry.up.7.x', 0)).toBe('7/x')
    expect(subjectToTopic('ferry', 'ferry.up.7.x', 8)).toBe('x')
    expect(uplinkClientId('ferry', 'ferry.up.7.devices.d1.x', undefined, 8)).toBe('d1')
    expect(eventSubjectDevice('ferry', 'ferry.events.7.d1.connected', 8)).toBe('d1')
    expect(eventSubjectDevice('ferry', 'ferry.events.d1.connected', 8)).toBeUndefined()
  })
})

describe('partitions review - docs', () => {
  it('partitions review - wherever the README or `ferry run --help` names the uplink or event subject layout, it names the partitioned one too', () => {
    const readme = fs.readFileSync('README.md', 'utf8')
    // A README line with the layout, and the line after it (prose wraps); each option's help.
    const lines = readme.split('\n')
    const texts = [...lines.map((l, i) => [`README.md:${i + 1}`, l, `${l}\n${lines[i + 1] ?? ''}`] as const), ...OPTIONS.map((o) => [`--help ${o.flag}`, o.help, o.help] as const)]
    const names = /\.events\.<device>|\.up\.<topic levels>/
    const bare = texts.filter(([, t, around]) => names.test(t) && !/<p>|--partitions/.test(around)).map(([where]) => where)
    expect(bare).toEqual([])
  })
})
