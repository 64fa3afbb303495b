// The command-line tools on a data directory with known content: a corrupt record and a dead letter.
// ferry log stat|dump, ferry dlq list|show|replay|purge, ferry replay, ferry check; the lock.
import fs from 'node:fs'
import path from 'node:path'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { flipBit, frameOffsets, segmentFiles } from '../helpers/damage.js'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { streamCount, waitForCount } from '../helpers/stream.js'

describe('tools', () => {
  let nats: NatsServer
  const dir = tempDir('ferry-tools-')
  const gwArgs = (): string[] => ['--data-dir', dir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--stream', 'TOOLS', '--subject-prefix', 'tools', '--presence', 'off', '--max-attempts', '1']

  beforeAll(async () => {
    nats = await startNats()
    const nc = await connect({ servers: nats.url })
    await (await jetstreamManager(nc)).streams.add({ name: 'TOOLS', subjects: ['tools.up.>'], max_msg_size: 400 })
    await nc.close()
    // Seq 1-5 small JSON, seq 6 too big for the stream (dead letter), seq 7-8 small.
    const gw = await spawnGateway(gwArgs())
    const c = await connectClient(gw.port, 'tool-dev')
    for (let i = 1; i <= 5; i++) await c.publishAsync('devices/tool-dev/t', JSON.stringify({ i, temp: 20 + i }), { qos: 1 })
    await c.publishAsync('devices/tool-dev/big', Buffer.alloc(1000, 0x41), { qos: 1 })
    for (let i = 7; i <= 8; i++) await c.publishAsync('devices/tool-dev/t', JSON.stringify({ i }), { qos: 1 })
    await endClient(c)
    expect(await waitForCount(nats.url, 7, 20_000, 'TOOLS')).toBe(7)
    for (let i = 0; i < 100 && !fs.existsSync(path.join(dir, 'dead-letter.jsonl')); i++) await new Promise((r) => setTimeout(r, 100))
    await new Promise((r) => setTimeout(r, 1500)) // the checkpoint catches up
    expect(await gw.kill('SIGTERM')).toBe(0)
    // Bit rot in record seq 3 (its body).
    const file = segmentFiles(dir)[0]!
    flipBit(file, frameOffsets(file)[2]! + 40)
  }, 60_000)

  afterAll(async () => {
    await nats?.stop()
  })

  it('log stat - segments, positions, backlog and the corrupt record', async () => {
    const r = await runFerry(['log', 'stat', dir, '--json'])
    expect(r.code).toBe(0)
    const s = JSON.parse(r.stdout) as { records: number; firstSeq: number; lastSeq: number; acked: number; backlog: number; corrupt: number; runningPid: number | null; segments: { sealed: boolean }[] }
    expect(s).toMatchObject({ records: 7, firstSeq: 1, lastSeq: 8, acked: 8, backlog: 0, corrupt: 1, runningPid: null })
    expect(s.segments[0]!.sealed).toBe(true)
    const text = await runFerry(['log', 'stat', dir])
    expect(text.stdout).toContain('1 record(s) skipped as corrupt')
    expect(text.stdout).toContain('seq 1 … 8')
  })

  it('log dump - records with topic, time, size and a decoded payload preview', async () => {
    const r = await runFerry(['log', 'dump', dir, '--from', '4', '--limit', '3', '--json'])
    expect(r.code).toBe(0)
    const recs = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as Record<string, unknown>)
    expect(recs.map((x) => x.seq)).toEqual([4, 5, 6])
    expect(recs[0]).toMatchObject({ clientId: 'tool-dev', topic: 'devices/tool-dev/t', qos: 1, contentType: 'application/cbor', payload: '{"i":4,"temp":24}' })
    expect(recs[2]).toMatchObject({ topic: 'devices/tool-dev/big', contentType: 'application/octet-stream' })
    expect(typeof recs[0]!.time).toBe('string')
    const text = await runFerry(['log', 'dump', dir, '--limit', '2'])
    expect(text.stdout.split('\n')[0]).toMatch(/^1 {2}\d{4}-\d\d-\d\dT.*devices\/tool-dev\/t {2}qos1 {2}application\/cbor {2}\{"i":1,"temp":21\}$/)
  })

  it('dlq list and show - the dead letter with its reason', async () => {
    const list = await runFerry(['dlq', 'list', dir])
    expect(list.code).toBe(0)
    expect(list.stdout).toMatch(/^6 {2}dead .* devices\/tool-dev\/big .*reason: .*(maximum message size|message size exceeds)/im)
    const show = await runFerry(['dlq', 'show', dir, '--seq', '6'])
    expect(JSON.parse(show.stdout)).toMatchObject({ seq: 6, topic: 'devices/tool-dev/big', bytes: expect.any(Number) })
    expect((await runFerry(['dlq', 'show', dir, '--seq', '99'])).code).toBe(1)
  })

  it('lock - tools that change the directory refuse while a gateway runs; stat reads beside it', async () => {
    const gw = await spawnGateway(gwArgs())
    try {
      const purge = await runFerry(['dlq', 'purge', dir])
      expect(purge.code).toBe(2)
      expect(purge.stderr).toContain('needs the gateway stopped')
      expect((await runFerry(['replay', '--data-dir', dir, '--from', '1'])).code).toBe(2)
      const stat = await runFerry(['log', 'stat', dir])
      expect(stat.code).toBe(0)
      expect(stat.stdout).toContain(`in use by a running gateway, pid ${gw.child.pid}`)
    } finally {
      expect(await gw.kill('SIGTERM')).toBe(0)
    }
  })

  it('dlq replay puts the dead letter back in line; purge removes with a count', async () => {
    const replay = await runFerry(['dlq', 'replay', dir])
    expect(replay.stderr).toBe('')
    expect(replay.code).toBe(0)
    expect(replay.stdout).toContain('replayed 1 dead letter(s); 0 left')
    const s = JSON.parse((await runFerry(['log', 'stat', dir, '--json'])).stdout) as { backlog: number; lastSeq: number }
    expect(s.backlog).toBe(1)
    const dump = await runFerry(['log', 'dump', dir, '--from', String(s.lastSeq), '--json'])
    expect(JSON.parse(dump.stdout.trim())).toMatchObject({ topic: 'devices/tool-dev/big' })
    expect((await runFerry(['dlq', 'list', dir])).stderr).toContain('0 dead letter(s)')
    const purge = await runFerry(['dlq', 'purge', dir])
    expect(purge.stdout).toContain('purged 0 dead letter(s)')
  })

  it('replay - moves the acknowledged position back; the gateway forwards that history again with the same ids', async () => {
    const before = await streamCount(nats.url, 'TOOLS')
    const r = await runFerry(['replay', '--data-dir', dir, '--from', '1'])
    expect(r.code).toBe(0)
    expect(r.stdout).toMatch(/forward seq 1 … \d+ again at its next start/)
    const s = JSON.parse((await runFerry(['log', 'stat', dir, '--json'])).stdout) as { acked: number; backlog: number }
    expect(s.acked).toBe(0)
    const gw = await spawnGateway(gwArgs())
    try {
      const port = Number(/"msg":"HTTP listening","address":"[^"]*:(\d+)"/.exec(gw.output())![1])
      let dups = 0
      for (let i = 0; i < 100 && dups < 6; i++) {
        const text = await (await fetch(`http://127.0.0.1:${port}/metrics`)).text()
        dups = Number(/^ferry_forward_duplicates_total (\S+)$/m.exec(text)?.[1] ?? 0)
        await new Promise((x) => setTimeout(x, 100))
      }
      // Seq 1-8 minus the corrupt seq 3 and the too-big seq 6 (dead again): 6 resent, all still in the
      // duplicate window, so JetStream drops them and stores nothing twice.
      expect(dups).toBe(6)
      expect(await streamCount(nats.url, 'TOOLS')).toBe(before)
    } finally {
      await gw.kill('SIGTERM')
    }
  }, 30_000)

  it('check - a valid configuration passes; every problem of a bad one is printed', async () => {
    const good = path.join(dir, 'good.yaml')
    fs.writeFileSync(good, 'mqtt: { listen: 127.0.0.1:1883 }\nlog: { maxBytes: 2GiB }\n')
    const ok = await runFerry(['check', '--config', good])
    expect(ok.code).toBe(0)
    expect(ok.stdout).toContain('configuration is valid')
    const bad = path.join(dir, 'bad.yaml')
    fs.writeFileSync(bad, 'log: { maxBytes: lots, fsync: sometimes }\nauth: { file: /nonexistent/devices.passwd }\n')
    const r = await runFerry(['check', '--config', bad])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("'log.maxBytes'")
    expect(r.stderr).toContain("'log.fsync'")
    const missing = path.join(dir, 'missing.yaml')
    fs.writeFileSync(missing, 'auth: { file: /nonexistent/devices.passwd, aclFile: /nonexistent/devices.acl }\n')
    const m = await runFerry(['check', '--config', missing])
    expect(m.code).toBe(2)
    expect(m.stderr).toContain('2 problem(s)')
    expect(m.stderr).toContain('cannot read credentials file /nonexistent/devices.passwd')
    expect(m.stderr).toContain('cannot read ACL file /nonexistent/devices.acl')
  })
})
