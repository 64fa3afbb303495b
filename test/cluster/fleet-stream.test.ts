// A fleet of gateways into one 3-node JetStream cluster with an R3 uplink stream (issue 15, tests 1, 2, 3
// and 7): several gateways on one subject prefix; the kill -9 of the node a gateway is connected to and of
// the stream leader, under load; a rolling restart of every node under load; an outage longer than a short
// --dedup-window. Every PUBACKed message must be in the stream once (test 7: what may be doubled is within
// the counted resends), in per-device order (after a fault: except what the gateway counted as reordered,
// see expectNoLossNoDuplicate).
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it, onTestFinished } from 'vitest'
import { AckLedger, checkRecords, clean, formatReport, readRecords } from '../helpers/ack-ledger.js'
import type { LedgerReport } from '../helpers/ack-ledger.js'
import { startCluster } from '../helpers/cluster.js'
import type { ClusterNode, NatsCluster } from '../helpers/cluster.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { startLoad, until } from '../helpers/load.js'
import type { Load } from '../helpers/load.js'
import { tempDir } from '../helpers/log.js'
import { startProxy } from '../helpers/proxy.js'

let cluster: NatsCluster
beforeAll(async () => {
  cluster = await startCluster()
})
afterAll(async () => {
  await cluster?.[Symbol.asyncDispose]()
})

/** A test's own stream, prefix and command stream, so the tests share the cluster and nothing else. */
interface Space {
  readonly stream: string
  readonly prefix: string
}

const space = (name: string): Space => ({ stream: `FLEET_${name.toUpperCase()}`, prefix: `fleet${name}` })

/** A running node's URL (for reading the stream back and for the JetStream API). */
function anyUrl(): string {
  const n = cluster.nodes.find((x) => x.running)
  if (!n) throw new Error('no node running')
  return n.url
}

/** Spawns the bundled gateway into the test's space with --stream-replicas 3; killed when the test ends. */
async function gateway(s: Space, id: string, urls: readonly string[], extra: string[] = []): Promise<GatewayProcess> {
  const gw = await spawnGateway([
    '--mqtt-listen', '127.0.0.1:0',
    '--data-dir', tempDir(),
    '--nats-url', urls.join(','),
    '--gateway-id', id,
    '--stream', s.stream,
    '--subject-prefix', s.prefix,
    '--cmd-stream', `${s.stream}_CMD`,
    '--stream-replicas', '3',
    '--ack-timeout-ms', '2000',
    ...extra,
  ])
  onTestFinished(async () => {
    await gw.kill('SIGKILL')
  })
  return gw
}

/** The gateway's metrics, parsed (name with labels → value). */
async function metrics(gw: GatewayProcess): Promise<Map<string, number>> {
  const text = await (await fetch(`http://127.0.0.1:${gw.httpPort}/metrics`)).text()
  const out = new Map<string, number>()
  for (const m of text.matchAll(/^(ferry_[^\s]+) ([-+0-9.eE]+|NaN)$/gm)) out.set(m[1]!, Number(m[2]))
  return out
}

const metric = async (gw: GatewayProcess, name: string): Promise<number> => (await metrics(gw)).get(name) ?? 0

/** The node the gateway's forwarder is connected to now, from its last "(re)connected to NATS" log line. */
function forwarderNode(gw: GatewayProcess): ClusterNode | undefined {
  let port: number | undefined
  for (const line of gw.output().split('\n')) {
    if (!line.includes('"c":"forward"') || !/"msg":"(re)?connected to NATS"/.test(line)) continue
    const m = /"server":"[^"]*:(\d+)"/.exec(line)
    if (m) port = Number(m[1])
  }
  return cluster.nodes.find((n) => n.port === port)
}

/** Asks the stream's leader to step down until it is not `name` (so a kill of the leader is a kill of the leader only). */
async function leaderAwayFrom(s: Space, name: string): Promise<string> {
  const nc = await connect({ servers: anyUrl() })
  try {
    for (let i = 0; i < 10; i++) {
      const leader = await cluster.streamLeader(s.stream)
      if (leader && leader !== name) return leader
      if (leader) await nc.request(`$JS.API.STREAM.LEADER.STEPDOWN.${s.stream}`, '', { timeout: 5000 }).catch(() => undefined)
      await new Promise((r) => setTimeout(r, 500))
    }
  } finally {
    await nc.close()
  }
  throw new Error(`the leader of ${s.stream} stays on ${name}`)
}

/**
 * Samples the gateway's ferry_forward_messages_total every 100 ms; stall() is the longest time the
 * count did not move since mark() (the time forwarding took to recover from a fault).
 */
function ackSampler(gw: GatewayProcess): { mark(): void; stall(): number; stop(): void } {
  let last = -1
  let lastChange = Date.now()
  let longest = 0
  const timer = setInterval(() => {
    void metric(gw, 'ferry_forward_messages_total').then(
      (n) => {
        const now = Date.now()
        if (n !== last) {
          longest = Math.max(longest, now - lastChange)
          last = n
          lastChange = now
        }
      },
      () => {},
    )
  }, 100)
  onTestFinished(() => clearInterval(timer))
  return {
    mark() {
      longest = 0
      lastChange = Date.now()
    },
    stall: () => Math.max(longest, Date.now() - lastChange),
    stop: () => clearInterval(timer),
  }
}

/**
 * Stops the loads, waits until every gateway's backlog is empty, then reads the stream back (through
 * any running node) and checks it against the ledger.
 */
async function finish(s: Space, gws: readonly GatewayProcess[], loads: readonly Load[], ledger: AckLedger): Promise<LedgerReport> {
  await Promise.all(loads.map((l) => l.stop()))
  for (const l of loads) {
    expect(l.drops(), 'a gateway dropped a device connection').toBe(0)
    expect(l.acked(), 'every publish was acknowledged').toBe(l.sent())
  }
  for (const gw of gws) await until(async () => (await metric(gw, 'ferry_log_backlog_records')) === 0, 45_000, 'an empty backlog')
  // After a fault the meta leader may be changing ("JetStream system temporarily unavailable"):
  // read once JetStream answers through every node again.
  await cluster.waitReady()
  return checkRecords(ledger, await readRecords(anyUrl(), { stream: s.stream, filter: `${s.prefix}.up.>` }))
}

/**
 * After a fault: nothing lost, nothing doubled. Order: a stream leader change (a kill, a step-down, a
 * node's graceful stop) can drop a publish in flight at the old leader while the new one stores later
 * publishes that were behind it; Ferry resends the dropped one, which then lands after them. Ferry
 * cannot prevent that with pipelined publishes, but it sees it and counts it
 * (ferry_forward_reordered_total): every order violation must be among the counted ones.
 */
async function expectNoLossNoDuplicate(r: LedgerReport, gws: readonly GatewayProcess[]): Promise<void> {
  let reordered = 0
  for (const gw of gws) reordered += await metric(gw, 'ferry_forward_reordered_total')
  expect({ lost: r.lost, duplicateIds: r.duplicateIds, duplicatePayloads: r.duplicatePayloads }, formatReport(r)).toEqual({ lost: 0, duplicateIds: 0, duplicatePayloads: 0 })
  expect(r.deviceOrder, `order violations beyond the ${reordered} counted by the gateways (ferry_forward_reordered_total): ${formatReport(r)}`).toBeLessThanOrEqual(reordered)
  if (r.deviceOrder > 0) console.log(`order: ${r.deviceOrder} records stored after a later one of their device, ${reordered} counted by the gateways`)
}

const devices = (gw: string, n: number): string[] => Array.from({ length: n }, (_, i) => `${gw}-dev-${i}`)
const RATE = 60

describe('fleet into a JetStream cluster', () => {
  it('fleet - three gateways, one subject prefix, an R3 stream: every acknowledged message once, per-device order kept', async () => {
    const s = space('one')
    const ledger = new AckLedger()
    const urls = cluster.urls
    // Each gateway lists the nodes in another order (nats.js also shuffles them).
    const gws = [
      await gateway(s, 'site-a', urls),
      await gateway(s, 'site-b', [urls[1]!, urls[2]!, urls[0]!]),
      await gateway(s, 'site-c', [urls[2]!, urls[0]!, urls[1]!]),
    ]
    const loads: Load[] = []
    for (const [i, gw] of gws.entries()) {
      const l = await startLoad(gw.port, ledger, { devices: devices(`gw${i}`, 3), ratePerSec: RATE })
      onTestFinished(() => l.stop(1000))
      loads.push(l)
    }
    await until(() => ledger.size >= 1500, 30_000, '1,500 PUBACKs')
    const r = await finish(s, gws, loads, ledger)
    expect(clean(r), formatReport(r)).toBe(true)
    expect(r.acked).toBeGreaterThanOrEqual(1500)
    const nc = await connect({ servers: anyUrl() })
    onTestFinished(() => nc.close())
    const info = await (await jetstreamManager(nc)).streams.info(s.stream)
    expect(info.config.num_replicas).toBe(3)
    expect(info.config.duplicate_window).toBe(120_000 * 1e6)
    // Message ids name the gateway: the three gateways' records are told apart by Nats-Msg-Id.
    const ids = new Set((await readRecords(anyUrl(), { stream: s.stream, filter: `${s.prefix}.up.>` })).map((x) => x.msgId.split(':')[0]))
    expect([...ids].sort((x, y) => (x ?? '').localeCompare(y ?? ''))).toEqual(['site-a', 'site-b', 'site-c'])
  })

  it('failover - kill -9 of the node a gateway is connected to, then of the stream leader, under load: 0 lost, 0 duplicates, order changed only where counted', async () => {
    const s = space('kill')
    const ledger = new AckLedger()
    const a = await gateway(s, 'site-a', cluster.urls)
    const b = await gateway(s, 'site-b', cluster.urls)
    const loads = [await startLoad(a.port, ledger, { devices: devices('a', 4), ratePerSec: RATE }), await startLoad(b.port, ledger, { devices: devices('b', 2), ratePerSec: RATE })]
    for (const l of loads) onTestFinished(() => l.stop(1000))
    const sampler = ackSampler(a)
    await until(() => ledger.size >= 500, 30_000, '500 PUBACKs')
    await cluster.waitStreamHealthy(s.stream)

    // 1. The node gateway A's forwarder is connected to (not the stream leader: this is a connection failover only).
    const node = forwarderNode(a)
    expect(node, 'the node gateway A is connected to (from its log)').toBeDefined()
    await leaderAwayFrom(s, node!.name)
    sampler.mark()
    const before = load0(loads)
    await node!.kill()
    await until(async () => (await metric(a, 'ferry_forward_reconnects_total')) >= 1, 30_000, 'gateway A to reconnect')
    await until(() => load0(loads) >= before + 600, 30_000, '600 more PUBACKs after the kill')
    await until(async () => (await metric(a, 'ferry_log_backlog_records')) < 200, 30_000, 'gateway A to catch up')
    const nodeStall = sampler.stall()
    const moved = forwarderNode(a)
    expect(moved?.name).not.toBe(node!.name)
    await node!.start()
    await cluster.waitStreamHealthy(s.stream)

    // 2. The stream leader (not the node A is connected to now, so this is a leader failover only).
    const leader = await leaderAwayFrom(s, forwarderNode(a)!.name)
    const reconnects = await metric(a, 'ferry_forward_reconnects_total')
    sampler.mark()
    const before2 = load0(loads)
    await cluster.node(leader).kill()
    await until(() => load0(loads) >= before2 + 600, 30_000, '600 more PUBACKs after the leader kill')
    await until(async () => (await metric(a, 'ferry_log_backlog_records')) < 200, 30_000, 'gateway A to catch up')
    const leaderStall = sampler.stall()
    expect(await metric(a, 'ferry_forward_reconnects_total'), 'a leader failover needs no reconnection').toBe(reconnects)
    await cluster.node(leader).start()
    await cluster.waitStreamHealthy(s.stream)
    sampler.stop()

    const r = await finish(s, [a, b], loads, ledger)
    const m = await metrics(a)
    console.log(
      `failover figures: connected node ${node!.name} (not the leader) killed -> forwarding stalled ${nodeStall} ms; stream leader ${leader} killed -> stalled ${leaderStall} ms; ` +
        `${formatReport(r)}; gateway A: ${m.get('ferry_forward_retries_total')} resends, ${m.get('ferry_forward_duplicates_total')} dropped as duplicates by JetStream`,
    )
    await expectNoLossNoDuplicate(r, [a, b])
  })

  it('failover - the node a gateway is connected to hangs (SIGSTOP) under load: the gateway moves to another node within seconds, 0 lost, 0 duplicates, order changed only where counted', async () => {
    const s = space('hang')
    const ledger = new AckLedger()
    const a = await gateway(s, 'site-a', cluster.urls)
    const load = await startLoad(a.port, ledger, { devices: devices('a', 4), ratePerSec: RATE })
    onTestFinished(() => load.stop(1000))
    const sampler = ackSampler(a)
    await until(() => ledger.size >= 300, 30_000, '300 PUBACKs')
    await cluster.waitStreamHealthy(s.stream)
    const node = forwarderNode(a)
    expect(node, 'the node gateway A is connected to (from its log)').toBeDefined()
    await leaderAwayFrom(s, node!.name)
    sampler.mark()
    node!.signal('SIGSTOP')
    onTestFinished(() => node!.signal('SIGCONT'))
    const before = load.acked()
    // nats.js's own pings would notice after 30 s; the gateway's PING check within seconds.
    await until(async () => (await metric(a, 'ferry_forward_reconnects_total')) >= 1, 25_000, 'gateway A to connect to another node')
    await until(() => load.acked() >= before + 400, 30_000, '400 more PUBACKs')
    await until(async () => (await metric(a, 'ferry_log_backlog_records')) < 200, 30_000, 'gateway A to catch up')
    const stall = sampler.stall()
    sampler.stop()
    expect(forwarderNode(a)?.name).not.toBe(node!.name)
    node!.signal('SIGCONT')
    await cluster.waitStreamHealthy(s.stream)
    const r = await finish(s, [a], [load], ledger)
    console.log(`hung node figures: ${node!.name} stopped (SIGSTOP) -> forwarding stalled ${stall} ms; ${formatReport(r)}`)
    await expectNoLossNoDuplicate(r, [a])
  })

  it('failover - rolling restart of all three nodes under load: 0 lost, 0 duplicates, order changed only where counted', async () => {
    const s = space('roll')
    const ledger = new AckLedger()
    const a = await gateway(s, 'site-a', cluster.urls)
    const b = await gateway(s, 'site-b', [...cluster.urls].reverse())
    const loads = [await startLoad(a.port, ledger, { devices: devices('a', 3), ratePerSec: RATE }), await startLoad(b.port, ledger, { devices: devices('b', 3), ratePerSec: RATE })]
    for (const l of loads) onTestFinished(() => l.stop(1000))
    await until(() => ledger.size >= 500, 30_000, '500 PUBACKs')
    await cluster.waitStreamHealthy(s.stream)
    const t0 = Date.now()
    // Each node down for a second: a gateway connected to it reconnects to another one meanwhile.
    await cluster.rollingRestart([s.stream], { pauseMs: 1000 })
    const rollMs = Date.now() - t0
    const after = ledger.size
    await until(() => ledger.size >= after + 300, 30_000, '300 more PUBACKs after the restarts')
    const r = await finish(s, [a, b], loads, ledger)
    const reconnects = (await metric(a, 'ferry_forward_reconnects_total')) + (await metric(b, 'ferry_forward_reconnects_total'))
    console.log(`rolling restart figures: ${rollMs} ms for three nodes, ${reconnects} gateway reconnections; ${formatReport(r)}`)
    await expectNoLossNoDuplicate(r, [a, b])
  })

  it('outage - a link outage longer than --dedup-window with records in flight at the cut: nothing lost, duplicates only among the counted resends', async () => {
    const s = space('dedup')
    const ledger = new AckLedger()
    await using proxy = await startProxy(cluster.nodes[0]!.port)
    const DEDUP_MS = 1500
    const gw = await gateway(s, 'site-a', [proxy.url], ['--dedup-window', `${DEDUP_MS}`])
    const load = await startLoad(gw.port, ledger, { devices: devices('a', 4), ratePerSec: RATE })
    onTestFinished(() => load.stop(1000))
    await until(() => ledger.size >= 300, 30_000, '300 PUBACKs')
    const nc = await connect({ servers: anyUrl() })
    onTestFinished(() => nc.close())
    expect((await (await jetstreamManager(nc)).streams.info(s.stream)).config.duplicate_window).toBe(DEDUP_MS * 1e6)
    await cluster.waitStreamHealthy(s.stream)

    // Latency keeps PubAcks on the way back when the link is cut: what was sent reaches JetStream and is
    // stored, its PubAck never arrives. The link then stays dark for longer than the duplicate window.
    proxy.setLatency(300)
    await new Promise((r) => setTimeout(r, 1000))
    proxy.cut({ inflight: 'deliver' })
    proxy.blackhole()
    const dark = Date.now()
    await until(() => Date.now() - dark >= DEDUP_MS * 3, 10_000, 'the outage')
    proxy.setLatency(0)
    proxy.heal()
    const after = ledger.size
    await until(() => ledger.size >= after + 300, 30_000, '300 more PUBACKs after the outage')

    const r = await finish(s, [gw], [load], ledger)
    const resends = await metric(gw, 'ferry_forward_resends_outside_dedup_window_total')
    const dups = r.duplicatePayloads
    console.log(`dedup-window outage figures: ${resends} resends outside the window counted, ${dups} stored twice; ${formatReport(r)}`)
    expect(r.lost, formatReport(r)).toBe(0)
    expect(r.deviceOrder + r.topicOrder, formatReport(r)).toBe(0)
    expect(r.duplicateIds).toBe(dups)
    expect(resends, 'records in flight at the cut are resent after the window, and counted').toBeGreaterThan(0)
    expect(dups, 'what was stored twice is within the counted resends').toBeLessThanOrEqual(resends)
    expect(gw.output()).toMatch(/"level":"warn".*"msg":"messages resent after the stream's duplicate window[^"]*".*"seqs":"\d/)
  })
})

/** PUBACKs so far over every load. */
function load0(loads: readonly Load[]): number {
  return loads.reduce((n, l) => n + l.acked(), 0)
}
