// A requester chooses the reply subject, and Ferry publishes its answer there with its own NATS
// rights. Before this, one publish on `ferry.rpc.nodev.x` with reply `$JS.API.STREAM.DELETE.FERRY`
// made Ferry delete its own stream. Bundled gateway, real nats-server, nats.js.
import path from 'node:path'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import type { JetStreamManager } from '@nats-io/jetstream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { replySubjectProblem } from '../../src/downlink/rpc.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { until } from '../helpers/device.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

describe('rpc reply subject', () => {
  let nats: NatsServer
  let gw: GatewayProcess
  let nc: NatsConnection
  let jsm: JetStreamManager

  beforeAll(async () => {
    nats = await startNats()
    gw = await spawnGateway(['--data-dir', path.join(tempDir('ferry-reply-'), 'd'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0'])
    nc = await connect({ servers: nats.url })
    jsm = await jetstreamManager(nc)
    expect(await until(async () => (await jsm.streams.names().next()).includes('FERRY_CMD'), 10_000)).toBe(true)
  }, 30_000)

  afterAll(async () => {
    await nc?.close()
    await gw?.kill('SIGTERM')
    await nats?.stop()
  })

  it('rpc reply subject - system, JetStream API, Ferry inbox and Ferry prefix subjects are refused', () => {
    for (const r of ['$JS.API.STREAM.DELETE.FERRY', '$SYS.REQ.SERVER.PING', '$KV.x.y', '_FERRY.abc.1', 'ferry.up.x', 'ferry.cmd.dev1.reboot']) expect(replySubjectProblem(r, 'ferry')).toBeDefined()
    for (const r of ['_INBOX.abc.1', 'app.replies.1', 'ferryman.x']) expect(replySubjectProblem(r, 'ferry')).toBeUndefined()
  })

  it('rpc reply subject - a request whose reply subject is a JetStream API call gets no answer; the stream stays; RPC still answers', async () => {
    const before = (await jsm.streams.info('FERRY')).state.messages
    // Offline device (503 at once), unknown subject form (400) and a thrown path: each would publish on the reply.
    for (const subject of ['ferry.rpc.nodev.x', 'ferry.rpc.x', 'ferry.rpc.a%.x']) {
      nc.publish(subject, new Uint8Array(0), { reply: '$JS.API.STREAM.DELETE.FERRY' })
      nc.publish(subject, new Uint8Array(0), { reply: '$JS.API.STREAM.PURGE.FERRY_CMD' })
      nc.publish(subject, new Uint8Array(0), { reply: 'ferry.up.forged' })
    }
    await nc.flush()
    // An ordinary request after them is answered: the gateway has handled the ones before it.
    const r = await nc.request('ferry.rpc.nodev.x', new Uint8Array(0), { timeout: 2000 })
    expect(r.headers?.get('Ferry-Status')).toBe('503 device offline')
    expect((await jsm.streams.names().next()).filter((n) => !n.startsWith('KV_')).sort()).toEqual(['FERRY', 'FERRY_CMD'])
    expect((await jsm.streams.info('FERRY')).state.messages).toBe(before)
    const metrics = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
    expect(metrics).toContain('ferry_downlink_rpc_requests_total{result="bad_reply_subject"} 9')
  }, 20_000)
})
