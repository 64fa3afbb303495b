// The --max-forward-lag slow-down: the PUBACK gate's release rule, the lag clock, and the option's parsing.
import fs from 'node:fs'
import path from 'node:path'
import { describe, expect, it } from 'vitest'
import { loadConfig, parseSeconds } from '../../src/config/index.js'
import { LagClock, PubackGate } from '../../src/ingress/index.js'
import type { MqttClientRef } from '../../src/ingress/index.js'
import { createMetrics } from '../../src/metrics/index.js'
import { tempDir } from '../helpers/log.js'

/** A controllable world: lag, health, forwarded count and the clock. */
function world(maxLagMs = 1000) {
  const s = { lagMs: 0, healthy: true, forwarded: 0, now: 0 }
  const metrics = createMetrics()
  const gate = new PubackGate({
    maxLagMs,
    lagMs: () => s.lagMs,
    healthy: () => s.healthy,
    forwarded: () => s.forwarded,
    metrics,
    now: () => s.now,
    manual: true,
  })
  const released: string[] = []
  const hold = (client: MqttClientRef, name: string, packetId = 1, join = false): void => gate.hold(client, packetId, () => released.push(name), join)
  return { s, gate, released, hold, metrics }
}

const client = (id: string): MqttClientRef => ({ id }) as unknown as MqttClientRef

describe('slowdown', () => {
  it('slowdown - not slowing: a PUBACK goes out at once', () => {
    const { gate, released, hold } = world()
    gate.tick()
    expect(gate.slowing).toBe(false)
    hold(client('a'), 'm1')
    expect(released).toEqual(['m1'])
    expect(gate.held).toBe(0)
  })

  it('slowdown - over the lag with a healthy upstream: PUBACKs are released at half the forwarding rate, in order', () => {
    const { s, gate, released, hold, metrics } = world()
    s.lagMs = 1500
    gate.tick()
    expect(gate.slowing).toBe(true)
    const a = client('a')
    for (let i = 1; i <= 10; i++) hold(a, `m${i}`, i)
    expect(gate.held).toBe(10)
    expect(released).toEqual([])
    s.forwarded += 3 // 1.5 releases: one now, the half carried
    s.now += 20
    gate.tick()
    expect(released).toEqual(['m1'])
    s.forwarded += 1 // 0.5 + 0.5 = 1
    gate.tick()
    expect(released).toEqual(['m1', 'm2'])
    s.forwarded += 8
    gate.tick()
    expect(released).toEqual(['m1', 'm2', 'm3', 'm4', 'm5', 'm6'])
    expect(metrics.ingressPubacksDelayed.get()).toBe(6)
    expect(metrics.ingressPubacksHeld.get()).toBe(4)
    expect(metrics.ingressSlowed.get()).toBe(1)
    // Lag back under the bound: everything held goes, in order.
    s.lagMs = 900
    gate.tick()
    expect(released).toEqual(['m1', 'm2', 'm3', 'm4', 'm5', 'm6', 'm7', 'm8', 'm9', 'm10'])
    expect(gate.held).toBe(0)
    expect(metrics.ingressSlowedSeconds.get()).toBeCloseTo(0.02, 5)
    // Then PUBACKs keep pace with forwarding (one per record acknowledged), not more.
    expect(gate.slowing).toBe(true)
    for (let i = 11; i <= 15; i++) hold(a, `m${i}`, i)
    expect(released.slice(10)).toEqual([])
    s.forwarded += 3
    s.now += 20
    gate.tick()
    expect(released.slice(10)).toEqual(['m11', 'm12', 'm13'])
    // Over the bound again: half the forwarding rate.
    s.lagMs = 1200
    s.forwarded += 2
    gate.tick()
    expect(released.slice(10)).toEqual(['m11', 'm12', 'm13', 'm14'])
    // Under half the bound for PACING_QUIET_MS (1 s): slowing ends, the rest goes.
    s.lagMs = 400
    gate.tick() // releases what is held, starts pacing
    expect(released.slice(10)).toEqual(['m11', 'm12', 'm13', 'm14', 'm15'])
    s.now += 999
    gate.tick()
    expect(gate.slowing).toBe(true)
    s.now += 1
    gate.tick()
    expect(gate.slowing).toBe(false)
    expect(metrics.ingressSlowed.get()).toBe(0)
    hold(a, 'm16', 16)
    expect(released.at(-1)).toBe('m16')
  })

  it('slowdown - pacing goes on while the lag stays over half the bound', () => {
    const { s, gate, released, hold } = world()
    s.lagMs = 1500
    gate.tick()
    s.lagMs = 800
    gate.tick()
    for (let i = 0; i < 100; i++) {
      s.now += 20
      s.forwarded += 5
      gate.tick()
    }
    expect(gate.slowing).toBe(true)
    hold(client('a'), 'm1')
    expect(released).toEqual(['m1']) // one release is carried while nothing is held
    hold(client('a'), 'm2', 2)
    expect(released).toEqual(['m1'])
  })

  it('slowdown - forwarding with nothing held buys no burst later', () => {
    const { s, gate, released, hold } = world()
    s.lagMs = 2000
    gate.tick()
    s.forwarded += 1000
    gate.tick()
    for (let i = 1; i <= 5; i++) hold(client('a'), `m${i}`, i)
    expect(released).toEqual(['m1'])
    expect(gate.held).toBe(4)
  })

  it('slowdown - the upstream turning unhealthy releases everything and holds nothing more', () => {
    const { s, gate, released, hold } = world()
    s.lagMs = 5000
    gate.tick()
    hold(client('a'), 'm1', 1)
    hold(client('b'), 'm2', 1)
    s.healthy = false
    gate.tick()
    expect(released).toEqual(['m1', 'm2'])
    expect(gate.slowing).toBe(false)
    hold(client('a'), 'm3', 2)
    expect(released).toEqual(['m1', 'm2', 'm3'])
  })

  it('slowdown - a client that goes away has its held PUBACKs handed back; the others stay held in order', () => {
    const { s, gate, released, hold } = world()
    s.lagMs = 5000
    gate.tick()
    const a = client('a')
    const b = client('b')
    hold(a, 'a1', 1)
    hold(b, 'b1', 1)
    hold(a, 'a2', 2)
    hold(b, 'b2', 2)
    gate.clientGone(a)
    expect(released).toEqual(['a1', 'a2'])
    expect(gate.held).toBe(2)
    s.forwarded += 2
    gate.tick()
    expect(released).toEqual(['a1', 'a2', 'b1'])
  })

  it('slowdown - a retransmission of a held publish is released together with the original', () => {
    const { s, gate, released, hold } = world()
    s.lagMs = 5000
    gate.tick()
    const a = client('a')
    hold(a, 'orig', 7)
    hold(a, 'other', 8)
    hold(a, 'resend', 7, true)
    expect(gate.held).toBe(2)
    s.forwarded += 2
    gate.tick()
    expect(released).toEqual(['orig', 'resend'])
  })

  it('slowdown - 0 never slows down; close releases what is held', () => {
    const off = world(0)
    off.s.lagMs = 1e9
    off.gate.tick()
    expect(off.gate.slowing).toBe(false)
    const on = world()
    on.s.lagMs = 5000
    on.gate.tick()
    on.hold(client('a'), 'm1')
    on.gate.close()
    expect(on.released).toEqual(['m1'])
    on.gate.tick()
    expect(on.gate.slowing).toBe(false)
  })

  it('slowdown - the lag clock dates the oldest unacknowledged record between the samples around it', () => {
    const s = { last: 100, acked: 100, now: 0 }
    const clock = new LagClock(() => s.last, () => s.acked, () => s.now, 8, 90)
    expect(clock.lagMs()).toBe(0)
    // Quiet for 10 s, then 100 records in 100 ms, sampled at their end.
    s.now = 10_000
    clock.sample()
    s.now = 10_100
    s.last = 200
    clock.sample()
    s.now = 11_100
    // Oldest waiting is 151: the 51st of 100 appended between 10.0 s and 10.1 s.
    s.acked = 150
    expect(clock.lagMs()).toBeCloseTo(1049, 5)
    s.acked = 200
    expect(clock.lagMs()).toBe(0)
    // Records older than every sample kept count from the first one (a lower bound).
    for (let i = 0; i < 20; i++) {
      s.now += 100
      s.last += 10
      clock.sample()
    }
    s.acked = 100
    const lag = clock.lagMs()
    expect(lag).toBeGreaterThan(0)
    expect(lag).toBeLessThanOrEqual(s.now - 10_100)
  })

  it('slowdown - --max-forward-lag takes seconds, decimals or a unit, from flag, environment and file', () => {
    expect(parseSeconds('2')).toBe(2000)
    expect(parseSeconds('0.5')).toBe(500)
    expect(parseSeconds('500ms')).toBe(500)
    expect(parseSeconds('2s')).toBe(2000)
    expect(parseSeconds(1.5)).toBe(1500)
    expect(parseSeconds('2x')).toBeUndefined()
    expect(parseSeconds('-1')).toBeUndefined()
    const load = (argv: string[], env: Record<string, string> = {}) => loadConfig({ argv, env, hostname: 'h' })
    expect(load([]).forward.maxLag).toBe(2000)
    expect(load(['--max-forward-lag', '0.3']).forward.maxLag).toBe(300)
    expect(load(['--max-forward-lag', '0']).forward.maxLag).toBe(0)
    expect(load([], { FERRY_MAX_FORWARD_LAG: '750ms' }).forward.maxLag).toBe(750)
    const file = path.join(tempDir(), 'ferry.yaml')
    fs.writeFileSync(file, 'forward:\n  maxLag: 5\n')
    expect(load(['--config', file]).forward.maxLag).toBe(5000)
    expect(() => load(['--max-forward-lag', '2x'])).toThrow(/'forward.maxLag' \(flag --max-forward-lag\) must be a time from 0 to 600 seconds: a number of seconds \(e\.g\. 2 or 0\.5\) or with a unit \(e\.g\. 500ms, 2s\), got "2x"/)
    // A millisecond count mistaken for seconds is out of range, not 33 minutes.
    expect(() => load([], { FERRY_MAX_FORWARD_LAG: '2000' })).toThrow(/environment FERRY_MAX_FORWARD_LAG/)
  })
})
