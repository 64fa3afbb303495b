// Dead letters with priority classes: the class is named in the line (seqs are per class log), and
// the forwarders of all classes share one file without overwriting each other's lines.
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { DeadLetters, formatDeadLetter, parseDeadLetters } from '../../src/forward/dead-letter.js'
import { tempDir } from '../helpers/log.js'

describe('dead letters - classes', () => {
  it('dead letters - a class other than normal is named after the reason; normal and none give today\'s line', () => {
    const base = { seq: 6, epoch: 2, ts: 1, deadAt: 2, reason: 'r', body: Buffer.from([1]) }
    const today = '{"seq":6,"epoch":2,"ts":1,"deadAt":2,"reason":"r","entry":"AQ=="}\n'
    expect(formatDeadLetter(base)).toBe(today)
    expect(formatDeadLetter({ ...base, className: 'normal' })).toBe(today)
    const high = formatDeadLetter({ ...base, className: 'high' })
    expect(high).toBe('{"seq":6,"epoch":2,"ts":1,"deadAt":2,"reason":"r","class":"high","entry":"AQ=="}\n')
    expect(parseDeadLetters(today + high)).toEqual([base, { ...base, className: 'high' }])
  })

  it('dead letters - several writers on one file (one per class forwarder) keep every line whole', async () => {
    const dir = tempDir()
    const writers = ['high', 'normal', 'low'].map((c) => ({ c, d: new DeadLetters(dir) }))
    const writes: Promise<void>[] = []
    for (let i = 0; i < 50; i++) {
      for (const { c, d } of writers) writes.push(d.write({ seq: i, epoch: 1, ts: i, reason: `r${i}`, body: Buffer.alloc(100, i), className: c }))
    }
    await Promise.all(writes)
    for (const { d } of writers) d.close()
    const lines = parseDeadLetters(fs.readFileSync(path.join(dir, 'dead-letter.jsonl'), 'utf8'))
    expect(lines).toHaveLength(150)
    for (const c of ['high', 'normal', 'low']) {
      const mine = lines.filter((l) => (l.className ?? 'normal') === c)
      // Each writer's lines are all there, in its order.
      expect(mine.map((l) => l.seq)).toEqual([...Array(50).keys()])
      for (const l of mine) expect(l.body).toEqual(Buffer.alloc(100, l.seq))
    }
  })
})
