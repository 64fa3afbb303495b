// Live lane and order (issue 10, test 6): while a backlog drains, what the lane sends ahead must not
// overtake anything it comes after: a backlog device's message on the same topic, or the device's
// own message that waits in the backlog's queue.
import { describe, expect, it, onTestFinished } from 'vitest'
import type { Readiness } from '../../src/health/index.js'
import { AckLedger, checkRecords, clean, formatReport, readRecords } from '../helpers/ack-ledger.js'
import type { StoredRecord } from '../helpers/ack-ledger.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { publishTracked, until } from '../helpers/load.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import type { MqttClient } from 'mqtt'
import { startNats } from '../helpers/nats.js'
import { startProxy } from '../helpers/proxy.js'
import { streamCount } from '../helpers/stream.js'

/** Records of device A in the backlog: the lane opens at 10,000. */
const BACKLOG = 12_000
const BACKLOG_TOPIC = 'a/telemetry'
const ALARMS = 'site/alarms'

async function readyz(gw: GatewayProcess): Promise<Readiness> {
  return (await (await fetch(`http://127.0.0.1:${gw.httpPort}/readyz`)).json()) as Readiness
}

interface Drain {
  readonly gw: GatewayProcess
  readonly natsUrl: string
  readonly ledger: AckLedger
  /** Device A, connected, its BACKLOG records on BACKLOG_TOPIC in the log and the lane open. */
  readonly a: MqttClient
  /** Device data in the stream now (the drain still runs while this is below BACKLOG). */
  drained(): Promise<number>
  /**
   * Waits until the gateway has forwarded everything, then reads the whole stream (data and
   * events), again until `complete` holds (at most 10 s).
   */
  finish(complete?: (records: StoredRecord[]) => boolean): Promise<StoredRecord[]>
}

/**
 * Device A publishes BACKLOG records while NATS is down; NATS comes back behind 0-100 ms of latency
 * and a 400-message window (so the drain takes seconds, not milliseconds); resolves once the
 * gateway logged "live lane open".
 */
async function backlogDraining(id: string): Promise<Drain> {
  const nats = await startNats()
  onTestFinished(() => nats[Symbol.asyncDispose]())
  const proxy = await startProxy(nats.port)
  onTestFinished(() => proxy.close())
  const gw = await spawnGateway(['--mqtt-listen', '127.0.0.1:0', '--data-dir', tempDir(), '--nats-url', proxy.url, '--gateway-id', id, '--max-inflight', '400'])
  onTestFinished(async () => {
    await gw.kill('SIGKILL')
  })
  await until(async () => (await readyz(gw)).checks.upstream.status === 'ok', 15_000, 'the gateway to connect to NATS')
  await nats.stop()

  const ledger = new AckLedger()
  const a = await connectClient(gw.port, 'dev-A')
  onTestFinished(() => endClient(a))
  await publishTracked(a, ledger, { device: 'dev-A', topic: BACKLOG_TOPIC, count: BACKLOG, window: 200 })
  expect(gw.output()).not.toContain('live lane open')

  proxy.setLatency(100)
  await nats.start()
  await until(() => gw.output().includes('live lane open'), 20_000, () => `"live lane open" in the gateway's log:\n${gw.output().slice(-2000)}`, 5)
  return {
    gw,
    natsUrl: nats.url,
    ledger,
    a,
    drained: () => streamCount(nats.url, 'FERRY', 'up'),
    async finish(complete = () => true) {
      proxy.setLatency(0)
      // /metrics is computed at the scrape (the /readyz body is refreshed once a second, so right
      // after the publishes it may still show the empty backlog from before them).
      const backlog = async (): Promise<number> => Number(/^ferry_log_backlog_records (\d+)$/m.exec(await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text())?.[1] ?? -1)
      await until(async () => (await backlog()) === 0, 30_000, async () => `an empty backlog: ${await backlog()} records`, 100)
      let records: StoredRecord[] = []
      await until(async () => complete((records = await readRecords(nats.url))), 10_000, 'the last records', 200).catch(() => {})
      return records
    },
  }
}

/** Stream position of the first record matching `pred`, or -1. */
function positionOf(records: readonly StoredRecord[], pred: (r: StoredRecord) => boolean): number {
  return records.find(pred)?.streamSeq ?? -1
}

describe('live lane and order', () => {
  it('live lane - a new device\'s "all clear" on a topic does not overtake a backlog device\'s earlier "smoke" on the same topic', async () => {
    const d = await backlogDraining('lane-topic')
    // A, whose telemetry is in the backlog, raises an alarm; once it is acknowledged, a device that
    // has nothing in the backlog clears it on the same topic.
    await publishTracked(d.a, d.ledger, { device: 'dev-A', topic: ALARMS, count: 1, from: BACKLOG + 1, tag: 'smoke' })
    const dd = await connectClient(d.gw.port, 'dev-D')
    onTestFinished(() => endClient(dd))
    await publishTracked(dd, d.ledger, { device: 'dev-D', topic: ALARMS, count: 1, tag: 'all-clear' })
    const drainedThen = await d.drained()
    expect(drainedThen, 'the backlog had drained before the alarms were published: the scenario did not happen during the drain').toBeLessThan(BACKLOG)

    const records = await d.finish()
    const smoke = positionOf(records, (r) => r.tag === 'smoke')
    const allClear = positionOf(records, (r) => r.tag === 'all-clear')
    const report = checkRecords(d.ledger, records)
    expect(
      { smokeFirst: smoke > 0 && smoke < allClear, clean: clean(report) },
      `smoke (dev-A) at stream seq ${smoke}, all-clear (dev-D) at ${allClear}; ${drainedThen} of A's ${BACKLOG} backlog records were in the stream when the all-clear was acknowledged\n${formatReport(report)}`,
    ).toEqual({ smokeFirst: true, clean: true })
  })

  it('live lane - a new device\'s "disconnected" event does not overtake its own message on a backlog topic', async () => {
    const d = await backlogDraining('lane-event')
    // A device with nothing in the backlog sends one message on a topic that has (so it waits for the
    // drain), then leaves: its "disconnected" event has to wait behind that message.
    const n = await connectClient(d.gw.port, 'dev-N')
    await publishTracked(n, d.ledger, { device: 'dev-N', topic: BACKLOG_TOPIC, count: 1, tag: 'n-message' })
    await endClient(n)
    const drainedThen = await d.drained()
    expect(drainedThen, 'the backlog had drained before device N left: the scenario did not happen during the drain').toBeLessThan(BACKLOG)

    const records = await d.finish((rs) => rs.some((r) => r.subject === 'ferry.events.dev-N.disconnected'))
    const connected = positionOf(records, (r) => r.subject === 'ferry.events.dev-N.connected')
    const message = positionOf(records, (r) => r.tag === 'n-message')
    const disconnected = positionOf(records, (r) => r.subject === 'ferry.events.dev-N.disconnected')
    const report = checkRecords(d.ledger, records)
    expect(
      { order: connected > 0 && connected < message && message < disconnected, clean: clean(report) },
      `dev-N: connected event at stream seq ${connected}, its message at ${message}, disconnected event at ${disconnected}; ${drainedThen} of A's ${BACKLOG} backlog records were in the stream when N had left\n${formatReport(report)}`,
    ).toEqual({ order: true, clean: true })
  })
})
