// Bad input: invalid configuration exits 2 naming the key; a malformed packet or refused publish closes only that client.
import net from 'node:net'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import type { Gateway } from '../../src/gateway.js'
import { runFerry, startWithNats, stopWithNats } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient, publishSeries } from '../helpers/mqtt.js'
import type { NatsServer } from '../helpers/nats.js'
import { waitForCount } from '../helpers/stream.js'

describe('bad configuration', () => {
  it('config - an invalid flag value exits 2 and names the key, the value and what is expected', async () => {
    const r = await runFerry(['run', '--log-max-bytes', '12abc', '--data-dir', tempDir()])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("'log.maxBytes' (flag --log-max-bytes) must be a size")
    expect(r.stderr).toContain('"12abc"')
  })

  it('config - every problem is reported at once, from flags, environment and file', async () => {
    const r = await runFerry(['run', '--discard', 'oldest', '--bogus', 'x'], { FERRY_FSYNC: 'sometimes', FERRY_NOPE: '1' })
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("'log.discard' (flag --discard) must be one of \"old\", \"new\"")
    expect(r.stderr).toContain("'log.fsync' (environment FERRY_FSYNC)")
    expect(r.stderr).toContain('unknown flag --bogus')
    expect(r.stderr).toContain('unknown environment variable FERRY_NOPE')
  })

  it('config - cross-field rule: the bound must hold two segments', async () => {
    const r = await runFerry(['run', '--log-max-bytes', '64MiB', '--log-segment-bytes', '64MiB'])
    expect(r.code).toBe(2)
    expect(r.stderr).toContain("'log.maxBytes' (67108864) must be at least 2 x 'log.segmentBytes'")
  })

  it('config - help lists every option with its default', async () => {
    const r = await runFerry(['run', '--help'])
    expect(r.code).toBe(0)
    for (const flag of ['--mqtt-listen', '--data-dir', '--log-max-bytes', '--discard', '--fsync', '--nats-url', '--subject-prefix', '--stream', '--cbor', '--gateway-id', '--config']) {
      expect(r.stdout).toContain(flag)
    }
  })
})

describe('bad packets', () => {
  let nats: NatsServer
  let gw: Gateway
  beforeAll(async () => ({ nats, gw } = await startWithNats({ 'log.maxRecordBytes': 4096 })))
  afterAll(() => stopWithNats(gw, nats))

  it('ingress - malformed packets and oversized payloads close only the offending client; a $SYS publish is acknowledged and dropped', async () => {
    const port = gw.ingress.address.port
    const good = await connectClient(port, 'good-device')
    let goodClosed = false
    good.on('close', () => (goodClosed = true))
    const publishing = publishSeries(good, 'good-device', 500, 5)

    // 1. garbage bytes instead of CONNECT; 2. a valid CONNECT then a PUBLISH with QoS 3.
    const closedBy = async (bytes: Buffer[]): Promise<void> => {
      const s = net.connect(port, '127.0.0.1')
      await new Promise<void>((resolve) => s.once('connect', () => resolve()))
      for (const b of bytes) s.write(b)
      await new Promise<void>((resolve) => s.once('close', () => resolve()))
    }
    await closedBy([Buffer.from('GET / HTTP/1.1\r\n\r\n')])
    const connect = Buffer.from([0x10, 0x0e, 0x00, 0x04, 0x4d, 0x51, 0x54, 0x54, 0x04, 0x02, 0x00, 0x3c, 0x00, 0x02, 0x62, 0x64])
    await closedBy([connect, Buffer.from([0x36, 0x05, 0x00, 0x01, 0x61, 0x00, 0x01])])

    // 3. $SYS publish: refused by policy, acknowledged and dropped (--refused-publish ack, issue 13);
    // the client stays connected.
    const sys = await connectClient(port, 'bad-sys')
    await sys.publishAsync('$SYS/fake', 'x', { qos: 1 })
    expect(sys.connected).toBe(true)
    await endClient(sys)
    expect(gw.metrics.drops.get({ reason: 'refused' })).toBe(1)
    // 4. an oversized payload: refused every time it is sent, so acknowledged and dropped
    // (--refused-publish ack, issue 13: it would wedge a device resending it); the client stays.
    const bad = await connectClient(port, 'bad-big')
    await bad.publishAsync('devices/big', Buffer.alloc(8192, 1), { qos: 1 })
    expect(bad.connected).toBe(true)
    await endClient(bad)

    expect(await publishing).toHaveLength(500)
    expect(goodClosed).toBe(false)
    await endClient(good)
    expect(gw.metrics.mqttRefused.get({ reason: 'sys_topic' })).toBe(1)
    expect(gw.metrics.mqttRefused.get({ reason: 'too_large' })).toBe(1)
    expect(await waitForCount(nats.url, 500)).toBe(500)
  })
})
