// The dead-letter line format (src/forward/dead-letter.ts): what the gateway writes is what `ferry dlq` reads back.
import { describe, expect, it } from 'vitest'
import { formatDeadLetter, parseDeadLetters } from '../../src/forward/dead-letter.js'

describe('dead letters', () => {
  it('dead letters - one JSON line per letter, fields in file order, the body as base64', () => {
    const line = formatDeadLetter({ seq: 6, epoch: 2, ts: 1_700_000_000_000, deadAt: 1_700_000_000_500, reason: 'maximum message size exceeded', body: Buffer.from([0, 1, 254, 255]) })
    expect(line).toBe('{"seq":6,"epoch":2,"ts":1700000000000,"deadAt":1700000000500,"reason":"maximum message size exceeded","entry":"AAH+/w=="}\n')
  })

  it('dead letters - parsing gives back what was formatted, in order, skipping blank lines', () => {
    const letters = [
      { seq: 1, epoch: 1, ts: 10, deadAt: 20, reason: 'a', body: Buffer.from('x') },
      { seq: 9, epoch: 3, ts: 30, deadAt: 40, reason: 'b "quoted"\nline', body: Buffer.alloc(0) },
    ]
    const text = letters.map((d) => formatDeadLetter(d)).join('\n')
    expect(parseDeadLetters(text)).toEqual(letters)
    expect(parseDeadLetters('')).toEqual([])
    expect(() => parseDeadLetters('{"seq":1,\n')).toThrow(SyntaxError)
  })
})
