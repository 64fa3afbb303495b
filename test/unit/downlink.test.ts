// Pure parts of the downlink: the RPC response topic matched against a whole client id, and the
// NATS server's clock estimated from a probe and a monotonic clock.
import { describe, expect, it } from 'vitest'
import { commandTarget, responseCorrelation } from '../../src/downlink/index.js'
import { ServerClock } from '../../src/downlink/server-clock.js'

describe('downlink', () => {
  it('commands - a command subject that cannot be delivered as it is names the reason', () => {
    const t = 'commands/{device}/{rest}'
    expect(commandTarget(t, 'dev2', ['config', 'set'], undefined, 0)).toEqual({ topic: 'commands/dev2/config/set', ttlMs: 0 })
    expect(commandTarget(t, 'dev2', ['a%2Eb'], undefined, 0)).toEqual({ topic: 'commands/dev2/a.b', ttlMs: 0 })
    const problem = (rest: string[], ttl?: string, def = 0): string => {
      const r = commandTarget(t, 'dev2', rest, ttl, def)
      return 'problem' in r ? r.problem : `delivered to ${r.topic}`
    }
    expect(problem(['x%zz'])).toMatch(/"x%zz" has a "%" that is not an escape/)
    expect(problem(['re%62oot'])).toMatch(/not in canonical form/)
    expect(problem(['#'])).toMatch(/wildcard/)
    expect(problem(['a', '+'])).toMatch(/wildcard/)
    expect(problem(['a+b'])).toMatch(/wildcard/)
    expect(problem(['a', '%'])).toMatch(/empty topic level/)
    expect(problem(['a%00'])).toMatch(/U\+0000/)
    for (const bad of ['soon', '-1', '0', '0ms', '']) expect(problem(['x'], bad)).toMatch(/Ferry-TTL ".*" is not a positive duration/)
    expect(commandTarget(t, 'dev+', ['x'], undefined, 0)).toEqual({ problem: expect.stringMatching(/wildcard/) })
  })

  it('commands - a valid Ferry-TTL only shortens --cmd-ttl-ms; with none configured any valid TTL applies', () => {
    const ttl = (h: string | undefined, def: number): number | string => {
      const r = commandTarget('c/{device}/{rest}', 'd', ['x'], h, def)
      return 'problem' in r ? r.problem : r.ttlMs
    }
    expect(ttl(undefined, 60_000)).toBe(60_000)
    expect(ttl('10s', 60_000)).toBe(10_000)
    expect(ttl('1h', 60_000)).toBe(60_000)
    expect(ttl('1h', 0)).toBe(3_600_000)
    expect(ttl('250', 0)).toBe(250)
  })

  it('rpc - a response topic is matched against the whole client id, which may hold "/"', () => {
    expect(responseCorrelation('pump-1', 'devices/pump-1/rpc/response/abc')).toBe('abc')
    expect(responseCorrelation('site7/pump', 'devices/site7/pump/rpc/response/abc')).toBe('abc')
    expect(responseCorrelation('a/rpc/response/b', 'devices/a/rpc/response/b/rpc/response/c')).toBe('c')
    expect(responseCorrelation('site 7%', 'devices/site 7%/rpc/response/abc/json')).toBe('abc') // further levels ignored
    // Not this client's response topic: telemetry, another id, a prefix of the id, no correlation id.
    expect(responseCorrelation('site7/pump', 'devices/site7/pump/telemetry')).toBeUndefined()
    expect(responseCorrelation('site7', 'devices/site7/pump/rpc/response/abc')).toBeUndefined()
    expect(responseCorrelation('site7/pump', 'devices/site7/rpc/response/abc')).toBeUndefined()
    expect(responseCorrelation('pump', 'devices/pump/rpc/response/')).toBeUndefined()
    expect(responseCorrelation('pump', 'devices/pump/rpc/response//x')).toBeUndefined()
    expect(responseCorrelation('pump', 'devices/pump/rpc/request/abc')).toBeUndefined()
  })

  it('server clock - the server time is taken at the midpoint of the probe and advances with the monotonic clock', async () => {
    let mono = 1000
    const clock = new ServerClock(
      async () => {
        mono += 40 // a 40 ms round trip
        return '2026-01-01T00:00:10.000123456Z'
      },
      60_000,
      5000,
      () => mono,
    )
    expect(clock.now()).toBeUndefined()
    expect(clock.due).toBe(true)
    await clock.sample()
    expect(clock.now()).toBe(Date.parse('2026-01-01T00:00:10Z') + 20)
    expect(clock.due).toBe(false)
    mono += 59_000
    expect(clock.now()).toBe(Date.parse('2026-01-01T00:00:10Z') + 20 + 59_000)
    mono += 1001
    expect(clock.due).toBe(true)
  })

  it('server clock - a failed probe keeps the last sample, rejects, and is not retried before retryMs', async () => {
    let mono = 0
    let answer: string | Error = '2026-01-01T00:00:00Z'
    const clock = new ServerClock(async () => (answer instanceof Error ? Promise.reject(answer) : answer), 1000, 5000, () => mono)
    await clock.sample()
    mono = 2000
    answer = new Error('no JetStream')
    expect(clock.due).toBe(true)
    await expect(clock.sample()).rejects.toThrow('no JetStream')
    expect(clock.now()).toBe(Date.parse('2026-01-01T00:00:00Z') + 2000)
    expect(clock.due).toBe(false)
    mono = 7001
    expect(clock.due).toBe(true)
    answer = 'not a time'
    await expect(clock.sample()).rejects.toThrow('not a timestamp')
  })

  it('server clock - concurrent samples share one probe', async () => {
    let probes = 0
    const clock = new ServerClock(async () => (probes++, '2026-01-01T00:00:00Z'))
    await Promise.all([clock.sample(), clock.sample(), clock.sample()])
    expect(probes).toBe(1)
  })
})
