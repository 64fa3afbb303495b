// The name of a device's command consumer: one per device for the whole fleet (cmd_<id>), the same on
// every gateway, readable for plain ids and unique for any id; the older per-gateway name for migration.
import crypto from 'node:crypto'
import { describe, expect, it } from 'vitest'
import { consumerName, legacyConsumerName } from '../../src/downlink/commands.js'

describe('commands - consumer names', () => {
  it('a plain client id (letters, digits, - and _, up to 48) is used as it is', () => {
    expect(consumerName('sensor-1')).toBe('cmd_sensor-1')
    expect(consumerName('a'.repeat(48))).toBe(`cmd_${'a'.repeat(48)}`)
  })

  it('any other id: other characters as _, first 40, then the first 24 hex digits of its sha256', () => {
    const hash = (s: string): string => crypto.createHash('sha256').update(s).digest('hex').slice(0, 24)
    expect(consumerName('site7/pump')).toBe(`cmd_site7_pump_${hash('site7/pump')}`)
    const long = 'b'.repeat(49)
    expect(consumerName(long)).toBe(`cmd_${'b'.repeat(40)}_${hash(long)}`)
    // Ids that differ only in a replaced character still get different names.
    expect(consumerName('a/b')).not.toBe(consumerName('a.b'))
    expect(consumerName('a.b')).toMatch(/^cmd_[A-Za-z0-9_-]+$/)
  })

  it("an older Ferry's per-gateway name is <gatewayId>_<same suffix>", () => {
    expect(legacyConsumerName('gw1', 'sensor-1')).toBe('gw1_sensor-1')
    const hash12 = crypto.createHash('sha256').update('site7/pump').digest('hex').slice(0, 12)
    expect(legacyConsumerName('gw1', 'site7/pump')).toBe(`gw1_site7_pump_${hash12}`)
  })

  it("names are one-to-one: a plain id spelled like another id's hashed name is hashed itself", () => {
    const victim = 'rc.victim'
    const thief = `rc_victim_${crypto.createHash('sha256').update(victim).digest('hex').slice(0, 24)}`
    expect(/^[A-Za-z0-9_-]{1,48}$/.test(thief)).toBe(true)
    expect(consumerName(thief)).not.toBe(consumerName(victim))
    expect(consumerName(thief)).toMatch(/^cmd_rc_victim_[0-9a-f]{24}_[0-9a-f]{24}$/)
  })
})
