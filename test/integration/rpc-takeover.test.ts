// RPC and the cross-gateway takeover (issue 15): while a device moves from gateway B to gateway A,
// both subscribe `<prefix>.rpc.<device>.>` for a moment, and a request sent then reaches both. B
// delivered it to the device's stale session; when the registry tells B the device is now on A
// (Devices 'offline', reason 'takeover', `takenOverBy`), B must not answer `503 device offline` at
// once: that reply would beat A's `200 OK` (the requester takes the first reply). B withdraws the
// delivery and answers only at the request's timeout, naming the gateway that took the device.
// A same-gateway takeover or a plain disconnect still answers `503 device offline` at once.
// B is Ferry's Rpc on a real nats-server with a stand-in for its device registry (an EventEmitter
// with the Devices methods Rpc uses); A is a plain NATS responder on the same subject.
import { EventEmitter } from 'node:events'
import { connect, headers } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { PayloadPolicy } from '../../src/codec/index.js'
import { Rpc } from '../../src/downlink/index.js'
import type { DeliveryResult, Devices } from '../../src/ingress/index.js'
import { silentLogger } from '../../src/logger.js'
import { createMetrics } from '../../src/metrics/index.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { rpcStatus } from '../helpers/rpc.js'

const PREFIX = 'tko'
/** B's --rpc-timeout-ms: well after A's answer. */
const TIMEOUT_MS = 4000

/** The Devices of gateway B: the ids online here; deliveries never acknowledged (a stale session); `delivered` counts them. */
function devicesOfB(): { devices: Devices; online: Set<string>; delivered: () => number; leave: (id: string, reason: string, takenOverBy?: string) => void } {
  const online = new Set<string>()
  let delivered = 0
  const info = (clientId: string, takenOverBy?: string): object => ({ clientId, address: '127.0.0.1:1', connectedAt: Date.now(), clean: true, messagesIn: 0, messagesOut: 0, ...(takenOverBy ? { takenOverBy } : {}) })
  const emitter = new EventEmitter()
  const devices = Object.assign(emitter, {
    list: () => [...online].map((id) => info(id)),
    isOnline: (id: string) => online.has(id),
    subscriptions: (id: string) => [`devices/${id}/rpc/request/+/json`],
    deliver: (_id: string, _topic: string, _payload: Buffer, _timeoutMs: number, signal?: AbortSignal): Promise<DeliveryResult> => {
      delivered++
      return new Promise((resolve) => signal?.addEventListener('abort', () => resolve('cancelled')))
    },
  }) as unknown as Devices
  return {
    devices,
    online,
    delivered: () => delivered,
    leave: (id, reason, takenOverBy) => {
      online.delete(id)
      emitter.emit('offline', info(id, takenOverBy), reason)
    },
  }
}

async function until(cond: () => boolean, ms = 15_000): Promise<void> {
  const end = performance.now() + ms
  while (!cond()) {
    if (performance.now() > end) throw new Error('condition not met in time')
    await new Promise((r) => setTimeout(r, 10))
  }
}

describe('rpc takeover', () => {
  let nats: NatsServer
  let ncB: NatsConnection
  let requester: NatsConnection
  let ncA: NatsConnection

  beforeAll(async () => {
    nats = await startNats()
    ncB = await connect({ servers: nats.url })
    ncA = await connect({ servers: nats.url })
    requester = await connect({ servers: nats.url })
  })
  afterAll(async () => {
    await Promise.all([ncB, ncA, requester].map((nc) => nc?.close()))
    await nats?.[Symbol.asyncDispose]()
  })

  const gatewayB = (): ReturnType<typeof devicesOfB> & { rpc: Rpc } => {
    const b = devicesOfB()
    const rpc = new Rpc({ subjectPrefix: PREFIX, timeoutMs: TIMEOUT_MS, maxPending: 16, devices: b.devices, payloads: new PayloadPolicy(false, []), logger: silentLogger, metrics: createMetrics() })
    rpc.attach(ncB)
    return { ...b, rpc }
  }
  const comeOnline = async (b: ReturnType<typeof devicesOfB>, id: string): Promise<void> => {
    b.online.add(id)
    ;(b.devices as unknown as EventEmitter).emit('online', { clientId: id, address: '127.0.0.1:1', connectedAt: Date.now(), clean: true, messagesIn: 0, messagesOut: 0 })
    await ncB.flush()
  }

  it('rpc takeover - a request that reached both gateways gets the new holder\'s 200, not the old one\'s 503', async () => {
    const b = gatewayB()
    try {
      await comeOnline(b, 'mover')
      // A, now holding the device, answers after the device's round trip.
      const answerA = ncA.subscribe(`${PREFIX}.rpc.mover.>`, {
        callback: (_err, m) => {
          setTimeout(() => {
            const h = headers()
            h.set('Ferry-Status', '200 OK')
            m.respond(new Uint8Array(0), { headers: h })
          }, 500)
        },
      })
      await ncA.flush()
      try {
        const asked = rpcStatus(requester, `${PREFIX}.rpc.mover.get`, '{}', {}, TIMEOUT_MS + 2000)
        await until(() => b.delivered() === 1)
        // The registry on B sees the device written by gw-a: B closes its stale session.
        b.leave('mover', 'takeover', 'gw-a')
        expect(await asked).toBe('200 OK')
      } finally {
        answerA.unsubscribe()
      }
    } finally {
      b.rpc.close()
    }
  })

  it('rpc takeover - a request that reached only the old gateway is answered at its timeout, naming the new holder', async () => {
    const b = gatewayB()
    try {
      await comeOnline(b, 'mover2')
      const asked = rpcStatus(requester, `${PREFIX}.rpc.mover2.get`, '{}', {}, TIMEOUT_MS + 2000)
      await until(() => b.delivered() === 1)
      b.leave('mover2', 'takeover', 'gw-a')
      expect(await asked).toBe('503 device moved to gateway gw-a')
    } finally {
      b.rpc.close()
    }
  })

  it('rpc takeover - a same-gateway takeover or a disconnect still answers 503 device offline at once', async () => {
    const b = gatewayB()
    try {
      for (const [id, reason] of [['same-gw', 'takeover'], ['gone', 'connection_lost']] as const) {
        await comeOnline(b, id)
        const before = b.delivered()
        const asked = rpcStatus(requester, `${PREFIX}.rpc.${id}.get`, '{}', {}, TIMEOUT_MS + 2000)
        await until(() => b.delivered() === before + 1)
        const t0 = performance.now()
        b.leave(id, reason)
        expect(await asked).toBe('503 device offline')
        // At once: not at B's timeout.
        expect(performance.now() - t0).toBeLessThan(TIMEOUT_MS)
      }
    } finally {
      b.rpc.close()
    }
  })
})
