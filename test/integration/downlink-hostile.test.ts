// Hostile input from the cloud side (issue 11, items 1, 2, 3 and 11): every RPC request and every
// command is handled in isolation, through the bundled gateway with a real nats-server and real MQTT
// clients. After each attack a command and an RPC to another device still succeed within 2 s.
import { connect, headers } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import mqtt from 'mqtt'
import type { MqttClient } from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor, encodeCbor } from '../../src/codec/index.js'
import { rawDevice, until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream } from '../helpers/stream.js'
import { NO_RESPONDERS, rpcStatus } from '../helpers/rpc.js'

/** --cmd-ttl-ms of the gateway under test: a Ferry-TTL may shorten it, never extend it. */
const CMD_TTL_MS = 1500

describe('downlink - hostile cloud input', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let nc: NatsConnection
  /** A well-behaved device answering RPC (JSON) and taking commands; the control after every attack. */
  let ok: MqttClient
  const okCommands: string[] = []
  const dataDir = tempDir('ferry-downlink-hostile-')

  const command = async (subject: string, body: string, h?: Record<string, string>): Promise<void> => {
    const hdrs = headers()
    for (const [k, v] of Object.entries(h ?? {})) hdrs.set(k, v)
    await jetstream(nc).publish(subject, body, { headers: hdrs })
  }
  /** The reply's Ferry-Status, or NO_RESPONDERS when no gateway holds the device. */
  const request = (subject: string, body: string | Uint8Array, h?: Record<string, string>): Promise<string | undefined> => rpcStatus(nc, subject, body, h)
  /** request(), asked again while the device is not registered yet (the gateway does that just after its CONNACK). */
  const requestOnline = async (subject: string, body: string | Uint8Array, h?: Record<string, string>): Promise<string | undefined> => {
    let status: string | undefined
    await until(async () => (status = await request(subject, body, h)) !== NO_RESPONDERS, 10_000)
    return status
  }
  const events = async (device: string): Promise<{ event: string; body: Record<string, unknown> }[]> =>
    (await readStream(nats.url, 'FERRY', 'events')).filter((m) => m.subject.startsWith(`ferry.events.${device}.`)).map((m) => ({ event: m.subject.split('.').pop()!, body: decodeCbor(m.data) as Record<string, unknown> }))
  const deadReasons = async (device: string): Promise<string[]> => (await events(device)).filter((e) => e.event === 'command-dead').map((e) => String(e.body.reason))

  /** A command and an RPC to the control device both succeed within 2 s. */
  const stillServing = async (): Promise<void> => {
    const t0 = performance.now()
    const n = okCommands.length
    const tag = `t${Math.round(t0)}`
    await command(`ferry.cmd.ok-dev.ping.${tag}`, '{}')
    expect(await request('ferry.rpc.ok-dev.getConfig', '{}')).toBe('200 OK')
    expect(await until(() => okCommands.length > n && okCommands.includes(`commands/ok-dev/ping/${tag}`), 2000)).toBe(true)
    expect(performance.now() - t0).toBeLessThan(2000)
  }

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', dataDir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--cmd-ack-timeout-ms', '500', '--cmd-max-deliver', '3', '--rpc-timeout-ms', '3000', '--cmd-ttl-ms', String(CMD_TTL_MS)])
    nc = await connect({ servers: nats.url })
    expect(await until(async () => (await jetstreamManager(nc)).streams.info('FERRY_CMD').then(() => true, () => false))).toBe(true)
    ok = mqtt.connect(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'ok-dev', reconnectPeriod: 0 })
    await new Promise((r) => ok.once('connect', r))
    await ok.subscribeAsync(['commands/ok-dev/#', 'devices/ok-dev/rpc/request/+/json'], { qos: 1 })
    ok.on('message', (topic) => {
      if (topic.startsWith('commands/')) return void okCommands.push(topic)
      ok.publish(`devices/ok-dev/rpc/response/${topic.split('/')[4]}`, '{"rate":5}', { qos: 1 })
    })
    expect(await until(async () => (await request('ferry.rpc.ok-dev.getConfig', '{}')) === '200 OK')).toBe(true)
  }, 30_000)

  afterAll(async () => {
    if (ok) await endClient(ok)
    await nc?.close()
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('rpc - an invalid escape in the device token names no device: no responders, and the downlink keeps serving', async () => {
    expect(await request('ferry.rpc.a%.x', '{}')).toBe(NO_RESPONDERS)
    await stillServing()
  })

  it('rpc - params nested deeper than the encoder can go are answered 400, and the downlink keeps serving', async () => {
    const d = await rawDevice(gw.port, 'deep-dev', { filters: ['devices/deep-dev/rpc/request/+'] })
    const depth = 100_000 // 200 kB of JSON
    const status = await requestOnline('ferry.rpc.deep-dev.set', '['.repeat(depth) + ']'.repeat(depth))
    expect(status).toMatch(/^400 bad request: params cannot be encoded for the device \(CBOR\)/)
    expect(d.got).toEqual([])
    await stillServing()
    await d.end()
  })

  it('rpc - a client id with CR/LF is named in a status header that stays valid, and the downlink keeps serving', async () => {
    const d = await rawDevice(gw.port, 'crlf\r\ndev', { filters: [] })
    expect(await requestOnline('ferry.rpc.crlf%0D%0Adev.x', '{}')).toBe('503 device not subscribed to devices/crlf%0D%0Adev/rpc/request/+')
    await stillServing()
    await d.end()
  })

  it('rpc - a 64-bit integer in a CBOR request to a JSON device is answered 400, and the downlink keeps serving', async () => {
    const d = await rawDevice(gw.port, 'json-dev', { filters: ['devices/json-dev/rpc/request/+/json'] })
    const status = await requestOnline('ferry.rpc.json-dev.set', encodeCbor({ big: 2n ** 64n - 1n }), { 'Content-Type': 'application/cbor' })
    expect(status).toMatch(/^400 bad request: params cannot be encoded for the device \(JSON\)/)
    expect(d.got).toEqual([])
    await stillServing()
    await d.end()
  })

  it('rpc - a device token not in canonical form reaches no device (NATS permissions on ferry.rpc.dev1.> hold)', async () => {
    const d = await rawDevice(gw.port, 'dev1', { filters: ['devices/dev1/rpc/request/+'] })
    // dev1 is reachable by its canonical token (a probe it never answers: 504 after 200 ms).
    expect(await requestOnline('ferry.rpc.dev1.probe', '{}', { 'Ferry-Timeout': '200' })).toBe('504 device did not answer')
    for (const s of ['ferry.rpc.%64ev1.factoryReset', 'ferry.rpc.dev%31.factoryReset', 'ferry.rpc.dev%311.factoryReset']) {
      expect(await request(s, '{}')).toBe(NO_RESPONDERS) // only ferry.rpc.dev1.> is subscribed
    }
    await stillServing()
    expect(d.got.map((g) => (decodeCbor(g.bytes) as { method: string }).method)).toEqual(['probe'])
    await d.end()
  })

  it('commands - a subject that cannot be delivered as it is dies at once with the reason; the device gets its next command', async () => {
    const d = await rawDevice(gw.port, 'dev2')
    const bad = ['ferry.cmd.dev2.x%zz', 'ferry.cmd.dev2.re%62oot', 'ferry.cmd.dev2.a.#', 'ferry.cmd.dev2.+', 'ferry.cmd.dev2.a.%.b']
    for (const s of bad) await command(s, '{}')
    await command('ferry.cmd.dev2.reboot', '{"n":1}')
    expect(await until(() => d.got.length >= 1, 2000)).toBe(true)
    expect(d.got.map((g) => g.topic)).toEqual(['commands/dev2/reboot'])
    expect(await until(async () => (await deadReasons('dev2')).length === bad.length)).toBe(true)
    const reasons = await deadReasons('dev2')
    expect(reasons[0]).toMatch(/"x%zz" has a "%" that is not an escape/)
    expect(reasons[1]).toMatch(/"re%62oot" is not in canonical form/)
    expect(reasons[2]).toMatch(/wildcard/)
    expect(reasons[3]).toMatch(/wildcard/)
    expect(reasons[4]).toMatch(/empty topic level/)
    await stillServing()
    await d.end()
  })

  it('commands - a Ferry-TTL that is not a positive duration dies with the reason; a valid one never extends --cmd-ttl-ms', async () => {
    const d0 = await rawDevice(gw.port, 'ttl-dev') // creates its consumer, then leaves
    await d0.end()
    for (const ttl of ['soon', '-1', '0']) await command('ferry.cmd.ttl-dev.bad', '{}', { 'Ferry-TTL': ttl })
    await command('ferry.cmd.ttl-dev.late', '{}', { 'Ferry-TTL': '1h' })
    const queued = Date.now()
    // Let --cmd-ttl-ms run out (time passing is what is tested here, not a synchronisation).
    await new Promise((r) => setTimeout(r, CMD_TTL_MS + 300 - (Date.now() - queued)))
    const d = await rawDevice(gw.port, 'ttl-dev')
    await command('ferry.cmd.ttl-dev.fresh', '{}', { 'Ferry-TTL': '1h' })
    expect(await until(() => d.got.length >= 1, 3000)).toBe(true)
    expect(d.got.map((g) => g.topic)).toEqual(['commands/ttl-dev/fresh'])
    const ev = await events('ttl-dev')
    expect(ev.filter((e) => e.event === 'command-dead').map((e) => String(e.body.reason))).toEqual(['soon', '-1', '0'].map((t) => `Ferry-TTL "${t}" is not a positive duration (ms, or a number with ms, s, m, h, d)`))
    expect(ev.find((e) => e.event === 'command-expired')?.body).toMatchObject({ subject: 'ferry.cmd.ttl-dev.late', ttlMs: CMD_TTL_MS })
    await stillServing()
    await d.end()
  })

  it('rpc - responses for no pending request are counted, not logged one line each', async () => {
    const d = mqtt.connect(`mqtt://127.0.0.1:${gw.port}`, { clientId: 'chatty', reconnectPeriod: 0 })
    await new Promise((r) => d.once('connect', r))
    const metric = async (): Promise<number> => {
      const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
      return Number(/ferry_downlink_rpc_requests_total\{result="unknown_correlation"\} (\d+)/.exec(text)?.[1] ?? 0)
    }
    const before = await metric()
    for (let i = 0; i < 500; i++) d.publish(`devices/chatty/rpc/response/nobody${i}`, '{}', { qos: 0 })
    await d.publishAsync('devices/chatty/rpc/response/last', '{}', { qos: 1 }) // after the QoS 0 ones on the same connection
    expect(await until(async () => (await metric()) - before === 501)).toBe(true)
    const lines = gw.output().split('\n').filter((l) => l.includes('RPC responses for no pending request'))
    expect(lines.length).toBeLessThanOrEqual(1)
    await endClient(d)
    await stillServing()
  })

  it('readyz - after all the attacks above the downlink check is still ok', async () => {
    const r = (await (await fetch(`http://127.0.0.1:${gw.httpPort}/readyz`)).json()) as { status: string; checks: Record<string, { status: string; detail: string }> }
    expect(r.checks.downlink).toMatchObject({ status: 'ok', detail: expect.stringMatching(/^serving commands and RPC/) })
  })
})

describe('downlink - health', () => {
  it('readyz - a downlink whose RPC subscription the NATS server refuses is a failing named check, with the error', async () => {
    // A NATS user that may not subscribe to the RPC subjects: the server ends the subscription the
    // gateway opens for a device when it connects.
    await using nats = await startNats('authorization { users: [ { user: ferry, password: "pw-5e1d", permissions: { subscribe: { deny: ["ferry.rpc.>"] } } } ] }')
    const gw = await spawnGateway(['--data-dir', tempDir('ferry-downlink-health-'), '--nats-url', nats.url, '--nats-user', 'ferry', '--nats-password', 'pw-5e1d', '--mqtt-listen', '127.0.0.1:0'])
    let d: Awaited<ReturnType<typeof rawDevice>> | undefined
    try {
      d = await rawDevice(gw.port, 'denied-dev', { filters: ['devices/denied-dev/rpc/request/+'] })
      type Ready = { status: string; checks: Record<string, { status: string; detail: string }> }
      let last: { code: number; body: Ready } | undefined
      const failing = await until(async () => {
        const res = await fetch(`http://127.0.0.1:${gw.httpPort}/readyz`)
        last = { code: res.status, body: (await res.json()) as Ready }
        return last.body.checks.downlink?.status === 'failing'
      })
      expect(failing).toBe(true)
      expect(last!.code).toBe(503)
      expect(last!.body.checks.downlink!.detail).toMatch(/RPC subscription has ended.*last error .*[Pp]ermissions [Vv]iolation/)
      expect(last!.body.checks.upstream!.status).toBe('ok') // the forward path is fine: only the downlink is named
    } finally {
      await d?.end()
      await gw.kill('SIGTERM')
    }
  }, 30_000)
})
