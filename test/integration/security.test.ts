// Security: credentials (ferry passwd, scrypt, equal refusals), ACLs (patterns, wildcard identities,
// takeover), SIGHUP reload, secure defaults and the limits in front of aedes, against the bundled
// gateway with a real nats-server and real MQTT clients.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import path from 'node:path'
import mqtt from 'mqtt'
import type { IClientOptions, MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { subjectToTopic } from '../../src/codec/index.js'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { checkCanaries, quantile, startCanary } from '../helpers/canary.js'
import type { Canary } from '../helpers/canary.js'
import { endClient, closedWithin } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream } from '../helpers/stream.js'

/** `ferry passwd FILE DEVICE` with the password on stdin. */
function passwd(file: string, device: string, password: string): Promise<{ code: number | null; stderr: string }> {
  const child = spawn(process.execPath, ['dist/ferry.cjs', 'passwd', file, device], { stdio: ['pipe', 'ignore', 'pipe'] })
  let stderr = ''
  child.stderr.on('data', (d: Buffer) => (stderr += d.toString()))
  child.stdin.end(`${password}\n`)
  return new Promise((resolve) => child.once('exit', (code) => resolve({ code, stderr })))
}

/** Connects; resolves with the client, the CONNACK refusal code, or -2 when the socket closed without a CONNACK. */
function tryConnect(port: number, opts: IClientOptions): Promise<MqttClient | number> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, ...opts })
  return new Promise((resolve, reject) => {
    c.once('connect', () => resolve(c))
    c.once('close', () => resolve(-2)) // (a no-op once settled)
    c.once('error', (err) => {
      c.end(true)
      const code = (err as { code?: number }).code
      if (typeof code === 'number') resolve(code)
      else reject(err)
    })
  })
}

async function connected(port: number, opts: IClientOptions): Promise<MqttClient> {
  const c = await tryConnect(port, opts)
  if (typeof c === 'number') throw new Error(`CONNACK refused with ${c}`)
  return c
}

/** The granted QoS of each filter (128 = refused). */
async function subscribe(c: MqttClient, filters: string[]): Promise<number[]> {
  // mqtt.js rejects when any filter is refused; the SUBACK's return codes are on the error.
  try {
    const granted = await c.subscribeAsync(Object.fromEntries(filters.map((topic) => [topic, { qos: 1 as const }])))
    return granted.map((g) => g.qos)
  } catch (err) {
    const granted = (err as { packet?: { granted?: number[] } }).packet?.granted
    if (!granted) throw err
    return granted
  }
}

function metricsPort(g: GatewayProcess): number {
  return Number(/"msg":"HTTP listening","address":"[^"]*:(\d+)"/.exec(g.output())![1])
}

async function metric(g: GatewayProcess, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${metricsPort(g)}/metrics`)).text()
  let sum = 0
  for (const m of text.matchAll(new RegExp(`^${name.replace(/[{}"]/g, (c) => `\\${c}`)}(?:\\{[^}]*\\})? (\\S+)$`, 'gm'))) sum += Number(m[1])
  return sum
}

async function until(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await cond()) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return cond()
}

const ACL = `# devices publish under their own name and read their own commands
pattern write devices/%u/#
pattern read commands/%u/#
user ops
topic read devices/#
`

describe('credentials and ACL', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let canaries: Canary[] = []
  let rssBefore = 0
  let dir: string
  let authFile: string
  let aclFile: string

  beforeAll(async () => {
    nats = await startNats()
    dir = tempDir('ferry-sec-')
    authFile = path.join(dir, 'devices.passwd')
    aclFile = path.join(dir, 'devices.acl')
    for (const [d, pw] of [['dev-a', 'secret-a'], ['dev-b', 'secret-b'], ['ops', 'secret-ops'], ['+', 'secret-plus']] as const) {
      expect((await passwd(authFile, d, pw)).code).toBe(0)
    }
    fs.writeFileSync(aclFile, ACL)
    gw = await spawnGateway(['--data-dir', path.join(dir, 'data'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--auth-file', authFile, '--acl-file', aclFile])
    rssBefore = rss(gw.child.pid!)
    canaries = [
      await startCanary(gw.port, 'canary-a', 20, { username: 'dev-a', password: 'secret-a', topic: 'devices/dev-a/canary-a' }),
      await startCanary(gw.port, 'canary-b', 20, { username: 'dev-b', password: 'secret-b', topic: 'devices/dev-b/canary-b' }),
    ]
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('passwd - stores salted scrypt hashes, never the password; changing an entry keeps the others', async () => {
    const text = fs.readFileSync(authFile, 'utf8')
    expect(text).toMatch(/^dev-a:\$scrypt\$ln=14,r=8,p=1\$[A-Za-z0-9+/=]+\$[A-Za-z0-9+/=]+$/m)
    expect(text).not.toContain('secret-a')
    expect(fs.statSync(authFile).mode & 0o777).toBe(0o600)
    const copy = path.join(dir, 'copy.passwd')
    fs.copyFileSync(authFile, copy)
    const r = await passwd(copy, 'dev-a', 'other')
    expect(r).toMatchObject({ code: 0 })
    expect(r.stderr).toContain('changed dev-a')
    const after = fs.readFileSync(copy, 'utf8').split('\n')
    const before = text.split('\n')
    expect(after.filter((l, i) => l !== before[i])).toHaveLength(1) // only dev-a's line, new salt
    expect((await passwd(copy, 'bad:name', 'x')).code).toBe(2)
  })

  it('auth - right password connects; wrong password and unknown device get the same refusal in similar time; no credentials are refused', async () => {
    const ok = await connected(gw.port, { clientId: 'a-1', username: 'dev-a', password: 'secret-a' })
    await endClient(ok)
    const times = { wrong: [] as number[], unknown: [] as number[] }
    for (let i = 0; i < 5; i++) {
      for (const kind of ['wrong', 'unknown'] as const) {
        const t0 = performance.now()
        const code = await tryConnect(gw.port, { clientId: `x-${kind}-${i}`, username: kind === 'wrong' ? 'dev-a' : 'nobody', password: 'guess' })
        times[kind].push(performance.now() - t0)
        expect(code).toBe(4) // bad user name or password, for both
      }
    }
    const median = (xs: number[]): number => [...xs].sort((a, b) => a - b)[xs.length >> 1]!
    const ratio = median(times.unknown) / median(times.wrong)
    // Both pay one scrypt hash; an early "unknown device" answer would be many times faster.
    expect(ratio).toBeGreaterThan(0.5)
    expect(ratio).toBeLessThan(2)
    expect(await tryConnect(gw.port, { clientId: 'anon' })).toBe(5) // not authorized
    expect(await metric(gw, 'ferry_mqtt_auth_failures_total')).toBeGreaterThanOrEqual(11)
  })

  it('auth - a refused connection publishes no will', async () => {
    const ops = await connected(gw.port, { clientId: 'ops-will', username: 'ops', password: 'secret-ops' })
    const got: string[] = []
    ops.on('message', (t) => t === 'devices/dev-a/status' && got.push(t)) // (canaries publish under devices/ too)
    expect(await subscribe(ops, ['devices/#'])).toEqual([1])
    const code = await tryConnect(gw.port, { clientId: 'will-1', username: 'dev-a', password: 'wrong', will: { topic: 'devices/dev-a/status', payload: Buffer.from('gone'), qos: 1, retain: false } })
    expect(code).toBe(4)
    await new Promise((r) => setTimeout(r, 300))
    expect(got).toEqual([])
    await endClient(ops)
  })

  it('acl - a device publishes only under its own name; bypass attempts are refused and nothing reaches JetStream', async () => {
    const a = await connected(gw.port, { clientId: 'acl-a', username: 'dev-a', password: 'secret-a' })
    await a.publishAsync('devices/dev-a/telemetry', '{"t":1}', { qos: 1 })
    // Another device's topic: acknowledged and dropped, the client stays (--refused-publish ack, issue 13).
    await a.publishAsync('devices/dev-b/telemetry', '{"forged":true}', { qos: 1 })
    expect(a.connected).toBe(true)
    await endClient(a)
    // Subscriptions beyond its commands get SUBACK 0x80 and leave it connected.
    const s = await connected(gw.port, { clientId: 'acl-s', username: 'dev-a', password: 'secret-a' })
    expect(await subscribe(s, ['commands/dev-a/#', 'commands/dev-b/#', '#', '+/#', '$SYS/#', 'commands/+/#', 'devices/#'])).toEqual([1, 128, 128, 128, 128, 128, 128])
    expect(s.connected).toBe(true)
    await endClient(s)
    // A device named "+" would, by text substitution, own devices/+/#: the pattern does not apply to it.
    const plus = await connected(gw.port, { clientId: 'acl-plus', username: '+', password: 'secret-plus' })
    await plus.publishAsync('devices/dev-b/telemetry', '{"forged":true}', { qos: 1 })
    await endClient(plus)
    const topicsStored = async (): Promise<string[]> => (await readStream(nats.url)).map((m) => subjectToTopic('ferry', m.subject))
    for (let i = 0; i < 100 && !(await topicsStored()).includes('devices/dev-a/telemetry'); i++) await new Promise((r) => setTimeout(r, 100))
    await new Promise((r) => setTimeout(r, 300))
    const topics = await topicsStored()
    expect(topics.filter((t) => t === 'devices/dev-a/telemetry')).toHaveLength(1)
    expect(topics).not.toContain('devices/dev-b/telemetry')
    expect(await metric(gw, 'ferry_mqtt_acl_denials_total')).toBeGreaterThanOrEqual(8)
  })

  it('acl - a client id bound to one identity cannot be taken over by another', async () => {
    const owner = await connected(gw.port, { clientId: 'shared-id', username: 'dev-a', password: 'secret-a' })
    expect(await tryConnect(gw.port, { clientId: 'shared-id', username: 'dev-b', password: 'secret-b' })).toBe(2) // identifier rejected
    expect(owner.connected).toBe(true)
    await owner.publishAsync('devices/dev-a/still-here', '{}', { qos: 1 })
    // The same identity may take over its own client id (a device reconnecting).
    const again = await connected(gw.port, { clientId: 'shared-id', username: 'dev-a', password: 'secret-a' })
    expect(await closedWithin(owner, 3000)).toBe(true)
    await endClient(again)
    await endClient(owner)
  })

  it('auth storm - 300 wrong-password logins queue behind one hasher; an honest device keeps its PUBACK latency and loses nothing', async () => {
    const canary = await connected(gw.port, { clientId: 'canary-storm', username: 'dev-a', password: 'secret-a' })
    const measure = async (ms: number, during?: () => Promise<unknown>): Promise<number[]> => {
      const lat: number[] = []
      const pending: Promise<void>[] = []
      const timer = setInterval(() => {
        const t0 = performance.now()
        pending.push(canary.publishAsync('devices/dev-a/canary', '{"c":1}', { qos: 1 }).then(() => void lat.push(performance.now() - t0)))
      }, 20)
      await Promise.all([new Promise((r) => setTimeout(r, ms)), during?.()])
      clearInterval(timer)
      await Promise.all(pending)
      return lat.sort((a, b) => a - b)
    }
    const p99 = (xs: number[]): number => xs[Math.min(xs.length - 1, Math.floor(xs.length * 0.99))]!
    const quiet = await measure(1500)
    const refusals: (MqttClient | number)[] = []
    const storm = async (): Promise<void> => {
      const all: Promise<void>[] = []
      for (let i = 0; i < 300; i++) {
        all.push(tryConnect(gw.port, { clientId: `storm-${i}`, username: i % 2 ? 'dev-b' : `ghost-${i}`, password: 'nope', connectTimeout: 30_000 }).catch(() => -1).then((r) => void refusals.push(r)))
        if (i % 50 === 49) await new Promise((r) => setTimeout(r, 250)) // within the per-address connection rate
      }
      await Promise.all(all)
    }
    const stormy = await measure(1500, storm)
    console.log(`auth storm: canary PUBACK p99 ${p99(quiet).toFixed(1)} ms quiet, ${p99(stormy).toFixed(1)} ms during 300 failed logins (${stormy.length} publishes)`)
    expect(refusals.every((r) => typeof r === 'number' && r !== 0)).toBe(true)
    expect(canary.connected).toBe(true)
    // Unbounded hashing on libuv's pool would put the log's fdatasync behind dozens of 25 ms hashes.
    expect(p99(stormy)).toBeLessThan(500)
    await endClient(canary)
  }, 60_000)

  it('canaries - two honest devices published through every attack above: the gateway stayed up, they lost nothing, memory stayed bounded', async () => {
    // Bounded, not flat: 300 scrypt hashes (16 MiB of memory each, on libuv's threads) leave the
    // allocator's arenas grown; nothing here may grow with the size of an attack.
    await expectCanariesUnharmed('credentials/ACL attacks', gw, nats, canaries, rssBefore, 192 * 2 ** 20)
  }, 30_000)

  it('reload - SIGHUP picks up a new device and rules; a broken file keeps the old ones', async () => {
    expect(await tryConnect(gw.port, { clientId: 'c-1', username: 'dev-c', password: 'secret-c' })).toBe(4)
    expect((await passwd(authFile, 'dev-c', 'secret-c')).code).toBe(0)
    const held = await connected(gw.port, { clientId: 'held', username: 'dev-a', password: 'secret-a' })
    gw.child.kill('SIGHUP')
    expect(await until(() => gw.output().includes('credentials and ACL reloaded'), 5000)).toBe(true)
    const c = await connected(gw.port, { clientId: 'c-2', username: 'dev-c', password: 'secret-c' })
    await c.publishAsync('devices/dev-c/telemetry', '{}', { qos: 1 })
    await endClient(c)
    fs.writeFileSync(aclFile, 'pattern writ devices/%u/#\n')
    gw.child.kill('SIGHUP')
    expect(await until(() => gw.output().includes('reload failed; the previous credentials and ACL stay in force'), 5000)).toBe(true)
    expect(gw.output()).toContain('line 1')
    expect(held.connected).toBe(true) // reloads keep connections
    await held.publishAsync('devices/dev-a/after-reload', '{}', { qos: 1 }) // old rules still in force
    await endClient(held)
    fs.writeFileSync(aclFile, ACL)
    expect(gw.child.exitCode).toBe(null)
  })
})

describe('secure defaults', () => {
  it('defaults - a non-loopback listener without authentication refuses to start and names the fix', async () => {
    const r = await runFerry(['run', '--mqtt-listen', '0.0.0.0:0', '--data-dir', tempDir()])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain('--auth-file')
    expect(r.stderr).toContain('--allow-anonymous')
  })

  it('defaults - --allow-anonymous starts it, with a warning at start', async () => {
    const nats = await startNats()
    const gw = await spawnGateway(['--data-dir', tempDir(), '--nats-url', nats.url, '--mqtt-listen', '0.0.0.0:0', '--allow-anonymous'])
    try {
      expect(gw.output()).toContain('--allow-anonymous: devices may connect without credentials')
    } finally {
      await gw.kill('SIGTERM')
      await nats.stop()
    }
  })

  it('defaults - a credentials file with a bad line stops the start (exit 2) naming the file and line', async () => {
    const dir = tempDir()
    const file = path.join(dir, 'bad.passwd')
    fs.writeFileSync(file, '# devices\ndev-a:plaintext\n')
    const r = await runFerry(['run', '--auth-file', file, '--data-dir', path.join(dir, 'data')])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain(`credentials file ${file}: line 2`)
  })
})

describe('limits', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let canaries: Canary[] = []
  let rssBefore = 0

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', tempDir(), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--connect-timeout-ms', '1000', '--max-packet-bytes', '64KiB', '--max-subscriptions', '3', '--max-topic-bytes', '64', '--drain-timeout-ms', '1000'])
    rssBefore = rss(gw.child.pid!)
    canaries = [await startCanary(gw.port, 'limits-c1', 20), await startCanary(gw.port, 'limits-c2', 20)]
  }, 30_000)

  afterAll(async () => {
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  const CONNECT = Buffer.from([0x10, 0x0c, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x00]) // MQTT 3.1.1, clean, keepalive 60, empty client id

  it('limits - a PUBLISH announcing 200 MB, trickled, is refused from its header, before buffering', async () => {
    const rssBefore = rss(gw.child.pid!)
    const s = net.connect(gw.port, '127.0.0.1')
    s.on('error', () => {}) // the gateway may close first
    await new Promise((r) => s.once('connect', r))
    s.write(CONNECT)
    // Fixed header: PUBLISH QoS 0, remaining length 200,000,000 (4-byte varint), then a trickle.
    const len = 200_000_000
    const varint = [len & 0x7f | 0x80, (len >> 7) & 0x7f | 0x80, (len >> 14) & 0x7f | 0x80, (len >> 21) & 0x7f]
    s.write(Buffer.from([0x30, ...varint]))
    const closed = new Promise<boolean>((resolve) => {
      const t = setTimeout(() => resolve(false), 3000)
      s.once('close', () => (clearTimeout(t), resolve(true)))
    })
    const trickle = setInterval(() => s.writable && s.write(Buffer.alloc(1024, 1)), 20)
    expect(await closed).toBe(true)
    clearInterval(trickle)
    expect(await metric(gw, 'ferry_mqtt_limit_refusals_total')).toBeGreaterThanOrEqual(1)
    expect(rss(gw.child.pid!) - rssBefore).toBeLessThan(32 * 1024 * 1024)
  })

  it('limits - 1,000 silent or trickling sockets are closed at the CONNECT timeout; descriptors return to baseline', async () => {
    const fds = (): number => fs.readdirSync(`/proc/${gw.child.pid}/fd`).length
    const baseline = fds()
    const sockets: net.Socket[] = []
    for (let i = 0; i < 1000; i++) {
      const s = net.connect(gw.port, '127.0.0.1')
      s.on('error', () => {})
      sockets.push(s)
      if (i % 100 === 99) await new Promise((r) => setTimeout(r, 60)) // under the per-address rate
    }
    // Half of them trickle one byte of a CONNECT every 300 ms: that does not extend the deadline.
    const trickle = setInterval(() => sockets.slice(0, 500).forEach((s) => s.writable && s.write(Buffer.from([0x10]))), 300)
    const allClosed = await until(() => sockets.every((s) => s.destroyed || s.readableEnded), 8000)
    clearInterval(trickle)
    expect(allClosed).toBe(true)
    expect(await until(() => fds() <= baseline + 5, 5000)).toBe(true)
    // And the gateway still serves.
    const c = await connected(gw.port, { clientId: 'after-idle' })
    await c.publishAsync('devices/after-idle/t', '{}', { qos: 1 })
    await endClient(c)
  }, 30_000)

  it('malformed - a will with QoS 3 (the parser lets it through) does not take the gateway down when the client vanishes', async () => {
    const s = net.connect(gw.port, '127.0.0.1')
    s.on('error', () => {}) // the gateway may close first
    await new Promise((r) => s.once('connect', r))
    const body = Buffer.concat([
      Buffer.from([0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x1e, 0x00, 0x3c]), // MQTT 3.1.1; clean, will, will QoS 3; keepalive 60
      Buffer.from([0x00, 0x02, 0x77, 0x33]), // client id "w3"
      Buffer.from([0x00, 0x03, 0x77, 0x2f, 0x74]), // will topic "w/t"
      Buffer.from([0x00, 0x01, 0x78]), // will payload "x"
    ])
    s.write(Buffer.concat([Buffer.from([0x10, body.length]), body]))
    await new Promise((r) => setTimeout(r, 200))
    s.destroy() // no DISCONNECT: the will is due
    await new Promise((r) => setTimeout(r, 300))
    expect(gw.child.exitCode).toBe(null)
    const c = await connected(gw.port, { clientId: 'after-will3' })
    await c.publishAsync('devices/after-will3/t', '{}', { qos: 1 })
    await endClient(c)
  })

  // Changed by issue 13: keepalive 0 is accepted (MQTT allows it; Paho and embedded stacks default to it).
  it('limits - a keepalive above --max-keepalive gets CONNACK "identifier rejected" (2), as Mosquitto answers; keepalive 0 is accepted', async () => {
    for (const [keepalive, code] of [[0, 0], [3601, 2]] as const) {
      const s = net.connect(gw.port, '127.0.0.1')
      s.on('error', () => {}) // the gateway may close first
      await new Promise((r) => s.once('connect', r))
      const reply = new Promise<Buffer>((resolve) => s.once('data', resolve))
      const connect = Buffer.from(CONNECT)
      connect.writeUInt16BE(keepalive, 10)
      s.write(connect)
      expect([...(await reply)]).toEqual([0x20, 0x02, 0x00, code])
      s.destroy()
    }
  })

  it('limits - --max-subscriptions holds for a persistent session subscribing to many filters at once', async () => {
    const c = await connected(gw.port, { clientId: 'subs-persistent', clean: false })
    const granted = await subscribe(c, Array.from({ length: 10 }, (_, i) => `p/${i}`))
    expect(granted.filter((g) => g !== 128)).toHaveLength(3)
    await endClient(c)
  })

  // Changed by issue 13: a topic Ferry refuses is acknowledged and dropped (--refused-publish ack); it disconnected before.
  it('limits - topic length and subscription count: refused filters get SUBACK 0x80, long topics are acknowledged and dropped', async () => {
    const c = await connected(gw.port, { clientId: 'subs' })
    expect(await subscribe(c, ['a/1', 'a/2', 'a/3', 'a/4', 'x'.repeat(65)])).toEqual([1, 1, 1, 128, 128])
    await c.publishAsync(`t/${'x'.repeat(70)}`, '{}', { qos: 1 })
    expect(c.connected).toBe(true)
    await endClient(c)
  })

  it('limits - a subscriber that stops reading is disconnected after the drain timeout; publishers and the forwarder carry on', async () => {
    const slow = net.connect(gw.port, '127.0.0.1')
    slow.on('error', () => {})
    await new Promise((r) => slow.once('connect', r))
    const topic = Buffer.from('devices/#')
    slow.write(CONNECT)
    slow.write(Buffer.concat([Buffer.from([0x82, 2 + 2 + topic.length + 1, 0x00, 0x01, 0x00, topic.length]), topic, Buffer.from([0x00])]))
    await new Promise((r) => setTimeout(r, 200))
    slow.pause() // never reads again: the kernel buffers fill, then aedes' writes wait for 'drain'
    // The paused socket never sees the gateway's FIN (it is queued behind unread data): watch the gateway instead.
    const closed = until(() => gw.output().includes('"error":"drain timeout"'), 15_000).then((ok) => (ok ? performance.now() : -1))
    const blobs = async (): Promise<number> => (await readStream(nats.url)).filter((m) => m.subject === 'ferry.up.devices.pub-fast.blob').length
    const pub = await connected(gw.port, { clientId: 'pub-fast' })
    const payload = JSON.stringify({ pad: 'x'.repeat(8000) })
    const t0 = performance.now()
    let acked = 0
    for (let i = 0; i < 2000; i += 50) {
      await Promise.all(Array.from({ length: 50 }, () => pub.publishAsync('devices/pub-fast/blob', payload, { qos: 1 }).then(() => { acked++ })))
    }
    const tClosed = await closed
    expect(tClosed).toBeGreaterThan(0)
    slow.destroy()
    expect(acked).toBe(2000)
    for (let i = 0; i < 200 && (await blobs()) < 2000; i++) await new Promise((r) => setTimeout(r, 100))
    expect(await blobs()).toBe(2000)
    console.log(`slow subscriber closed ${((tClosed - t0) / 1000).toFixed(1)} s after publishing began; 2000 x 8 KB acknowledged and forwarded`)
    expect(await metricValue(gw, 'ferry_mqtt_clients')).toBe(1 + canaries.length)
    await endClient(pub)
  }, 40_000)

  it('limits - --max-connections closes sockets beyond the bound at once; --max-inflight-in ends half-open QoS 2 floods', async () => {
    const g = await spawnGateway(['--data-dir', tempDir(), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--max-connections', '5', '--max-inflight-in', '3'])
    try {
      const sockets = await Promise.all(
        Array.from({ length: 8 }, async () => {
          const s = net.connect(g.port, '127.0.0.1')
          s.on('error', () => {})
          await new Promise((r) => s.once('connect', r))
          return s
        }),
      )
      await until(() => sockets.filter((s) => !s.destroyed && !s.readableEnded).length <= 5, 3000)
      await new Promise((r) => setTimeout(r, 200))
      expect(sockets.filter((s) => s.readableEnded || s.destroyed)).toHaveLength(3)
      for (const s of sockets) s.destroy()
      expect(await metric(g, 'ferry_mqtt_limit_refusals_total')).toBe(3)
      // QoS 2 PUBLISH x4 with distinct ids and never a PUBREL: the fourth exceeds the window of 3.
      const q = await connected(g.port, { clientId: 'qos2-flood' })
      const stream = (q as unknown as { stream: net.Socket }).stream
      for (let id = 1; id <= 4; id++) {
        const topic = Buffer.from('devices/q/x')
        stream.write(Buffer.concat([Buffer.from([0x34, 2 + topic.length + 2 + 2, 0, topic.length]), topic, Buffer.from([0, id, 0x7b, 0x7d])]))
      }
      expect(await closedWithin(q, 3000)).toBe(true)
      await endClient(q)
      expect(await metric(g, 'ferry_mqtt_limit_refusals_total')).toBe(4)
    } finally {
      await g.kill('SIGTERM')
    }
  })

  it('limits - new connections beyond the per-address rate are closed at once and counted', async () => {
    const g = await spawnGateway(['--data-dir', tempDir(), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--max-connection-rate-per-address', '5'])
    try {
      const results = await Promise.all(Array.from({ length: 20 }, (_, i) => tryConnect(g.port, { clientId: `burst-${i}` }).catch(() => -1)))
      const ok = results.filter((r) => typeof r !== 'number')
      expect(ok.length).toBeGreaterThanOrEqual(5)
      expect(ok.length).toBeLessThan(20)
      for (const c of ok) await endClient(c)
      expect(await metric(g, 'ferry_mqtt_limit_refusals_total')).toBeGreaterThanOrEqual(20 - ok.length)
    } finally {
      await g.kill('SIGTERM')
    }
  })

  it('canaries - two honest devices published through every attack above: the gateway stayed up, they lost nothing, memory stayed bounded', async () => {
    // Bounded, not flat: 1,000 sockets, 16 MB of payloads to a subscriber that stopped reading.
    await expectCanariesUnharmed('limit attacks', gw, nats, canaries, rssBefore, 160 * 2 ** 20)
  }, 30_000)
})

async function metricValue(g: GatewayProcess, name: string): Promise<number> {
  return metric(g, name)
}

/** Stops the canaries and checks: gateway up, every PUBACKed message stored once, RSS grew less than `maxGrowth`. */
async function expectCanariesUnharmed(what: string, gw: GatewayProcess, nats: NatsServer, canaries: Canary[], rssBefore: number, maxGrowth: number): Promise<void> {
  for (const c of canaries) await c.stop()
  expect(gw.child.exitCode).toBe(null)
  expect(canaries.every((c) => c.disconnects() === 0 && c.acked.size === c.sent())).toBe(true)
  const check = await checkCanaries(nats.url, canaries)
  expect(check.missing).toEqual([])
  expect(check.duplicates).toEqual([])
  const p99 = quantile(canaries.flatMap((c) => [...c.acked.values()]), 0.99)
  console.log(`${what}: canary PUBACK p99 ${p99.toFixed(1)} ms over ${canaries.reduce((a, c) => a + c.acked.size, 0)} publishes; RSS ${(rssBefore / 2 ** 20).toFixed(1)} -> ${(rss(gw.child.pid!) / 2 ** 20).toFixed(1)} MiB`)
  expect(rss(gw.child.pid!) - rssBefore).toBeLessThan(maxGrowth)
}

function rss(pid: number): number {
  const m = /VmRSS:\s+(\d+) kB/.exec(fs.readFileSync(`/proc/${pid}/status`, 'utf8'))
  return Number(m![1]) * 1024
}
