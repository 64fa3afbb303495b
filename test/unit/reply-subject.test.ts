// Attempt-tagged reply subjects (forward/reply-subject.ts): the wire form is pinned, and parsing gives back seq and attempt.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { parseReplySubject, replySubject } from '../../src/forward/reply-subject.js'

describe('reply subject - attempts', () => {
  it('reply subject - first send is <inbox>.<seq>, later ones <inbox>.<seq>_<attempt>', () => {
    expect(replySubject('_FERRY.abc', 42, 1)).toBe('_FERRY.abc.42')
    expect(replySubject('_FERRY.abc', 42, 3)).toBe('_FERRY.abc.42_3')
  })

  it('reply subject - parse reverses format', () => {
    fc.assert(
      fc.property(fc.integer({ min: 1, max: Number.MAX_SAFE_INTEGER }), fc.integer({ min: 1, max: 1_000_000 }), (seq, attempt) => {
        expect(parseReplySubject('_FERRY.x', replySubject('_FERRY.x', seq, attempt))).toEqual({ seq, attempt })
      }),
    )
  })
})
