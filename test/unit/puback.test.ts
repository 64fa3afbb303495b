// PubAck classification against the exact bytes nats-server 2.9 sends.
import { describe, expect, it } from 'vitest'
import { classifyPubAck } from '../../src/forward/index.js'

const b = (s: string): Buffer => Buffer.from(s)

describe('puback', () => {
  it('puback - stored, duplicate (with and without spaces), and a stream named "error"', () => {
    expect(classifyPubAck(b('{"stream":"FERRY", "seq":1}')).kind).toBe('stored')
    expect(classifyPubAck(b('{"stream":"FERRY", "seq":1,"duplicate": true}')).kind).toBe('duplicate')
    expect(classifyPubAck(b('{"stream":"FERRY","seq":1,"duplicate":true}')).kind).toBe('duplicate')
    expect(classifyPubAck(b('{"stream":"error", "seq":7}')).kind).toBe('stored')
    expect(classifyPubAck(b('{"stream":"S", "domain":"error", "seq":7}')).kind).toBe('stored')
  })

  it('puback - errors: 4xx permanent, 5xx and garbage retried', () => {
    expect(classifyPubAck(b('{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}'))).toEqual({
      kind: 'error',
      reason: 'JetStream error 400/10054: message size exceeds maximum allowed',
      permanent: true,
    })
    expect(classifyPubAck(b('{"error":{"code":503,"err_code":10077,"description":"store failed"}}'))).toMatchObject({ kind: 'error', permanent: false })
    expect(classifyPubAck(b('hello from someone else'))).toMatchObject({ kind: 'error', permanent: false })
  })
})
