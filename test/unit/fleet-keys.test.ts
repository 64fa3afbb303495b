// Registry keys and the pure rules of the fleet registry: key encoding, liveness, the sweeper, when a session yields.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { DEAD_AFTER_HEARTBEATS, byConnectTime, clientIdOfToken, deviceKey, deviceToken, fleetRegistryBucket, gatewayKey, isLive, mustYield, onConflict, parseDeviceEntry, parseGatewayEntry, sweeper } from '../../src/fleet/index.js'

const me = { gateway: 'gwA', boot: 'b1' }

describe('fleet keys', () => {
  it('fleet keys - the bucket name derives from the subject prefix', () => {
    expect(fleetRegistryBucket('ferry')).toBe('ferry_devices')
    expect(fleetRegistryBucket('acme.site')).toBe('acme_site_devices')
  })

  it('fleet keys - a plain client id is its own token; anything else is "=" + base64url of its UTF-8 bytes', () => {
    expect(deviceKey('dev-1_A')).toBe('devices.dev-1_A')
    expect(deviceKey('a.b')).toBe(`devices.=${Buffer.from('a.b').toString('base64url')}`)
    expect(deviceKey('x'.repeat(200))).toBe(`devices.${'x'.repeat(200)}`)
    expect(deviceToken('x'.repeat(201)).startsWith('=')).toBe(true)
    expect(deviceToken('ü')).toBe('=' + Buffer.from('ü', 'utf8').toString('base64url'))
    expect(deviceToken('')).toBe('=')
    expect(gatewayKey('gwA')).toBe('gateways.gwA')
  })

  it('fleet keys - tokens are valid key tokens and round-trip for any client id; distinct ids never share a token', () => {
    fc.assert(
      fc.property(fc.string({ unit: 'grapheme', maxLength: 40 }).filter((s) => s.length > 0), fc.string({ unit: 'grapheme', maxLength: 40 }).filter((s) => s.length > 0), (x, y) => {
        const t = deviceToken(x)
        expect(t).toMatch(/^[A-Za-z0-9_=-]+$/)
        expect(clientIdOfToken(t)).toBe(x)
        if (x !== y) expect(deviceToken(y)).not.toBe(t)
      }),
    )
    // A token no gateway writes (non-canonical base64url, or a "*") names no device.
    expect(clientIdOfToken('=YWJj=')).toBeUndefined()
    expect(clientIdOfToken('*')).toBeUndefined()
    expect(clientIdOfToken('=' + Buffer.from('plain').toString('base64url'))).toBeUndefined()
  })

  it('fleet keys - values parse, and anything else is refused without throwing', () => {
    const d = { device: 'd', gateway: 'g', boot: 'b', since: 1, address: '1.2.3.4', clean: false }
    expect(parseDeviceEntry(Buffer.from(JSON.stringify(d)))).toEqual(d)
    expect(parseDeviceEntry(Buffer.from('not json'))).toBeUndefined()
    expect(parseDeviceEntry(Buffer.from('[1]'))).toBeUndefined()
    const g = { gateway: 'g', boot: 'b', startedAt: 5, heartbeatMs: 5000, version: '0.1.0' }
    expect(parseGatewayEntry(Buffer.from(JSON.stringify(g)))).toEqual(g)
    expect(parseGatewayEntry(Buffer.from(JSON.stringify({ ...g, heartbeatMs: 0 })))).toBeUndefined()
  })
})

describe('fleet rules', () => {
  it('fleet rules - a gateway is live until its entry has not changed for 6 of its heartbeats (the watcher\'s clock)', () => {
    expect(DEAD_AFTER_HEARTBEATS).toBe(6)
    expect(isLive({ heartbeatMs: 1000, changedAtMs: 0 }, 5999)).toBe(true)
    expect(isLive({ heartbeatMs: 1000, changedAtMs: 0 }, 6000)).toBe(false)
  })

  it('fleet rules - the live gateway with the lowest id sweeps', () => {
    expect(sweeper(['gwB', 'gwA', 'gwC'])).toBe('gwA')
    expect(sweeper([])).toBeUndefined()
  })

  it('fleet rules - a local session yields only to another process\'s write newer than our own write', () => {
    expect(mustYield({ ...me, ourRevision: 10 }, { revision: 11, gateway: 'gwB', boot: 'x' })).toBe(true)
    expect(mustYield({ ...me, ourRevision: 10 }, { revision: 9, gateway: 'gwB', boot: 'x' })).toBe(false)
    expect(mustYield({ ...me, ourRevision: 10 }, { revision: 10, gateway: 'gwB', boot: 'x' })).toBe(false)
    // Our own later write (a reconnect here) never; another process with our id does.
    expect(mustYield({ ...me, ourRevision: 10 }, { revision: 12, gateway: 'gwA', boot: 'b1' })).toBe(false)
    expect(mustYield({ ...me, ourRevision: 10 }, { revision: 12, gateway: 'gwA', boot: 'b2' })).toBe(true)
    // Not written yet: the compare-and-set of our put decides.
    expect(mustYield({ ...me, ourRevision: undefined }, { revision: 12, gateway: 'gwB', boot: 'x' })).toBe(false)
  })

  it('fleet rules - a lost compare-and-set: a write delayed by an outage yields to a live gateway that wrote since the connect; otherwise the key is claimed', () => {
    const b = { revision: 7, gateway: 'gwB', boot: 'x' }
    expect(onConflict(me, b, true, 5, false)).toBe('claim') // our view was not current at the connect: claim (after byConnectTime, below); B sees our newer revision and yields
    expect(onConflict(me, b, true, 5, true)).toBe('yield') // delayed: the device moved while we could not write
    expect(onConflict(me, b, false, 5, true)).toBe('claim') // dead gateway
    expect(onConflict(me, { ...b, revision: 5 }, true, 5, true)).toBe('claim') // nothing newer than what we saw
    expect(onConflict(me, undefined, false, 5, true)).toBe('claim') // deleted
    expect(onConflict(me, { revision: 7, gateway: 'gwA', boot: 'old' }, true, 5, true)).toBe('claim') // a leftover of this id
  })

  it('fleet rules - a device that connected while our view was not current, held by a live other gateway: the later connect holds it', () => {
    expect(byConnectTime(2000, 1000)).toBe('claim') // it came from there to here while we were cut off
    expect(byConnectTime(1000, 2000)).toBe('yield') // it went from here to there: our session is the stale one
    expect(byConnectTime(1000, 1000)).toBe('yield')
  })

  it('fleet rules - flapping A → B → A: every write is newer than the last, so the last gateway written holds it', () => {
    // Revisions in bucket order: A writes 1, B writes 2 (A yields), A writes 3 (B yields).
    expect(mustYield({ gateway: 'gwA', boot: 'a', ourRevision: 1 }, { revision: 2, gateway: 'gwB', boot: 'b' })).toBe(true)
    expect(mustYield({ gateway: 'gwB', boot: 'b', ourRevision: 2 }, { revision: 3, gateway: 'gwA', boot: 'a' })).toBe(true)
    expect(mustYield({ gateway: 'gwA', boot: 'a', ourRevision: 3 }, { revision: 2, gateway: 'gwB', boot: 'b' })).toBe(false)
  })
})
