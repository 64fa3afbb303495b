// Pure parts of the downlink: the RPC response topic matched against a whole client id.
import { describe, expect, it } from 'vitest'
import { responseCorrelation } from '../../src/downlink/index.js'

describe('downlink', () => {
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
})
