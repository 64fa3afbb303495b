// The request topic template and how device topics are read against it; the MQTT 5 properties of a command (pure functions).
import { describe, expect, it } from 'vitest'
import { headers } from '@nats-io/transport-node'
import { encodeUplinkHeadersWithProperties } from '../../src/codec/index.js'
import { commandProperties, parseRequestTemplate, parseRequestTopic, replyTopic } from '../../src/downlink/index.js'
import { ConfigError } from '../../src/errors.js'

describe('requests - topic template', () => {
  const t = parseRequestTemplate('requests/{device}/{service}/{method}')

  it('requests - reads 3.1.1 topics with a correlation id level, v5 topics without', () => {
    expect(parseRequestTopic(t, 'requests/dev1/config/get/c1', true)).toEqual({ device: 'dev1', service: 'config', method: 'get', correlationId: 'c1' })
    expect(parseRequestTopic(t, 'requests/dev1/config/get', false)).toEqual({ device: 'dev1', service: 'config', method: 'get' })
  })

  it('requests - a client id holding "/" is the device', () => {
    expect(parseRequestTopic(t, 'requests/site7/pump/config/get/c1', true)).toMatchObject({ device: 'site7/pump', correlationId: 'c1' })
  })

  it('requests - other topics are not requests; topics under the prefix that do not fit are malformed', () => {
    expect(parseRequestTopic(t, 'devices/dev1/telemetry', true)).toBeUndefined()
    expect(parseRequestTopic(t, 'requests/dev1/config/get', true)).toBe('malformed') // 3.1.1 without correlation id
    expect(parseRequestTopic(t, 'requests/config/get', false)).toBe('malformed')
    expect(parseRequestTopic(t, 'requests/dev1/config/get/', true)).toBe('malformed')
  })

  it('requests - literal levels after {device} must match', () => {
    const t2 = parseRequestTemplate('req/{device}/svc/{service}/{method}')
    expect(parseRequestTopic(t2, 'req/d/svc/config/get', false)).toEqual({ device: 'd', service: 'config', method: 'get' })
    // Not holding the literal: not a request (a device's data under the same prefix stays data).
    expect(parseRequestTopic(t2, 'req/d/xxx/config/get', false)).toBeUndefined()
  })

  it('requests - a template that cannot work is a ConfigError naming the option', () => {
    for (const bad of ['{device}/{service}/{method}', 'requests/{device}/{service}', 'requests/{device}/{service}/{method}/{method}', 'requests/{device}/+/{service}/{method}', 'r/{service}/{device}/{method}']) {
      expect(() => parseRequestTemplate(bad), bad).toThrow(ConfigError)
      expect(() => parseRequestTemplate(bad), bad).toThrow(/--request-topic/)
    }
  })

  it('requests - the 3.1.1 reply topic', () => {
    expect(replyTopic('site7/pump', 'c1', 503)).toBe('devices/site7/pump/requests/reply/c1/503')
  })
})

describe('downlink - MQTT 5 properties of a command', () => {
  it('downlink - remaining TTL as Message Expiry Interval (seconds, rounded up, at least 1), Ferry-Prop-* headers as User Properties', () => {
    const h = headers()
    h.set('Ferry-Prop-trace', 'abc')
    h.append('Ferry-Prop-tag', 'a')
    h.append('Ferry-Prop-tag', 'b')
    h.set('Ferry-TTL', '60s')
    expect(commandProperties(h, 59_001)).toEqual({ messageExpiryInterval: 60, userProperties: { trace: 'abc', tag: ['a', 'b'] } })
    expect(commandProperties(undefined, 1)).toEqual({ messageExpiryInterval: 1 })
    expect(commandProperties(undefined, undefined)).toBeUndefined()
    const plain = headers()
    plain.set('Content-Type', 'application/json')
    expect(commandProperties(plain, undefined)).toBeUndefined()
  })

  it('downlink - a User Property that went up as a header comes back down as it was (the uplink escaping reversed)', () => {
    const props: [string, string][] = [['room temp', ' 21 %\u3000'], ['ünit', 'C']]
    const block = Buffer.from(encodeUplinkHeadersWithProperties('g:1:1', 'FERRY', 'd', 'application/json', { userProperties: props }).headers)
    const h = headers()
    for (const line of block.toString('utf8').split('\r\n').slice(1)) {
      const i = line.indexOf(': ')
      if (i > 0 && line.startsWith('Ferry-Prop-')) h.append(line.slice(0, i), line.slice(i + 2))
    }
    expect(commandProperties(h, undefined)).toEqual({ userProperties: Object.fromEntries(props) })
  })
})
