// A requester chooses the reply subject, and Ferry publishes its answer there with its own NATS
// rights. Before this, one publish on `ferry.rpc.nodev.x` with reply `$JS.API.STREAM.DELETE.FERRY`
// made Ferry delete its own stream (now such a request reaches Ferry only for a device connected to it). Bundled gateway, real nats-server, nats.js.
import path from 'node:path'
import { connect, headers } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import type { JetStreamManager } from '@nats-io/jetstream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { replySubjectProblem } from '../../src/downlink/rpc.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { rawDevice, until } from '../helpers/device.js'
import { NO_RESPONDERS, rpcStatus } from '../helpers/rpc.js'
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
    // Requests reach the gateway only for devices connected to it (one subscription per device).
    const bare = await rawDevice(gw.port, 'rdev', { filters: [] }) // answered 503 not subscribed
    const silent = await rawDevice(gw.port, 'sdev', { filters: ['devices/sdev/rpc/request/+'] }) // delivered, never answered: 504
    try {
      const json = { 'Content-Type': 'application/json' }
      // Both are online here once a request with a payload that is not JSON gets 400 (never delivered).
      for (const id of ['rdev', 'sdev']) expect(await until(async () => (await rpcStatus(nc, `ferry.rpc.${id}.x`, 'not json', json)) === '400 bad request: payload is not JSON')).toBe(true)
      // The two connected events are stored: nothing else should be from here on.
      expect(await until(async () => (await jsm.streams.info('FERRY')).state.messages === 2)).toBe(true)
      const before = (await jsm.streams.info('FERRY')).state.messages
      // Not subscribed (503 at once), a request the device gets (504 later) and a 400: each would publish on the reply.
      const h = headers()
      h.set('Content-Type', 'application/json')
      for (const [subject, data, hdrs] of [['ferry.rpc.rdev.x', '{}', undefined], ['ferry.rpc.sdev.x', '{}', undefined], ['ferry.rpc.sdev.x', 'not json', h]] as const) {
        for (const reply of ['$JS.API.STREAM.DELETE.FERRY', '$JS.API.STREAM.PURGE.FERRY_CMD', 'ferry.up.forged']) nc.publish(subject, data, { reply, ...(hdrs ? { headers: hdrs } : {}) })
      }
      // A device connected nowhere: no gateway sees these at all (the server has no responder).
      nc.publish('ferry.rpc.nodev.x', new Uint8Array(0), { reply: '$JS.API.STREAM.DELETE.FERRY' })
      await nc.flush()
      // An ordinary request after them is answered: the gateway has handled the ones before it.
      expect(await rpcStatus(nc, 'ferry.rpc.rdev.x', new Uint8Array(0), {}, 2000)).toBe('503 device not subscribed to devices/rdev/rpc/request/+')
      expect(await rpcStatus(nc, 'ferry.rpc.nodev.x', new Uint8Array(0), {}, 2000)).toBe(NO_RESPONDERS)
      expect((await jsm.streams.names().next()).filter((n) => !n.startsWith('KV_')).sort()).toEqual(['FERRY', 'FERRY_CMD'])
      expect((await jsm.streams.info('FERRY')).state.messages).toBe(before)
      expect(silent.got).toEqual([])
      const metrics = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
      expect(metrics).toContain('ferry_downlink_rpc_requests_total{result="bad_reply_subject"} 9')
      expect(metrics).toContain('ferry_downlink_rpc_subscriptions 2')
    } finally {
      await bare.end()
      await silent.end()
    }
  }, 20_000)
})
