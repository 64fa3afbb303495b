// MQTT 5 properties kept in the log (entry version 3) and forwarded by the bundled gateway: expired
// records are dropped and counted while the rest flow in order and the cursor passes them; User
// Properties arrive as Ferry-Prop-<name> headers (odd names escaped, reversibly); a declared
// Content-Type is the message's and its payload is stored as sent; `ferry log dump` shows them.
// The records are written with the ring log API (as a v5 ingress would store them), then the
// gateway is started on the directory and the stream read back from a real nats-server.
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { encodeEntry, unescapeHeaderName, unescapeHeaderValue } from '../../src/codec/index.js'
import type { Entry } from '../../src/codec/index.js'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { openLog, tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import { startProxy } from '../helpers/proxy.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'
import type { StoredMessage } from '../helpers/stream.js'

/** /metrics of `gw` once `pattern` matches it (polled for up to 10 s); the last scrape if it never does. */
async function metricsWhen(gw: GatewayProcess, pattern: RegExp): Promise<string> {
  let text = ''
  for (let i = 0; i < 100; i++) {
    text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
    if (pattern.test(text)) break
    await new Promise((r) => setTimeout(r, 100))
  }
  return text
}

const STREAM = 'PROPS'
const now = Date.now()
const future = now + 10 * 60_000
const base = { clientId: 'dev-5', qos: 1 as const, retain: false }
const CBOR_BYTES = Buffer.from([0xa1, 0x61, 0x74, 0x18, 0x2a]) // {"t":42}, already CBOR from the device

// seq: entry. Seqs 2, 3 and 6 expired before the gateway started.
const ENTRIES: Entry[] = [
  { ...base, topic: 'devices/dev-5/t', packetId: 1, encoding: 3, payload: Buffer.from('plain') },
  { ...base, topic: 'devices/dev-5/t', packetId: 2, encoding: 3, payload: Buffer.from('stale 1'), properties: { expiresAtMs: now - 60_000 } },
  { ...base, topic: 'devices/dev-5/t', packetId: 3, encoding: 3, payload: Buffer.from('stale 2'), properties: { expiresAtMs: now - 1 } },
  {
    ...base,
    topic: 'devices/dev-5/t',
    packetId: 4,
    encoding: 1,
    payload: CBOR_BYTES,
    properties: {
      expiresAtMs: future,
      contentType: 'application/cbor',
      userProperties: [
        ['unit', 'C'],
        ['a b:c%é', ' spaced\r\nvalue '],
        ['unit', 'K'],
        ['lang', 'français'],
      ],
      responseTopic: 'devices/dev-5/replies',
      correlationData: Buffer.from([1, 2, 3]),
    },
  },
  { ...base, topic: 'devices/dev-5/text', packetId: 5, encoding: 3, payload: Buffer.from('hello, text'), properties: { utf8: true } },
  { ...base, topic: 'devices/dev-5/t', packetId: 6, encoding: 3, payload: Buffer.from('stale 3'), properties: { expiresAtMs: now - 5 } },
  { ...base, topic: 'devices/dev-5/csv', packetId: 7, encoding: 3, payload: Buffer.from('1,2,3'), properties: { contentType: 'text/csv' } },
]

describe('properties - MQTT 5 properties forwarded by the gateway', () => {
  let nats: NatsServer
  let gw: GatewayProcess | undefined
  const dir = tempDir('ferry-props-')
  let stored: StoredMessage[] = []
  let metrics = ''

  beforeAll(async () => {
    nats = await startNats()
    const log = await openLog(dir)
    for (const e of ENTRIES) await log.append(encodeEntry(e))
    await log.close()
    gw = await spawnGateway(['--data-dir', dir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--stream', STREAM, '--subject-prefix', STREAM.toLowerCase(), '--presence', 'off'])
    expect(await waitForCount(nats.url, 4, 20_000, STREAM)).toBe(4)
    stored = await readStream(nats.url, STREAM)
    // The ack cursor passes the expired records too: the log is fully acknowledged.
    metrics = await metricsWhen(gw, /^ferry_drops_total\{reason="expired"\} 3$/m)
    await new Promise((r) => setTimeout(r, 300)) // the log line of the last expired range (at most once a second, flushed at stop)
    expect(await gw.kill('SIGTERM')).toBe(0)
  }, 60_000)

  afterAll(async () => {
    await gw?.kill('SIGKILL')
    await nats?.stop()
  })

  it('expiry - expired records are not forwarded; the rest flow in order', () => {
    expect(stored.map((m) => m.headers['Nats-Msg-Id']?.split(':')[2])).toEqual(['1', '4', '5', '7'])
    expect(stored.map((m) => Buffer.from(m.data).toString('hex'))).toEqual([Buffer.from('plain'), CBOR_BYTES, Buffer.from('hello, text'), Buffer.from('1,2,3')].map((b) => b.toString('hex')))
  })

  it('expiry - counted in ferry_drops_total{reason="expired"}, logged with coalesced seq ranges, and passed by the cursor', async () => {
    expect(metrics).toMatch(/^ferry_drops_total\{reason="expired"\} 3$/m)
    expect(metrics).toMatch(/^ferry_forward_messages_total 4$/m)
    const lines = gw!.output().split('\n').filter((l) => l.includes('expired before they were forwarded'))
    const logged = lines.map((l) => JSON.parse(l) as { records: number; seqs: string })
    expect(logged.reduce((a, l) => a + l.records, 0)).toBe(3)
    expect(logged.map((l) => l.seqs).join(',')).toBe('2-3,6')
    const stat = await runFerry(['log', 'stat', dir, '--json'])
    expect(JSON.parse(stat.stdout)).toMatchObject({ acked: 7, backlog: 0 })
  })

  it('headers - an entry without properties keeps exactly the headers of before', () => {
    expect(Object.keys(stored[0]!.headers)).toEqual(['Nats-Msg-Id', 'Nats-Expected-Stream', 'Ferry-Client', 'Content-Type'])
    expect(stored[0]!.headers['Content-Type']).toBe('application/octet-stream')
  })

  it('headers - expiry, response topic, correlation data and User Properties upstream (names escaped reversibly)', async () => {
    const h = stored[1]!.headers
    expect(h['Content-Type']).toBe('application/cbor')
    expect(h['Ferry-Expires']).toBe(new Date(future).toISOString())
    expect(h['Ferry-Response-Topic']).toBe('devices/dev-5/replies')
    expect(Buffer.from(h['Ferry-Correlation-Data'] ?? '', 'base64')).toEqual(Buffer.from([1, 2, 3]))
    const props = Object.entries(h)
      .filter(([k]) => k.startsWith('Ferry-Prop-'))
      .map(([k, v]) => [unescapeHeaderName(k.slice('Ferry-Prop-'.length)), unescapeHeaderValue(v)])
    expect(props).toEqual([
      ['unit', 'C'], // readStream keeps the first value of a repeated name
      ['a b:c%é', ' spaced\r\nvalue '],
      ['lang', 'français'],
    ])
    // Every value of a repeated name, in order, as a consumer sees them.
    const { connect } = await import('@nats-io/transport-node')
    const { jetstreamManager } = await import('@nats-io/jetstream')
    const nc = await connect({ servers: nats.url })
    try {
      const m = await (await jetstreamManager(nc)).streams.getMessage(STREAM, { seq: stored[1]!.seq })
      expect(m?.header.values('Ferry-Prop-unit')).toEqual(['C', 'K'])
      expect(m?.header.has('Ferry-Props-Omitted')).toBe(false)
    } finally {
      await nc.close()
    }
  })

  it('content type - declared types go upstream as sent; UTF-8 text is text/plain', () => {
    expect(stored[2]!.headers['Content-Type']).toBe('text/plain; charset=utf-8')
    expect(stored[3]!.headers['Content-Type']).toBe('text/csv')
    expect(Buffer.from(stored[3]!.data).toString()).toBe('1,2,3')
  })

  it('log dump - shows the properties (text and --json)', async () => {
    const r = await runFerry(['log', 'dump', dir, '--from', '4', '--limit', '1', '--json'])
    expect(r.code).toBe(0)
    expect(JSON.parse(r.stdout.trim())).toMatchObject({
      seq: 4,
      properties: {
        expiresAt: new Date(future).toISOString(),
        contentType: 'application/cbor',
        userProperties: [
          ['unit', 'C'],
          ['a b:c%é', ' spaced\r\nvalue '],
          ['unit', 'K'],
          ['lang', 'français'],
        ],
        responseTopic: 'devices/dev-5/replies',
        correlationData: '010203',
      },
    })
    const plain = await runFerry(['log', 'dump', dir, '--limit', '1', '--json'])
    expect(JSON.parse(plain.stdout.trim())).not.toHaveProperty('properties')
    const text = await runFerry(['log', 'dump', dir, '--from', '4', '--limit', '2'])
    const [l4, l5] = text.stdout.split('\n')
    expect(l4).toContain(`{expires ${new Date(future).toISOString()}; content-type application/cbor; user unit=C; user a b:c%é= spaced\\x0d\\x0avalue ; user unit=K; user lang=français; response-topic devices/dev-5/replies; correlation 0x010203}`)
    expect(l5).toMatch(/\{utf8\}$/)
  })
})

describe('properties - records that expire while upstream is down', () => {
  it('expiry - buffered through an outage, records whose expiry passed meanwhile are dropped when forwarding resumes; the rest arrive in order', async () => {
    const nats = await startNats()
    const dir = tempDir('ferry-props-outage-')
    let gw: GatewayProcess | undefined
    try {
      await nats.stop()
      const soon = Date.now() + 1500
      const log = await openLog(dir)
      for (let i = 1; i <= 6; i++) {
        // Odd seqs expire 1.5 s from now; even ones never.
        const properties = i % 2 === 1 ? { expiresAtMs: soon } : { userProperties: [['i', String(i)] as const] }
        await log.append(encodeEntry({ ...base, topic: 'devices/dev-5/t', packetId: i, encoding: 3, payload: Buffer.from(`m${i}`), properties }))
      }
      await log.close()
      gw = await spawnGateway(['--data-dir', dir, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--stream', STREAM, '--subject-prefix', STREAM.toLowerCase(), '--presence', 'off'])
      while (Date.now() <= soon + 100) await new Promise((r) => setTimeout(r, 100))
      await nats.start()
      expect(await waitForCount(nats.url, 3, 20_000, STREAM)).toBe(3)
      const got = await readStream(nats.url, STREAM)
      expect(got.map((m) => Buffer.from(m.data).toString())).toEqual(['m2', 'm4', 'm6'])
      const text = await metricsWhen(gw, /^ferry_drops_total\{reason="expired"\} 3$/m)
      expect(text).toMatch(/^ferry_drops_total\{reason="expired"\} 3$/m)
      expect(await gw.kill('SIGTERM')).toBe(0)
      expect(JSON.parse((await runFerry(['log', 'stat', dir, '--json'])).stdout)).toMatchObject({ acked: 6, backlog: 0 })
    } finally {
      await gw?.kill('SIGKILL')
      await nats.stop()
    }
  }, 60_000)
})

describe('properties - a record that expires between its first send and its resend', () => {
  it('expiry - a send lost with its connection is not sent again once expired: counted, and the others are resent in order', async () => {
    const nats = await startNats()
    const proxy = await startProxy(nats.port)
    const dir = tempDir('ferry-props-resend-')
    let gw: GatewayProcess | undefined
    try {
      const expiresAtMs = Date.now() + 8000
      const log = await openLog(dir)
      await log.append(encodeEntry({ ...base, topic: 'devices/dev-5/t', packetId: 1, encoding: 3, payload: Buffer.from('r1') }))
      await log.append(encodeEntry({ ...base, topic: 'devices/dev-5/t', packetId: 2, encoding: 3, payload: Buffer.from('r2'), properties: { expiresAtMs } }))
      await log.append(encodeEntry({ ...base, topic: 'devices/dev-5/t', packetId: 3, encoding: 3, payload: Buffer.from('r3') }))
      await log.close()
      // Every chunk waits up to 1 s in the proxy, so the first publishes are still queued there when
      // the connection is cut: the server never sees them. The proxy then holds every new connection
      // until record 2 has expired.
      proxy.setLatency(1000)
      let sent = ''
      const cut = proxy.cutWhen((chunk) => {
        sent = chunk.toString('latin1')
        return sent.includes('Nats-Msg-Id: ')
      })
      gw = await spawnGateway(['--data-dir', dir, '--nats-url', proxy.url, '--gateway-id', 'gw-r', '--mqtt-listen', '127.0.0.1:0', '--stream', STREAM, '--subject-prefix', STREAM.toLowerCase(), '--presence', 'off'])
      expect(await cut).toBeGreaterThanOrEqual(1) // the forwarder's connection (and the downlink's)
      proxy.blackhole()
      expect(sent).toMatch(/Nats-Msg-Id: gw-r:\d+:2\r\n/) // record 2 went out once before it expired
      expect(Date.now()).toBeLessThan(expiresAtMs)
      while (Date.now() <= expiresAtMs + 100) await new Promise((r) => setTimeout(r, 100))
      proxy.setLatency(0)
      proxy.heal()
      expect(await waitForCount(nats.url, 2, 30_000, STREAM)).toBe(2)
      const got = await readStream(nats.url, STREAM)
      expect(got.map((m) => Buffer.from(m.data).toString())).toEqual(['r1', 'r3'])
      const text = await metricsWhen(gw, /^ferry_drops_total\{reason="expired"\} 1$/m)
      expect(text).toMatch(/^ferry_drops_total\{reason="expired"\} 1$/m)
      expect(await gw.kill('SIGTERM')).toBe(0)
      expect(JSON.parse((await runFerry(['log', 'stat', dir, '--json'])).stdout)).toMatchObject({ acked: 3, backlog: 0 })
    } finally {
      await gw?.kill('SIGKILL')
      await proxy.close()
      await nats.stop()
    }
  }, 60_000)
})
