// Command TTLs are judged on the NATS server's clock: a gateway whose own clock is 10 minutes fast or
// slow (test/helpers/clock-skew.cjs, preloaded into the bundled gateway) neither expires commands
// early nor delivers them late. nats-server and this test share the real clock.
import path from 'node:path'
import { connect, headers } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor } from '../../src/codec/index.js'
import { rawDevice, until } from '../helpers/device.js'
import type { RawDevice } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream } from '../helpers/stream.js'

const SKEW_PRELOAD = path.resolve('test/helpers/clock-skew.cjs')
const TEN_MINUTES_MS = 600_000

describe('downlink - gateway clock skew', () => {
  let nats: NatsServer
  let nc: NatsConnection

  beforeAll(async () => {
    nats = await startNats()
    nc = await connect({ servers: nats.url })
  }, 30_000)

  afterAll(async () => {
    await nc?.close()
    await nats?.stop()
  })

  /**
   * Runs `body` with the bundled gateway, its wall clock shifted by `skewMs`, then stops it. Each
   * gets its own gateway id: with a fresh data directory, the same id would repeat the first one's
   * Nats-Msg-Ids, and JetStream would drop its events as duplicates.
   */
  const withSkewedGateway = async (skewMs: number, body: (gw: GatewayProcess) => Promise<void>): Promise<void> => {
    const args = ['--data-dir', tempDir('ferry-downlink-clock-'), '--gateway-id', `skew${skewMs}`, '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--cmd-ack-timeout-ms', '500']
    const gw = await spawnGateway(args, 20_000, { NODE_OPTIONS: `--require ${SKEW_PRELOAD}`, TEST_CLOCK_SKEW_MS: String(skewMs) })
    try {
      expect(await until(async () => (await jetstreamManager(nc)).streams.info('FERRY_CMD').then(() => true, () => false))).toBe(true)
      await body(gw)
    } finally {
      await gw.kill('SIGTERM')
    }
  }
  const command = async (subject: string, body: string, ttl?: string): Promise<void> => {
    const h = headers()
    if (ttl) h.set('Ferry-TTL', ttl)
    await jetstream(nc).publish(subject, body, { headers: h })
  }
  const expired = async (id: string): Promise<Record<string, unknown>[]> =>
    (await readStream(nats.url, 'FERRY', 'events')).filter((m) => m.subject === `ferry.events.${id}.command-expired`).map((m) => decodeCbor(m.data) as Record<string, unknown>)
  /** Sends a marker command and resolves with the topics the device received up to and including it. */
  const afterMarker = async (d: RawDevice, id: string): Promise<string[]> => {
    await command(`ferry.cmd.${id}.marker`, '{}')
    expect(await until(() => d.got.some((g) => g.topic === `commands/${id}/marker`))).toBe(true)
    return d.got.map((g) => g.topic)
  }
  // Time must pass in these tests: the TTL is what is under test.
  const waitUntil = (at: number): Promise<void> => new Promise((r) => setTimeout(r, Math.max(0, at - Date.now())))

  it('commands - gateway clock 10 min fast: a 60 s TTL command to an online device is delivered; a 1 s TTL one expires after 2 s, its age measured on the server clock', async () => {
    await withSkewedGateway(+TEN_MINUTES_MS, async (gw) => {
      const id = 'clk-fast'
      const sent = Date.now()
      await command(`ferry.cmd.${id}.short`, '{}', '1s') // waits for the device, which is not there yet
      await waitUntil(sent + 2000)
      const connected = Date.now()
      const d = await rawDevice(gw.port, id)
      expect(await until(async () => (await expired(id)).length === 1)).toBe(true)
      const age = Number((await expired(id))[0]!.ageMs)
      const trueAge = Date.now() - sent
      await command(`ferry.cmd.${id}.long`, '{}', '60s')
      expect(await afterMarker(d, id)).toEqual([`commands/${id}/long`, `commands/${id}/marker`])
      console.log(`gateway +10 min: a 1 s TTL command expired at age ${age} ms (by this host's real clock at most ${trueAge} ms); a 60 s TTL command was delivered`)
      expect(age).toBeGreaterThanOrEqual(connected - sent - 1000)
      expect(age).toBeLessThanOrEqual(trueAge + 1000)
      await d.end()
    })
  }, 30_000)

  it('commands - gateway clock 10 min slow: a 2 s TTL command queued while the device is away is not delivered when it connects after 4 s', async () => {
    await withSkewedGateway(-TEN_MINUTES_MS, async (gw) => {
      const id = 'clk-slow'
      const sent = Date.now()
      await command(`ferry.cmd.${id}.reboot`, '{}', '2s')
      await waitUntil(sent + 4000)
      const connected = Date.now()
      const d = await rawDevice(gw.port, id)
      expect(await afterMarker(d, id)).toEqual([`commands/${id}/marker`])
      expect(await until(async () => (await expired(id)).length === 1)).toBe(true)
      const age = Number((await expired(id))[0]!.ageMs)
      const trueAge = Date.now() - sent
      console.log(`gateway -10 min: a 2 s TTL command expired at age ${age} ms (by this host's real clock at most ${trueAge} ms)`)
      expect(age).toBeGreaterThanOrEqual(connected - sent - 1000)
      expect(age).toBeLessThanOrEqual(trueAge + 1000)
      await d.end()
    })
  }, 30_000)
})
