// Counters keep each label set as given: values by label come back as they were set (no parsing of
// the exposition text), and the exposition itself is escaped per the Prometheus text format.
import { describe, expect, it } from 'vitest'
import { Counter } from '../../src/metrics/index.js'

describe('metrics registry', () => {
  it('metrics registry - byLabel returns each label value as given, also with quotes, backslashes and newlines', () => {
    const c = new Counter('ferry_test_total', 'test')
    const odd = 'a "quoted"\\back\nline'
    c.inc(2, { reason: odd })
    c.child({ reason: 'plain' }).inc(3)
    c.inc(5) // no labels: not in byLabel
    expect([...c.byLabel('reason')]).toEqual([
      [odd, 2],
      ['plain', 3],
    ])
    expect(c.total()).toBe(10)
    expect(c.render()).toBe('ferry_test_total{reason="a \\"quoted\\"\\\\back\\nline"} 2\nferry_test_total{reason="plain"} 3\nferry_test_total 5\n')
  })

  it('metrics registry - byLabel sums over the other labels; label sets without the label are left out', () => {
    const c = new Counter('ferry_test_total', 'test')
    c.inc(1, { reason: 'x', qos: '0' })
    c.inc(4, { reason: 'x', qos: '1' })
    c.inc(7, { qos: '1' })
    expect(c.byLabel('reason')).toEqual(new Map([['x', 5]]))
    expect(c.get({ qos: '1', reason: 'x' })).toBe(4)
  })
})
