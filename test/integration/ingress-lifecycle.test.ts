// Ingress as a Component: close(deadline) and closed(), with a real broker on port 0 and real
// MQTT clients; the log is an in-memory Appender (ingress's own interface). Needs no nats-server.
import net from 'node:net'
import { afterEach, describe, expect, it } from 'vitest'
import { Admission } from '../../src/auth/index.js'
import { PayloadPolicy } from '../../src/codec/index.js'
import { parseConfig } from '../../src/config/index.js'
import { FerryError } from '../../src/errors.js'
import { Ingress, RetransmitIndex } from '../../src/ingress/index.js'
import type { Appender } from '../../src/ingress/index.js'
import { deadlineIn } from '../../src/lifecycle.js'
import { silentLogger } from '../../src/logger.js'
import { createMetrics } from '../../src/metrics/index.js'
import { closedWithin, connectClient } from '../helpers/mqtt.js'

/** An Appender that keeps entries in memory. */
function memoryLog(): Appender & { entries: Uint8Array[] } {
  const entries: Uint8Array[] = []
  return { entries, pendingAppendBytes: 0, append: (body) => Promise.resolve(entries.push(body)) }
}

async function startIngress(): Promise<{ ingress: Ingress; log: ReturnType<typeof memoryLog> }> {
  const config = parseConfig(new Map([['mqtt.listen', { value: '127.0.0.1:0', source: 'flag' as const }]]), 'test')
  const metrics = createMetrics()
  const log = memoryLog()
  const ingress = await Ingress.start({
    host: '127.0.0.1',
    port: 0,
    admission: Admission.load({ authFile: '', aclFile: '', allowAnonymous: true, requireClientCert: false, logger: silentLogger, metrics }),
    limits: config.limits,
    payloads: new PayloadPolicy(false, []),
    maxEntryBytes: 1 << 20,
    retransmits: new RetransmitIndex(1000, 300_000),
    maxPendingBytes: 1 << 20,
    logger: silentLogger,
    metrics,
    log,
  })
  return { ingress, log }
}

/** Whether a TCP connection to `port` is refused. */
const refused = (port: number): Promise<boolean> =>
  new Promise((resolve) => {
    const s = net.connect(port, '127.0.0.1')
    s.once('connect', () => (s.destroy(), resolve(false)))
    s.once('error', () => resolve(true))
  })

describe('ingress lifecycle', () => {
  const started: Ingress[] = []
  afterEach(async () => {
    await Promise.all(started.splice(0).map((i) => i.close(deadlineIn(2000))))
  })

  it('ingress - close(deadline) stops listening and closes clients; closed() settles with undefined; a second close waits for the first', async () => {
    const { ingress, log } = await startIngress()
    started.push(ingress)
    const port = ingress.address.port
    const c = await connectClient(port, 'life-1')
    await c.publishAsync('devices/life-1/t', 'x', { qos: 1 })
    expect(log.entries).toHaveLength(1)
    expect(ingress.devices.isOnline('life-1')).toBe(true)
    const gone = closedWithin(c, 3000)
    const first = ingress.close(deadlineIn(2000))
    const second = ingress.close(deadlineIn(2000))
    await Promise.all([first, second])
    await expect(ingress.closed()).resolves.toBeUndefined()
    expect(await gone).toBe(true)
    expect(ingress.listening).toBe(false)
    expect(await refused(port)).toBe(true)
    c.end(true)
  })

  it('ingress - a listener that stops on its own stops ingress; closed() settles with FERRY_ERR_INGRESS_LISTEN', async () => {
    const { ingress } = await startIngress()
    started.push(ingress)
    const c = await connectClient(ingress.address.port, 'life-2')
    const gone = closedWithin(c, 3000)
    // What a listener sees when it cannot listen again (e.g. its address taken while it paused).
    const server = (ingress as unknown as { servers: net.Server[] }).servers[0]!
    server.close()
    server.emit('error', Object.assign(new Error('listen EADDRINUSE'), { code: 'EADDRINUSE' }))
    const err = await ingress.closed()
    expect(err).toBeInstanceOf(FerryError)
    expect((err as FerryError).code).toBe('FERRY_ERR_INGRESS_LISTEN')
    expect(await gone).toBe(true)
    c.end(true)
  })
})
