// Review of the failover change (issue 15): the resend counter against the stream's real duplicate
// window, and the stream check / PING over a slow but working link.
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { describe, expect, it, onTestFinished } from 'vitest'
import { AckLedger, checkRecords, formatReport, readRecords } from '../helpers/ack-ledger.js'
import { spawnGateway, startGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { startLoad, until } from '../helpers/load.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import { startProxy } from '../helpers/proxy.js'

const NS_PER_MS = 1e6

async function metric(gw: GatewayProcess, name: string): Promise<number> {
  const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
  const m = new RegExp(`^${name} ([-+0-9.eE]+)$`, 'm').exec(text)
  return m ? Number(m[1]) : 0
}

describe('review - failover', () => {
  it('dedup window - an existing stream with a shorter duplicate window than --dedup-window: what it stores twice after an outage is counted', async () => {
    await using nats = await startNats()
    const STREAM_WINDOW_MS = 1500
    const nc = await connect({ servers: nats.url })
    onTestFinished(() => nc.close())
    const jsm = await jetstreamManager(nc)
    await jsm.streams.add({ name: 'FERRY', subjects: ['ferry.up.>', 'ferry.events.>'], duplicate_window: STREAM_WINDOW_MS * NS_PER_MS })
    await using proxy = await startProxy(nats.port)
    // --dedup-window left at its default (2 minutes): the stream's own window is the shorter one.
    const gw = await spawnGateway(['--mqtt-listen', '127.0.0.1:0', '--data-dir', tempDir(), '--nats-url', proxy.url, '--ack-timeout-ms', '2000'])
    onTestFinished(async () => {
      await gw.kill('SIGKILL')
    })
    const ledger = new AckLedger()
    const load = await startLoad(gw.port, ledger, { devices: ['d0', 'd1', 'd2', 'd3'], ratePerSec: 60 })
    onTestFinished(() => load.stop(1000))
    await until(() => ledger.size >= 200, 30_000, '200 PUBACKs')
    expect(gw.output()).toContain('duplicate window of 1500 ms')

    // As in the cluster test: sends reach JetStream and are stored, their PubAcks never come back;
    // the link stays dark for longer than the stream's window.
    proxy.setLatency(300)
    await new Promise((r) => setTimeout(r, 1000))
    proxy.cut({ inflight: 'deliver' })
    proxy.blackhole()
    const dark = Date.now()
    await until(() => Date.now() - dark >= STREAM_WINDOW_MS * 3, 10_000, 'the outage')
    proxy.setLatency(0)
    proxy.heal()
    const after = ledger.size
    await until(() => ledger.size >= after + 200, 30_000, '200 more PUBACKs after the outage')
    await load.stop()
    await until(async () => (await metric(gw, 'ferry_log_backlog_records')) === 0, 30_000, 'an empty backlog')

    const r = checkRecords(ledger, await readRecords(nats.url))
    const resends = await metric(gw, 'ferry_forward_resends_outside_dedup_window_total')
    expect(r.lost, formatReport(r)).toBe(0)
    expect(r.duplicatePayloads, `the outage should have stored some records twice: ${formatReport(r)}`).toBeGreaterThan(0)
    expect(r.duplicatePayloads, `stored twice beyond the ${resends} counted resends: ${formatReport(r)}`).toBeLessThanOrEqual(resends)
    await gw.kill('SIGKILL')
  })

  it('slow link - a server that answers, slower than --ack-timeout-ms (1 s, round trips of 0-4 s): not taken for a hung one, the backlog drains', async () => {
    await using nats = await startNats()
    await using proxy = await startProxy(nats.port)
    proxy.setLatency(2000)
    const gw = await spawnGateway(['--mqtt-listen', '127.0.0.1:0', '--data-dir', tempDir(), '--nats-url', proxy.url, '--ack-timeout-ms', '1000'])
    onTestFinished(async () => {
      await gw.kill('SIGKILL')
    })
    const ledger = new AckLedger()
    const load = await startLoad(gw.port, ledger, { devices: ['d0', 'd1'], ratePerSec: 10 })
    onTestFinished(() => load.stop(1000))
    await until(() => ledger.size >= 100, 30_000, '100 PUBACKs')
    await load.stop()
    const hung = (): number => gw.output().split('\n').filter((l) => l.includes('does not answer a PING')).length
    await until(async () => (await metric(gw, 'ferry_log_backlog_records')) === 0, 45_000, async () => `an empty backlog (${await metric(gw, 'ferry_log_backlog_records')} left, ${await metric(gw, 'ferry_forward_reconnects_total')} reconnections, ${hung()} "does not answer a PING")`)
    expect(hung(), 'the server answered every PING, late').toBe(0)
    proxy.setLatency(0)
    const r = checkRecords(ledger, await readRecords(nats.url))
    expect(r.lost, formatReport(r)).toBe(0)
    await gw.kill('SIGKILL')
  })

  it('readiness - a frozen server (SIGSTOP): while still connected, a stream check that got no answer is not "the stream is not usable" (/readyz failing at once); the stall rule (--ready-stall-ms) judges', async () => {
    await using nats = await startNats()
    const gw = await startGateway({ 'log.dataDir': tempDir(), 'nats.url': nats.url, 'nats.ackTimeoutMs': 1000 })
    onTestFinished(() => gw.close())
    const ledger = new AckLedger()
    const load = await startLoad(gw.ingress.address.port, ledger, { devices: ['d0', 'd1'], ratePerSec: 50 })
    onTestFinished(() => load.stop(1000))
    await until(() => ledger.size >= 100, 30_000, '100 PUBACKs')
    nats.signal('SIGSTOP')
    onTestFinished(() => nats.signal('SIGCONT'))
    // Until the gateway leaves the frozen server (or 10 s): what /readyz reads from the forwarder.
    const seen: string[] = []
    const t0 = Date.now()
    while (Date.now() - t0 < 10_000 && gw.forwarder.health.connected) {
      const h = gw.forwarder.health
      if (h.streamProblem !== '') seen.push(`${Date.now() - t0} ms: ${h.streamProblem}`)
      await new Promise((r) => setTimeout(r, 50))
    }
    nats.signal('SIGCONT')
    expect(seen, 'connected with a stream problem (/readyz upstream failing)').toEqual([])
    await load.stop()
    await gw.close()
  })
})
