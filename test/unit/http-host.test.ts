// The HTTP endpoint's Host check (DNS rebinding): which Host header values name this endpoint.
import { describe, expect, it } from 'vitest'
import { hostAllowed, hostName } from '../../src/metrics/http.js'

describe('http host', () => {
  it('http host - names: port and IPv6 brackets stripped, lower case', () => {
    expect(hostName('LocalHost:9464')).toBe('localhost')
    expect(hostName('[::1]:9464')).toBe('::1')
    expect(hostName('::1')).toBe('::1')
    expect(hostName('10.0.0.5')).toBe('10.0.0.5')
    expect(hostName(undefined)).toBe('')
  })

  it('http host - localhost, IP addresses, the bind host and the allow-list pass; other names do not', () => {
    expect(hostAllowed('localhost:9464', '127.0.0.1', [])).toBe(true)
    expect(hostAllowed('127.0.0.1:9464', '127.0.0.1', [])).toBe(true)
    expect(hostAllowed('[::1]:9464', '127.0.0.1', [])).toBe(true)
    expect(hostAllowed('192.168.1.20:9464', '0.0.0.0', [])).toBe(true)
    expect(hostAllowed(undefined, '127.0.0.1', [])).toBe(true) // HTTP/1.0: browsers always send Host
    expect(hostAllowed('gw7.example:9464', 'gw7.example', [])).toBe(true)
    expect(hostAllowed('Metrics.Site:9464', '0.0.0.0', ['metrics.site'])).toBe(true)
    expect(hostAllowed('rebind.attacker.example:9464', '127.0.0.1', ['metrics.site'])).toBe(false)
    expect(hostAllowed('localhost.attacker.example', '127.0.0.1', [])).toBe(false)
    expect(hostAllowed('', '127.0.0.1', [])).toBe(false)
  })
})
