// --uplink-headers compact against a real JetStream: what is stored, and that a consumer reads the
// same client ids and content types from it as from full messages; records resent after a restart
// that switched the form keep their message ids (JetStream's dedup drops the copies).
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { CONTENT_TYPE_CBOR, decodeCbor, subjectToTopic, uplinkClientId, uplinkContentType } from '../../src/codec/index.js'
import type { Gateway } from '../../src/gateway.js'
import { startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, streamCount, waitForCount } from '../helpers/stream.js'

let nats: NatsServer
let gw: Gateway | undefined

beforeAll(async () => {
  // Unauthenticated connections (the gateway of the first test, the stream helpers) are the admin;
  // `deaf` may not subscribe to Ferry's inbox, so it never receives a PubAck.
  nats = await startNats(`no_auth_user: admin
authorization {
  users = [
    { user: admin, password: admin-pw }
    { user: deaf, password: deaf-pw, permissions: { subscribe: { deny: ["_FERRY.>"] } } }
  ]
}`)
})
afterAll(async () => {
  await gw?.close()
  await nats?.[Symbol.asyncDispose]()
})

describe('uplink headers', () => {
  it('uplink headers - compact stores the message id, and Ferry-Client and Content-Type only where the subject and CBOR do not say them', async () => {
    gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'forward.uplinkHeaders': 'compact' })
    const port = gw.ingress.address.port
    const dev = await connectClient(port, 'dev-1')
    const other = await connectClient(port, 'gerät\r\n%1')
    expect(await publishSeries(dev, 'dev-1', 20)).toHaveLength(20)
    // The client id is not the topic's second level here: the header stays.
    await other.publishAsync('devices/dev-1/telemetry', JSON.stringify({ spoof: true }), { qos: 1 })
    await other.publishAsync('raw-text/x', 'not json', { qos: 1 })
    await Promise.all([endClient(dev), endClient(other)])
    expect(await waitForCount(nats.url, 22)).toBe(22)

    const msgs = await readStream(nats.url)
    const byId = new Set(msgs.map((m) => m.headers['Nats-Msg-Id']))
    expect(byId.size).toBe(22)
    for (const m of msgs) {
      expect(m.headers['Nats-Msg-Id']).toMatch(/^[^:]+:\d+:\d+$/)
      expect(m.headers['Nats-Expected-Stream']).toBeUndefined()
    }
    const first = msgs[0]!
    expect(Object.keys(first.headers)).toEqual(['Nats-Msg-Id'])
    expect(uplinkClientId('ferry', first.subject, first.headers['Ferry-Client'])).toBe('dev-1')
    expect(uplinkContentType(first.headers['Content-Type'])).toBe(CONTENT_TYPE_CBOR)
    expect(decodeCbor(first.data)).toMatchObject({ device: 'dev-1', seq: 1 })

    const spoof = msgs.find((m) => m.headers['Ferry-Client'] !== undefined && subjectToTopic('ferry', m.subject) === 'devices/dev-1/telemetry')!
    expect(uplinkClientId('ferry', spoof.subject, spoof.headers['Ferry-Client'])).toBe('gerät\r\n%1')
    expect(spoof.headers['Content-Type']).toBeUndefined()
    const raw = msgs.find((m) => subjectToTopic('ferry', m.subject) === 'raw-text/x')!
    expect(raw.headers['Content-Type']).toBe('application/octet-stream')
    expect(uplinkClientId('ferry', raw.subject, raw.headers['Ferry-Client'])).toBe('gerät\r\n%1')

    // Presence events: the subject's device token carries the client id.
    const events = await readStream(nats.url, 'FERRY', 'events')
    expect(events.length).toBeGreaterThanOrEqual(2)
    for (const e of events) {
      expect(e.headers['Ferry-Client']).toBeUndefined()
      expect(['dev-1', 'gerät\r\n%1']).toContain(uplinkClientId('ferry', e.subject, undefined))
    }
    await gw.close()
    gw = undefined
  })

  it('uplink headers - records stored under full and resent after a restart under compact keep their ids: JetStream drops the copies', async () => {
    // The first gateway's user may not subscribe to Ferry's inbox: JetStream stores its publishes but
    // no PubAck reaches it, so it stops with every record unacknowledged. The second (same data
    // directory and gateway id, --uplink-headers compact) sends them all again.
    const dir = tempDir()
    const base = { 'log.dataDir': dir, 'nats.url': nats.url, gatewayId: 'gw-switch', presence: false, shutdownTimeoutMs: 1000, 'nats.stream': 'SW', 'nats.subjectPrefix': 'sw' }
    gw = await startGateway({ ...base, 'nats.user': 'deaf', 'nats.password': 'deaf-pw', 'forward.uplinkHeaders': 'full' })
    const c = await connectClient(gw.ingress.address.port, 'sw-1')
    expect(await publishSeries(c, 'sw-1', 5)).toHaveLength(5)
    await endClient(c)
    expect(await waitForCount(nats.url, 5, 30_000, 'SW')).toBe(5)
    expect(gw.metrics.forwarded.get()).toBe(0)
    await gw.close()

    gw = await startGateway({ ...base, 'forward.uplinkHeaders': 'compact' })
    for (let i = 0; i < 200 && gw.metrics.forwarded.get() < 5; i++) await new Promise((r) => setTimeout(r, 50))
    expect(gw.metrics.forwarded.get()).toBe(5)
    expect(gw.metrics.forwardDuplicates.get()).toBe(5)
    const msgs = await readStream(nats.url, 'SW')
    expect(msgs).toHaveLength(5)
    // Stored once each, as the first (full) send wrote them.
    for (const m of msgs) expect(m.headers['Nats-Expected-Stream']).toBe('SW')
    await gw.close()
    gw = undefined
  })

  it('uplink headers - compact without Nats-Expected-Stream: another stream capturing the subjects stores copies, but nothing leaves the log until --stream has it', async () => {
    const base = { 'log.dataDir': tempDir(), 'nats.url': nats.url, presence: false, 'nats.stream': 'CS', 'nats.subjectPrefix': 'cs', 'forward.uplinkHeaders': 'compact' }
    gw = await startGateway(base)
    let c = await connectClient(gw.ingress.address.port, 'cs-1')
    await publishSeries(c, 'cs-1', 1)
    await endClient(c)
    expect(await waitForCount(nats.url, 1, 30_000, 'CS')).toBe(1)
    const nc = await connect({ servers: nats.url })
    try {
      const jsm = await jetstreamManager(nc)
      await jsm.streams.delete('CS')
      await jsm.streams.add({ name: 'OTHER', subjects: ['cs.up.>'] })
      c = await connectClient(gw.ingress.address.port, 'cs-1')
      await publishSeries(c, 'cs-1', 5, 20, 2)
      await endClient(c)
      // The documented risk: the other stream stores them (full: it refuses, error 10060) ...
      const inOther = async (): Promise<number> => (await jsm.streams.info('OTHER')).state.messages
      for (let i = 0; i < 200 && (await inOther()) === 0; i++) await new Promise((r) => setTimeout(r, 50))
      expect(await inOther()).toBeGreaterThan(0)
      // ... but its PubAcks name another stream: nothing is counted as forwarded, nothing leaves the log.
      expect(gw.metrics.forwarded.get()).toBe(1)
      expect(gw.log.acked).toBe(1)
      await jsm.streams.delete('OTHER')
      // Ferry creates its stream again and sends every record it kept.
      expect(await waitForCount(nats.url, 5, 30_000, 'CS')).toBe(5)
      expect(await streamCount(nats.url, 'CS')).toBe(5)
    } finally {
      await nc.close()
    }
    await gw.close()
    gw = undefined
  })
})
