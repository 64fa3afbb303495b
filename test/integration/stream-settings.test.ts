// The uplink stream's replicas and duplicate window (--stream-replicas, --dedup-window): applied when Ferry
// creates the stream; an existing weaker stream is left as it is, with one warning per setting (not one per
// reconnection).
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { describe, expect, it, onTestFinished } from 'vitest'
import { memoryLogger, startGateway } from '../helpers/gateway.js'
import { until } from '../helpers/load.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import { startProxy } from '../helpers/proxy.js'

const NS_PER_MS = 1e6

describe('stream settings', () => {
  it('stream - created with --dedup-window as its duplicate window', async () => {
    await using nats = await startNats()
    const gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'nats.dedupWindowMs': 3_600_000 })
    onTestFinished(() => gw.close())
    const nc = await connect({ servers: nats.url })
    onTestFinished(() => nc.close())
    const jsm = await jetstreamManager(nc)
    let info: Awaited<ReturnType<typeof jsm.streams.info>> | undefined
    await until(async () => (info = await jsm.streams.info('FERRY').catch(() => undefined)) !== undefined, 15_000, 'the stream')
    expect(info!.config.duplicate_window).toBe(3_600_000 * NS_PER_MS)
    expect(info!.config.num_replicas).toBe(1)
    await gw.close() // before nats-server stops at the end of this scope
  })

  it('stream - an existing stream with fewer replicas and a shorter window: left unchanged, one warning each, also across reconnections', async () => {
    await using nats = await startNats()
    const nc = await connect({ servers: nats.url })
    onTestFinished(() => nc.close())
    const jsm = await jetstreamManager(nc)
    await jsm.streams.add({ name: 'FERRY', subjects: ['ferry.up.>', 'ferry.events.>'], duplicate_window: 10_000 * NS_PER_MS })
    await using proxy = await startProxy(nats.port)
    const lines: string[] = []
    const gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': proxy.url, 'nats.streamReplicas': 3, 'nats.dedupWindowMs': 600_000 }, memoryLogger(lines))
    onTestFinished(() => gw.close())
    const connects = (): number => lines.filter((l) => /"msg":"(re)?connected to NATS"/.test(l) && l.includes('"c":"forward"')).length
    const checks = (): number => lines.filter((l) => l.includes('duplicate window of 10000 ms')).length
    await until(() => checks() > 0, 15_000, 'the warning')
    // A new connection checks the stream again: no second warning.
    proxy.cut()
    await until(() => connects() >= 2, 15_000, 'a reconnection')
    await until(() => gw.forwarder.health.connected && gw.forwarder.health.streamProblem === '', 15_000, 'the stream check after the reconnection')
    await new Promise((r) => setTimeout(r, 300))
    const warns = lines.filter((l) => l.includes('"level":"warn"') && l.includes('nats stream edit FERRY'))
    expect(warns.length, warns.join('\n')).toBe(2)
    expect(warns.join('\n')).toContain('1 replica(s), fewer than --stream-replicas 3')
    expect(warns.join('\n')).toContain('--dupe-window 600s')
    const info = await jsm.streams.info('FERRY')
    expect(info.config.duplicate_window).toBe(10_000 * NS_PER_MS)
    expect(info.config.num_replicas).toBe(1)
    await gw.close() // before nats-server stops at the end of this scope
  })
})
