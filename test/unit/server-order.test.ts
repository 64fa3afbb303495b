// After leaving a NATS server that hung, the next connection tries the others first.
import { describe, expect, it } from 'vitest'
import { hostPort, serversAvoiding } from '../../src/forward/server-order.js'

describe('server order', () => {
  it('server order - host:port of URLs with and without scheme or port', () => {
    expect(hostPort('nats://127.0.0.1:4223')).toBe('127.0.0.1:4223')
    expect(hostPort('127.0.0.1:4223')).toBe('127.0.0.1:4223')
    expect(hostPort('tls://user:pw@js1.example:7422')).toBe('js1.example:7422')
    expect(hostPort('nats://js2')).toBe('js2:4222')
  })

  it('server order - the hung server last, the others in random order; undefined when it is not listed or alone', () => {
    const servers = ['nats://a:1', 'nats://b:2', 'nats://c:3']
    for (const r of [0, 0.5, 0.99]) {
      const o = serversAvoiding(servers, 'b:2', () => r)!
      expect(o.at(-1)).toBe('nats://b:2')
      expect([...o].sort((x, y) => x.localeCompare(y))).toEqual(servers)
    }
    expect(serversAvoiding(servers, 'x:9')).toBeUndefined()
    expect(serversAvoiding(['nats://b:2'], 'b:2')).toBeUndefined()
  })
})
