// Commands and a device that keeps moving between two gateways (one nats-server, one prefix): a
// command handed back because the device left while it was out does not count toward
// --cmd-max-deliver where the device is now; one the device really never acknowledges still dies.
import { jetstream, jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor } from '../../src/codec/index.js'
import { rawDevice, until } from '../helpers/device.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream } from '../helpers/stream.js'

describe('downlink - a device moving between gateways', () => {
  let nats: NatsServer
  let nc: NatsConnection
  const gws: GatewayProcess[] = []

  beforeAll(async () => {
    nats = await startNats()
    nc = await connect({ servers: nats.url })
    for (const id of ['gw-ma', 'gw-mb']) {
      gws.push(await spawnGateway(['--data-dir', tempDir(`ferry-moves-${id}-`), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--gateway-id', id, '--cmd-ack-timeout-ms', '500', '--cmd-max-deliver', '3']))
    }
    expect(await until(async () => (await jetstreamManager(nc)).streams.info('FERRY_CMD').then(() => true, () => false))).toBe(true)
  }, 60_000)

  afterAll(async () => {
    await nc?.close()
    await Promise.all(gws.map((g) => g.kill('SIGTERM')))
    await nats?.stop()
  })

  const deadEvents = async (device: string): Promise<Record<string, unknown>[]> =>
    (await readStream(nats.url, 'FERRY', 'events')).filter((m) => m.subject === `ferry.events.${device}.command-dead`).map((m) => decodeCbor(m.data) as Record<string, unknown>)

  /** The device connects to A, B, A, B, A in turn, takes the command without acknowledging and leaves at once. */
  async function bounce(id: string): Promise<void> {
    for (let k = 0; k < 5; k++) {
      const d = await rawDevice(gws[k % 2]!.port, id, { ack: 'never' })
      expect(await until(() => d.got.length >= 1)).toBe(true)
      await d.end()
    }
  }

  it('commands - handed back 5 times as the device left (past --cmd-max-deliver 3), then acknowledged where it stays: delivered, not dead', async () => {
    await jetstream(nc).publish('ferry.cmd.mv-ok.reboot', '{}')
    await bounce('mv-ok')
    const d = await rawDevice(gws[1]!.port, 'mv-ok')
    expect(await until(() => d.got.length >= 1)).toBe(true)
    expect(await until(async () => (await (await jetstreamManager(nc)).streams.info('FERRY_CMD')).state.messages === 0)).toBe(true)
    await new Promise((r) => setTimeout(r, 1000)) // its events, if any, reach the stream
    expect(await deadEvents('mv-ok')).toEqual([])
    await d.end()
  }, 60_000)

  it('commands - after the same moves, a device that never acknowledges where it stays still gets command-dead', async () => {
    await jetstream(nc).publish('ferry.cmd.mv-dead.reboot', '{}')
    await bounce('mv-dead')
    const d = await rawDevice(gws[1]!.port, 'mv-dead', { ack: 'never' })
    expect(await until(async () => (await deadEvents('mv-dead')).length === 1, 20_000)).toBe(true)
    expect(String((await deadEvents('mv-dead'))[0]!.reason)).toContain('not acknowledged by the device after 3 deliveries')
    expect(d.got.length).toBe(1) // one real try where it stayed
    await d.end()
  }, 60_000)
})
