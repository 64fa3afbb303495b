// Issue 16, ingress side: the topic policy (class and TTL per topic), the per-device fair-share
// accounting (charged per stored record, released by each class log's acknowledged position), the
// per-device rate buckets (held slots, hard-rate refusals, sweep, disconnects) and withExpiry.
import { describe, expect, it } from 'vitest'
import { DeviceRates, DeviceShares, TopicPolicy } from '../../src/ingress/index.js'
import type { MqttClientRef } from '../../src/ingress/index.js'
import { TOPIC_POLICY_MEMO_MAX } from '../../src/ingress/topic-policy.js'
import { withExpiry } from '../../src/ingress/ingress.js'

const client = (id: string, closed = false): MqttClientRef => ({ id, closed }) as unknown as MqttClientRef

describe('topic policy', () => {
  it('topic policy - first matching rule wins, per list; unmatched topics are normal with no TTL', () => {
    const p = new TopicPolicy(
      [
        { filter: 'alarms/#', class: 'high' },
        { filter: '+/+/telemetry', class: 'low' },
        { filter: 'site/a/telemetry', class: 'high' }, // shadowed by the rule before it
      ],
      [
        { filter: 'site/+/telemetry', ttlMs: 3_600_000 },
        { filter: '#', ttlMs: 60_000 },
      ],
    )
    expect(p.classOf('alarms/fire/1')).toBe('high')
    expect(p.classOf('alarms')).toBe('high') // '#' also matches the parent level
    expect(p.classOf('site/a/telemetry')).toBe('low')
    expect(p.classOf('site/a/status')).toBe('normal')
    expect(p.ttlMsOf('site/a/telemetry')).toBe(3_600_000)
    expect(p.ttlMsOf('alarms/fire/1')).toBe(60_000)
    // Asked again (memoised): the same answers.
    expect(p.classOf('site/a/telemetry')).toBe('low')
    expect(p.ttlMsOf('site/a/telemetry')).toBe(3_600_000)
    // A wildcard-first filter does not match a $ topic [MQTT-4.7.2-1].
    expect(p.ttlMsOf('$SYS/x')).toBe(0)
    const none = new TopicPolicy([], [])
    expect(none.classOf('anything')).toBe('normal')
    expect(none.ttlMsOf('anything')).toBe(0)
  })

  it('topic policy - more topics than the memo holds: answers stay right, long topics too', () => {
    const p = new TopicPolicy([{ filter: 'x/+', class: 'low' }], [{ filter: 'x/#', ttlMs: 5 }])
    for (let i = 0; i < TOPIC_POLICY_MEMO_MAX * 2 + 10; i++) expect(p.classOf(`x/${i}`)).toBe('low')
    const long = `x/${'a'.repeat(1000)}`
    expect(p.classOf(long)).toBe('low')
    expect(p.ttlMsOf(`${long}/b`)).toBe(5)
    expect(p.classOf(`${long}/b`)).toBe('normal')
  })

  it('topic policy - router: the class log and TTL of each topic, one route object per (class, TTL), each class log asked once', () => {
    const p = new TopicPolicy([{ filter: 'alarms/#', class: 'high' }], [{ filter: '+/telemetry', ttlMs: 1000 }])
    const asked: string[] = []
    const logs = { high: { acked: 1, pendingAppendBytes: 0, append: () => Promise.resolve(1) }, normal: { acked: 2, pendingAppendBytes: 0, append: () => Promise.resolve(1) } }
    const route = p.router((cls) => {
      asked.push(cls)
      return cls === 'high' ? logs.high : logs.normal
    })
    const a1 = route('alarms/1')
    const a2 = route('alarms/2')
    expect(a1).toBe(a2)
    expect(a1).toEqual({ log: logs.high, className: 'high', ttlMs: 0 })
    const t = route('a/telemetry')
    expect(t).toEqual({ log: logs.normal, className: 'normal', ttlMs: 1000 })
    expect(route('b/telemetry')).toBe(t)
    const plain = route('a/status')
    expect(plain).toEqual({ log: logs.normal, className: 'normal', ttlMs: 0 })
    expect(route('b/status')).toBe(plain)
    expect(asked).toEqual(['high', 'normal'])
  })

  it('topic policy - withExpiry: the earlier of the MQTT 5 expiry and the TTL wins; other properties are kept', () => {
    expect(withExpiry(undefined, 1000)).toEqual({ expiresAtMs: 1000 })
    expect(withExpiry({ expiresAtMs: 500, contentType: 'a' }, 1000)).toEqual({ expiresAtMs: 500, contentType: 'a' })
    expect(withExpiry({ expiresAtMs: 2000, contentType: 'a' }, 1000)).toEqual({ expiresAtMs: 1000, contentType: 'a' })
    expect(withExpiry({ contentType: 'a' }, 1000)).toEqual({ expiresAtMs: 1000, contentType: 'a' })
  })
})

describe('device shares', () => {
  it('device shares - charged per record, released as each class log acknowledges, all classes together', () => {
    const normal = { acked: 0 }
    const high = { acked: 0 }
    const s = new DeviceShares(1000)
    s.track('normal', normal)
    s.track('high', high)
    s.add('normal', 1, 'a', 300)
    s.add('normal', 2, 'b', 100)
    s.add('high', 1, 'a', 400)
    expect(s.bytesOf('a')).toBe(700)
    expect(s.bytesOf('b')).toBe(100)
    expect(s.over('a')).toBe(false)
    s.add('normal', 3, 'a', 300)
    expect(s.bytesOf('a')).toBe(1000)
    expect(s.over('a')).toBe(true) // at the share: refused
    expect(s.over('b')).toBe(false)
    normal.acked = 1
    expect(s.over('a')).toBe(false) // 700 left
    expect(s.bytesOf('a')).toBe(700)
    high.acked = 1
    expect(s.bytesOf('a')).toBe(300)
    normal.acked = 3
    expect(s.bytesOf('a')).toBe(0)
    expect(s.bytesOf('b')).toBe(0)
    // Devices with nothing left are forgotten.
    expect(s.devices).toBe(0)
    expect(s.entries).toBe(0)
    expect(s.totalBytes).toBe(0)
  })

  it('device shares - consecutive records of a device are one run, released when its last record is acknowledged', () => {
    const log = { acked: 0 }
    const s = new DeviceShares(64 * 1024 * 64) // runs up to 64 KiB
    s.track('normal', log)
    for (let seq = 1; seq <= 10; seq++) s.add('normal', seq, 'a', 100)
    s.add('normal', 11, 'b', 100)
    s.add('normal', 12, 'a', 100)
    expect(s.entries).toBe(3)
    log.acked = 9
    expect(s.bytesOf('a')).toBe(1100) // the run 1..10 goes whole (charged up to one run too long)
    log.acked = 10
    expect(s.bytesOf('a')).toBe(100)
    expect(s.bytesOf('b')).toBe(100)
    log.acked = 12
    expect(s.bytesOf('a') + s.bytesOf('b')).toBe(0)
  })

  it('device shares - a run is capped at 1/64 of the share (4 KiB at least), so a flooding device is released gradually', () => {
    const log = { acked: 0 }
    const s = new DeviceShares(1_000_000) // run cap 15,625 bytes
    s.track('normal', log)
    for (let seq = 1; seq <= 1000; seq++) s.add('normal', seq, 'flood', 1000)
    expect(s.bytesOf('flood')).toBe(1_000_000)
    expect(s.entries).toBe(Math.ceil(1000 / 15))
    expect(s.over('flood')).toBe(true)
    log.acked = 30
    expect(s.bytesOf('flood')).toBe(970_000)
    expect(s.over('flood')).toBe(false)
  })

  it('device shares - appends in progress are charged (reserve) until they settle, stored or not', () => {
    const log = { acked: 0 }
    const s = new DeviceShares(1000)
    s.track('normal', log)
    s.reserve('a', 600)
    s.reserve('a', 600)
    expect(s.over('a')).toBe(true)
    s.settle('a', 600, 'normal', 1)
    s.settle('a', 600, 'normal', undefined) // refused by the log: not charged
    expect(s.bytesOf('a')).toBe(600)
    expect(s.over('a')).toBe(false)
    log.acked = 1
    expect(s.bytesOf('a')).toBe(0)
    expect(s.devices).toBe(0)
  })

  it('device shares - records added before their class log is named (seeding) keep their place; a share of 0 never refuses', () => {
    const s = new DeviceShares(100)
    s.add('low', 5, 'a', 80)
    s.add('low', 6, 'a', 80)
    expect(s.over('a')).toBe(true) // not released: no log named yet
    const low = { acked: 5 }
    s.track('low', low)
    expect(s.tracks('low')).toBe(true)
    expect(s.bytesOf('a')).toBe(160) // one run: released when 6 is
    low.acked = 6
    expect(s.bytesOf('a')).toBe(0)
    // The logs may be given to the constructor instead of track().
    const high = { acked: 0 }
    const given = new DeviceShares(100, [['high', high]])
    expect(given.tracks('high')).toBe(true)
    given.add('high', 1, 'b', 50)
    high.acked = 1
    expect(given.bytesOf('b')).toBe(0)
    const off = new DeviceShares(0)
    off.add('normal', 1, 'a', 1e9)
    expect(off.over('a')).toBe(false)
  })

  it('device shares - the queue grows and shrinks: a backlog of 1M interleaved records costs ~16-32 bytes each, all gone once acknowledged', () => {
    const log = { acked: 0 }
    const s = new DeviceShares(1 << 30)
    s.track('normal', log)
    const devices = 1000
    for (let seq = 1; seq <= 1_000_000; seq++) s.add('normal', seq, `device-${seq % devices}`, 150)
    expect(s.entries).toBe(1_000_000) // worst case: no two consecutive records of one device
    expect(s.queueBytes / 1_000_000).toBeLessThanOrEqual(32)
    expect(s.devices).toBe(devices)
    expect(s.bytesOf('device-1')).toBe(150 * 1000)
    log.acked = 999_999
    expect(s.bytesOf('device-0')).toBe(150)
    log.acked = 1_000_000
    s.release()
    expect(s.totalBytes).toBe(0)
    expect(s.queueBytes).toBeLessThan(64 * 1024)
    expect(s.largest()).toBeUndefined()
  })
})

describe('device rates', () => {
  function rates(maxRate: number, hardRate = 0) {
    const clock = { now: 0 }
    const r = new DeviceRates({ maxRate, hardRate, now: () => clock.now, manual: true })
    return { clock, r }
  }

  it('device rates - off: every publish goes at once', () => {
    const { r } = rates(0, 0)
    expect(r.enabled).toBe(false)
    for (let i = 0; i < 100; i++) expect(r.arrive('a', true)).toEqual({ refused: false, releaseAt: 0 })
  })

  it('device rates - a burst up to the rate goes at once, then one slot per 1/rate seconds; other devices are not affected', () => {
    const { clock, r } = rates(10)
    clock.now = 1000
    const at: number[] = []
    for (let i = 0; i < 30; i++) {
      const d = r.arrive('a', false)
      expect(d.refused).toBe(false)
      at.push(d.refused ? -1 : d.releaseAt)
    }
    expect(at.slice(0, 10)).toEqual(Array(10).fill(0))
    // Then 100 ms apart: the 11th slot at +100 ms, the 30th at +2000 ms.
    expect(at[10]).toBeCloseTo(1100)
    expect(at[29]).toBeCloseTo(3000)
    expect(r.arrive('b', false)).toEqual({ refused: false, releaseAt: 0 })
    // After a quiet second, the bucket is full again.
    clock.now = 4000
    for (let i = 0; i < 10; i++) expect(r.arrive('a', false)).toEqual({ refused: false, releaseAt: 0 })
  })

  it('device rates - hard rate: strict publishes past it are refused without taking a slot; others are held to it', () => {
    const { clock, r } = rates(0, 5)
    clock.now = 0
    for (let i = 0; i < 5; i++) expect(r.arrive('v5', true).refused).toBe(false)
    expect(r.arrive('v5', true)).toEqual({ refused: true })
    clock.now = 200 // one slot back
    expect(r.arrive('v5', true).refused).toBe(false)
    expect(r.arrive('v5', true).refused).toBe(true)
    // Not strict (MQTT 3.1.1 QoS 1/2): held to the hard rate instead.
    for (let i = 0; i < 5; i++) expect(r.arrive('v3', false)).toEqual({ refused: false, releaseAt: 0 })
    const d = r.arrive('v3', false)
    expect(d).toEqual({ refused: false, releaseAt: 400 })
  })

  it('device rates - held releases run in order at their time; a gone client is released at once; close releases all', () => {
    const { clock, r } = rates(10)
    const out: string[] = []
    const c = client('a')
    r.hold(c, 100, () => out.push('1'))
    r.hold(c, 200, () => out.push('2'))
    r.hold(client('b'), 0, () => out.push('b-now'))
    expect(out).toEqual(['b-now'])
    expect(r.heldNow).toBe(2)
    clock.now = 150
    r.tick()
    expect(out).toEqual(['b-now', '1'])
    const d = client('d')
    r.hold(d, 1000, () => out.push('d'))
    r.clientGone(d)
    expect(out).toEqual(['b-now', '1', 'd'])
    r.hold(client('gone', true), 5000, () => out.push('closed-now'))
    expect(out.at(-1)).toBe('closed-now')
    r.close()
    expect(out).toEqual(['b-now', '1', 'd', 'closed-now', '2'])
    expect(r.heldNow).toBe(0)
    r.hold(c, 9999, () => out.push('after-close'))
    expect(out.at(-1)).toBe('after-close')
  })

  it('device rates - buckets of idle devices are forgotten by the sweep, without refilling a busy one', () => {
    const { clock, r } = rates(10, 20)
    for (let i = 0; i < 1000; i++) r.arrive(`d${i}`, false)
    for (let i = 0; i < 30; i++) r.arrive('busy', false)
    expect(r.tracked).toBe(1001)
    clock.now = 1000
    r.sweep()
    // d* took one slot a second ago: full again. 'busy' is 2 s in debt: kept.
    expect(r.tracked).toBe(1)
    const next = r.arrive('busy', false)
    expect(next.refused).toBe(false)
    expect(next.refused ? 0 : next.releaseAt).toBeGreaterThan(1000)
  })
})
