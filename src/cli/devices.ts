// `ferry devices [--http HOST:PORT] [--json]`: the devices connected to a running gateway, from its
// HTTP endpoint (GET /devices). `ferry devices --fleet [--json] [--config FILE] [--nats-* flags]`: the
// whole fleet, read from the registry bucket in NATS with the same NATS settings as `ferry run`.
import os from 'node:os'
import { Kvm, KvWatchInclude } from '@nats-io/kv'
import type { KV, KvEntry } from '@nats-io/kv'
import { jetstream } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'
import { loadConfig } from '../config/index.js'
import { DEAD_AFTER_HEARTBEATS, fleetRegistryBucket, parseDeviceEntry, parseGatewayEntry } from '../fleet/index.js'
import { upstreamOptions } from '../forward/index.js'
import type { DeviceInfo } from '../ingress/index.js'
import { printable, printableJson } from './log-tools.js'

export const DEVICES_USAGE =
  'Usage: ferry devices [--http HOST:PORT] [--json]   (default 127.0.0.1:9464, the gateway\'s --http-listen)\n' +
  '       ferry devices --fleet [--json] [--config FILE] [--nats-url URL ...] [--subject-prefix P] [--registry-bucket B]\n' +
  '                                                   (the whole fleet, from the registry bucket; same NATS settings as ferry run)\n'

function duration(ms: number): string {
  const s = Math.floor(ms / 1000)
  if (s < 120) return `${s}s`
  if (s < 7200) return `${Math.floor(s / 60)}m`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

/** Runs the command; returns the exit code. */
export async function devices(args: string[]): Promise<number> {
  if (args.includes('--fleet')) return fleetDevices(args.filter((a) => a !== '--fleet'))
  let http = process.env.FERRY_HTTP_LISTEN || '127.0.0.1:9464'
  let json = false
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--json') json = true
    else if (args[i] === '--http' && args[i + 1]) http = args[++i]!
    else {
      process.stderr.write(DEVICES_USAGE)
      return 2
    }
  }
  let list: DeviceInfo[]
  try {
    const res = await fetch(`http://${http}/devices`, { signal: AbortSignal.timeout(5000) })
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    list = ((await res.json()) as { devices: DeviceInfo[] }).devices
  } catch (err) {
    process.stderr.write(`ferry devices: cannot reach the gateway at http://${http}/devices: ${(err as Error).message} (is it running? see --http)\n`)
    return 1
  }
  if (json) {
    process.stdout.write(printableJson(list, 2) + '\n')
    return 0
  }
  const now = Date.now()
  const rows = [['DEVICE', 'ADDRESS', 'CONNECTED', 'FOR', 'SESSION', 'IN', 'OUT']]
  for (const d of list.sort((a, b) => a.clientId.localeCompare(b.clientId))) {
    rows.push([printable(d.clientId), printable(d.address), new Date(d.connectedAt).toISOString().replace('T', ' ').slice(0, 19), duration(now - d.connectedAt), d.clean ? 'clean' : 'persistent', String(d.messagesIn), String(d.messagesOut)])
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  for (const r of rows) process.stdout.write(r.map((c, i) => (i >= 5 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd() + '\n')
  process.stdout.write(`${list.length} device${list.length === 1 ? '' : 's'} connected\n`)
  return 0
}

/** A row of `ferry devices --fleet --json`. */
interface FleetDeviceRow {
  readonly device: string
  readonly gateway: string
  /** The gateway's heartbeat is fresh (renewed within 6 of its heartbeats, by the server's timestamp). */
  readonly live: boolean
  readonly since: number
  readonly address: string
  readonly clean: boolean
}

function iso(ms: number): string {
  return new Date(ms).toISOString().replace('T', ' ').slice(0, 19)
}

/** How long reading the bucket may take before the command gives up. */
const LIST_TIMEOUT_MS = 15_000

/**
 * The last value of every key (deletes included) as of now: a watcher replaying last values until it
 * reaches the stream's last sequence when we started, or has nothing more pending (that sequence may
 * be gone: kv.purgeDeletes removes delete markers, the last message too).
 */
async function lastValues(kv: KV, timeoutMs: number): Promise<KvEntry[]> {
  const state = (await kv.status()).streamInfo.state
  const lastSeq = state.last_seq
  const out: KvEntry[] = []
  if (lastSeq === 0 || state.messages === 0) return out
  const it = await kv.watch({ key: '>', include: KvWatchInclude.LastValue })
  const timer = setTimeout(() => it.stop(), timeoutMs)
  let complete = false
  try {
    for await (const e of it) {
      out.push(e)
      if (e.revision >= lastSeq || e.delta === 0) {
        complete = true
        break
      }
    }
  } finally {
    clearTimeout(timer)
    it.stop()
  }
  if (!complete) throw new Error(`the bucket was not read within ${timeoutMs} ms`)
  return out
}

/** `ferry devices --fleet`: reads the registry bucket directly from NATS. */
async function fleetDevices(args: string[]): Promise<number> {
  const json = args.includes('--json')
  let config
  try {
    config = loadConfig({ argv: args.filter((a) => a !== '--json'), env: process.env, hostname: os.hostname() })
  } catch (err) {
    process.stderr.write(`ferry devices --fleet: ${(err as Error).message}\n${DEVICES_USAGE}`)
    return 2
  }
  const bucket = config.fleet.registryBucket || fleetRegistryBucket(config.nats.subjectPrefix)
  const servers = config.nats.url.join(',')
  let nc: NatsConnection
  try {
    nc = await connect({ ...upstreamOptions(config.nats), servers: [...config.nats.url], name: 'ferry-devices-fleet', timeout: 5000, maxReconnectAttempts: 0 })
  } catch (err) {
    process.stderr.write(`ferry devices --fleet: cannot reach NATS at ${servers}: ${(err as Error).message} (see --nats-url and the --nats-* credentials)\n`)
    return 1
  }
  try {
    let kv: KV
    try {
      kv = await new Kvm(jetstream(nc, { timeout: 5000 })).open(bucket, { bindOnly: true })
      await kv.status()
    } catch (err) {
      process.stderr.write(`ferry devices --fleet: cannot read the registry bucket ${bucket} at ${servers}: ${(err as Error).message} (does a gateway with --fleet-registry on use this --subject-prefix or --registry-bucket?)\n`)
      return 1
    }
    const gateways = new Map<string, { live: boolean; lastHeartbeat: number; boot: string; startedAt: number; heartbeatMs: number; version: string }>()
    const now = Date.now()
    const rows: FleetDeviceRow[] = []
    const devices: { device: string; gateway: string; since: number; address: string; clean: boolean }[] = []
    let entries: KvEntry[]
    try {
      entries = await lastValues(kv, LIST_TIMEOUT_MS)
    } catch (err) {
      process.stderr.write(`ferry devices --fleet: cannot read the registry bucket ${bucket} at ${servers}: ${(err as Error).message}\n`)
      return 1
    }
    for (const e of entries) {
      if (e.operation !== 'PUT') continue
      if (e.key.startsWith('gateways.')) {
        const g = parseGatewayEntry(e.value)
        if (g) gateways.set(g.gateway, { live: now - e.created.getTime() < DEAD_AFTER_HEARTBEATS * g.heartbeatMs, lastHeartbeat: e.created.getTime(), boot: g.boot, startedAt: g.startedAt, heartbeatMs: g.heartbeatMs, version: g.version })
      } else if (e.key.startsWith('devices.')) {
        const d = parseDeviceEntry(e.value)
        if (d) devices.push({ device: d.device, gateway: d.gateway, since: d.since, address: d.address, clean: d.clean })
      }
    }
    for (const d of devices) rows.push({ ...d, live: gateways.get(d.gateway)?.live ?? false })
    rows.sort((a, b) => a.device.localeCompare(b.device))
    if (json) {
      const gw = [...gateways].sort(([a], [b]) => a.localeCompare(b)).map(([gateway, g]) => ({ gateway, ...g }))
      process.stdout.write(printableJson({ bucket, gateways: gw, devices: rows }, 2) + '\n')
      return 0
    }
    const table = [['DEVICE', 'GATEWAY', 'LIVE', 'SINCE', 'ADDRESS']]
    for (const r of rows) table.push([printable(r.device), printable(r.gateway), r.live ? 'yes' : 'no', iso(r.since), printable(r.address)])
    const widths = table[0]!.map((_, i) => Math.max(...table.map((r) => r[i]!.length)))
    for (const r of table) process.stdout.write(r.map((c, i) => c.padEnd(widths[i]!)).join('  ').trimEnd() + '\n')
    const live = [...gateways.values()].filter((g) => g.live).length
    process.stdout.write(`${rows.length} device${rows.length === 1 ? '' : 's'} in the fleet; ${live} live gateway${live === 1 ? '' : 's'} (bucket ${bucket})\n`)
    return 0
  } finally {
    await nc.close().catch(() => {})
  }
}
