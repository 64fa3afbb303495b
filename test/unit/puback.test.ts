// PubAck classification against the exact bytes nats-server 2.9 sends.
import { describe, expect, it } from 'vitest'
import { classifyPubAck, expectStream } from '../../src/forward/index.js'

const b = (s: string): Buffer => Buffer.from(s)
const FERRY = expectStream('FERRY')

describe('puback', () => {
  it('puback - stored, duplicate (with and without spaces), and a stream named "error"', () => {
    expect(classifyPubAck(b('{"stream":"FERRY", "seq":1}'), FERRY).kind).toBe('stored')
    expect(classifyPubAck(b('{"stream":"FERRY", "seq":1,"duplicate": true}'), FERRY).kind).toBe('duplicate')
    expect(classifyPubAck(b('{"stream":"FERRY","seq":1,"duplicate":true}'), FERRY).kind).toBe('duplicate')
    expect(classifyPubAck(b('{"stream":"error", "seq":7}'), expectStream('error')).kind).toBe('stored')
    expect(classifyPubAck(b('{"stream":"S", "domain":"error", "seq":7}'), expectStream('S')).kind).toBe('stored')
  })

  it('puback - errors: 4xx permanent, 5xx and garbage retried', () => {
    expect(classifyPubAck(b('{"error":{"code":400,"err_code":10054,"description":"message size exceeds maximum allowed"}}'), FERRY)).toEqual({
      kind: 'error',
      reason: 'JetStream error 400/10054: message size exceeds maximum allowed',
      permanent: true,
    })
    expect(classifyPubAck(b('{"error":{"code":503,"err_code":10077,"description":"store failed"}}'), FERRY)).toMatchObject({ kind: 'error', permanent: false })
    expect(classifyPubAck(b('hello from someone else'), FERRY)).toMatchObject({ kind: 'error', permanent: false })
  })

  it('puback - a PubAck naming another stream, and JetStream refusing another stream, are retried failures', () => {
    expect(classifyPubAck(b('{"stream":"EVIL", "seq":1}'), FERRY)).toMatchObject({ kind: 'error', permanent: false, wrongStream: true })
    expect(classifyPubAck(b('{"stream":"FERRY2", "seq":1}'), FERRY)).toMatchObject({ kind: 'error', permanent: false, wrongStream: true })
    expect(classifyPubAck(b('{"stream":"FERRYX","seq":1}'), FERRY)).toMatchObject({ kind: 'error', wrongStream: true })
    expect(classifyPubAck(b('{"stream":"FERRY"}'), FERRY)).toMatchObject({ kind: 'stored' })
    expect(classifyPubAck(b('{"stream": "FERRY", "seq":1}'), FERRY)).toMatchObject({ kind: 'stored' })
    expect(classifyPubAck(b('{"stream":"F\\u0045RRY", "seq":1}'), FERRY)).toMatchObject({ kind: 'stored' })
    expect(classifyPubAck(b('{"stream":7, "seq":1}'), FERRY)).toMatchObject({ kind: 'error', wrongStream: true })
    expect(classifyPubAck(b('{"error":{"code":400,"err_code":10060,"description":"expected stream does not match"}}'), FERRY)).toMatchObject({
      kind: 'error',
      permanent: false,
      wrongStream: true,
    })
  })
})
