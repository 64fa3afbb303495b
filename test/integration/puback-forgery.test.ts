// Forged PubAcks: publishes carry Nats-Expected-Stream, a PubAck naming another stream is a failure, and NATS permissions on
// Ferry's inbox stop a forger naming the right one (README, Security). Nothing is dropped from the backlog unstored.
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { afterAll, afterEach, beforeAll, describe, expect, it } from 'vitest'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { until } from '../helpers/device.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

const gwArgs = (url: string): string[] => ['--data-dir', tempDir('ferry-forgery-'), '--nats-url', url, '--mqtt-listen', '127.0.0.1:0', '--stream', 'PA', '--subject-prefix', 'pa', '--presence', 'off', '--ack-timeout-ms', '1000']

describe('puback forgery', () => {
  let nats: NatsServer
  let gw: GatewayProcess | undefined
  const conns: NatsConnection[] = []

  beforeAll(async () => {
    nats = await startNats(`authorization {
      users = [
        { user: ferry, password: ferry-pw }
        { user: admin, password: admin-pw }
        { user: mallory, password: mallory-pw, permissions: { publish: { deny: ["_FERRY.>"] }, subscribe: { deny: ["_FERRY.>"] } } }
      ]
    }`)
  })
  afterEach(async () => {
    await gw?.kill('SIGKILL')
    gw = undefined
    // Each test starts without streams.
    const jsm = await jetstreamManager(await admin())
    for (const s of ['PA', 'OTHER']) await jsm.streams.delete(s).catch(() => false)
    await Promise.all(conns.splice(0).map((c) => c.close()))
  })
  afterAll(async () => {
    await nats?.[Symbol.asyncDispose]()
  })

  let adminNc: NatsConnection | undefined
  /** One admin connection per test (closed after it). */
  const admin = async (): Promise<NatsConnection> => {
    if (adminNc && !adminNc.isClosed()) return adminNc
    adminNc = await connect({ servers: nats.url, user: 'admin', pass: 'admin-pw' })
    conns.push(adminNc)
    return adminNc
  }
  /** Messages in `stream` (0 when it does not exist), read as the admin user (the helpers connect without credentials). */
  const count = async (stream: string): Promise<number> => {
    const jsm = await jetstreamManager(await admin())
    try {
      return (await jsm.streams.info(stream)).state.messages
    } catch (err) {
      if ((err as Error).message.includes('stream not found')) return 0
      throw err
    }
  }
  const waitForCount = async (stream: string, n: number): Promise<number> => {
    await until(async () => (await count(stream)) >= n, 30_000)
    return count(stream)
  }
  const start = async (): Promise<GatewayProcess> => {
    gw = await spawnGateway([...gwArgs(nats.url), '--nats-user', 'ferry', '--nats-password', 'ferry-pw'])
    return gw
  }
  /** Publishes `n` QoS 1 messages (PUBACKed by Ferry: they are in its log) from a fresh device. */
  const publish = async (g: GatewayProcess, device: string, n: number, from = 1): Promise<void> => {
    const c = await connectClient(g.port, device)
    await publishSeries(c, device, n, 20, from)
    await endClient(c)
  }

  it('puback forgery - another stream capturing the subjects stores nothing (Nats-Expected-Stream), and nothing leaves the backlog', async () => {
    const g = await start()
    await publish(g, 'fa-1', 1)
    expect(await waitForCount('PA', 1)).toBe(1)
    const jsm = await jetstreamManager(await admin())
    await jsm.streams.delete('PA')
    await jsm.streams.add({ name: 'OTHER', subjects: ['pa.up.>'] })
    await publish(g, 'fa-1', 5, 2)
    // JetStream refuses (10060 "expected stream does not match"); Ferry keeps the records, checks its stream and
    // reports why it cannot have it.
    expect(await until(() => g.output().includes('subjects overlap with an existing stream'), 20_000)).toBe(true)
    expect(await count('OTHER')).toBe(0)
    await jsm.streams.delete('OTHER')
    // Ferry creates its stream again and sends every record it kept.
    expect(await waitForCount('PA', 5)).toBe(5)
    expect(g.child.exitCode).toBeNull()
  })

  it('puback forgery - a PubAck naming another stream does not drop records (stream deleted, the forger answering every publish)', async () => {
    const g = await start()
    await publish(g, 'fb-1', 1)
    expect(await waitForCount('PA', 1)).toBe(1)
    const nc = await admin()
    let forged = 0
    // The forger listens on the uplink subjects, so the server sends no "no responders": only it answers.
    nc.subscribe('pa.up.>', {
      callback: (_err, m) => {
        forged++
        if (m.reply) nc.publish(m.reply, `{"stream":"EVIL","seq":${forged}}`)
      },
    })
    await nc.flush()
    await (await jetstreamManager(nc)).streams.delete('PA')
    await publish(g, 'fb-1', 5, 2)
    expect(await until(() => forged >= 2, 20_000)).toBe(true)
    // Refused as proof: Ferry checks its stream, finds it gone, creates it and stores every record there.
    expect(await waitForCount('PA', 5)).toBe(5)
  })

  it('puback forgery - a forger naming the right stream is stopped by denying it the inbox prefix _FERRY.> (README)', async () => {
    const g = await start()
    await publish(g, 'fc-1', 1)
    expect(await waitForCount('PA', 1)).toBe(1)
    const nc = await connect({ servers: nats.url, user: 'mallory', pass: 'mallory-pw' })
    conns.push(nc)
    let forged = 0
    nc.subscribe('pa.up.>', {
      callback: (_err, m) => {
        forged++
        if (m.reply) nc.publish(m.reply, `{"stream":"PA","seq":${forged}}`)
      },
    })
    await nc.flush()
    await (await jetstreamManager(await admin())).streams.delete('PA')
    await publish(g, 'fc-1', 5, 2)
    expect(await until(() => forged >= 1, 20_000)).toBe(true)
    // The server drops mallory's replies (permissions); Ferry's PubAck times out, it finds its stream gone and stores them all.
    expect(await waitForCount('PA', 5)).toBe(5)
  })
})
