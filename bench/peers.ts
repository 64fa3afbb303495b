// Peers Ferry is measured against: nats-server's native MQTT listener, and Mosquitto as the edge broker bridged to it.
//
// Needs nats-server (Debian: apt-get install -y nats-server) and, for the bridge, Mosquitto
// (apt-get install -y mosquitto; /usr/sbin/mosquitto). Everything listens on 127.0.0.1 on free
// ports, keeps its state in a temp directory and is stopped by `close()`; only processes started
// here are ever signalled.
//
// NATS's MQTT listener maps topic `devices/x/telemetry` to subject `devices.x.telemetry`; its own
// `$MQTT_*` streams only hold session state, so a stream `DEVICES` on `devices.>` stores what arrives.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { freePort, natsBin, startFerry, startProc, tempDir, waitPort } from './lib.js'
import type { Proc } from './lib.js'

/** Stream that stores what devices publish through NATS's MQTT listener (directly or via the bridge). */
export const DEVICES_STREAM = 'DEVICES'

/** A nats-server with JetStream (and optionally its MQTT listener) that can be stopped and started again on the same ports and store. */
export interface RestartableNats {
  readonly url: string
  readonly port: number
  /** Port of the MQTT listener (0 without one). */
  readonly mqttPort: number
  readonly dir: string
  /** The running server process (undefined while stopped). */
  proc(): Proc | undefined
  /** Starts it again (same config, ports and store); resolves once both listeners accept connections. */
  start(): Promise<void>
  /** SIGTERM, then SIGKILL after 15 s. */
  stop(): Promise<void>
  /** Stops it and removes its directory. Idempotent. */
  close(): Promise<void>
}

export async function startRestartableNats(opts: { mqtt: boolean }): Promise<RestartableNats> {
  const port = await freePort()
  const mqttPort = opts.mqtt ? await freePort() : 0
  const dir = tempDir('ferry-bench-nats-')
  const conf = path.join(dir, 'nats.conf')
  // server_name is required once the mqtt block is present.
  fs.writeFileSync(
    conf,
    ['server_name: bench', `listen: 127.0.0.1:${port}`, `jetstream { store_dir: "${path.join(dir, 'js')}" }`, mqttPort ? `mqtt { listen: 127.0.0.1:${mqttPort} }` : '', ''].join('\n'),
  )
  let proc: Proc | undefined
  const start = async (): Promise<void> => {
    if (proc) return
    const p = startProc(natsBin(), ['-c', conf])
    proc = p
    try {
      await waitPort(port)
      if (mqttPort) await waitPort(mqttPort)
    } catch (err) {
      await p.stop('SIGKILL')
      proc = undefined
      throw new Error(`nats-server did not start: ${(err as Error).message}\n${p.output().slice(-2000)}`)
    }
  }
  const stop = async (): Promise<void> => {
    const p = proc
    proc = undefined
    await p?.stop()
  }
  await start()
  let closed = false
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    mqttPort,
    dir,
    proc: () => proc,
    start,
    stop,
    async close() {
      if (closed) return
      closed = true
      await stop()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** The subject NATS's MQTT listener gives a topic filter's messages: `devices/#` → `devices.>`, `+` → `*`. */
export function natsMqttSubject(filter: string): string {
  return filter
    .split('/')
    .map((l) => (l === '#' ? '>' : l === '+' ? '*' : l))
    .join('.')
}

/** Creates the DEVICES stream on `devices.>` (or on the subjects of `topics`; file storage, server defaults otherwise). */
export async function addDevicesStream(url: string, topics: readonly string[] = ['devices/#']): Promise<void> {
  const nc = await connect({ servers: url })
  try {
    await (await jetstreamManager(nc)).streams.add({ name: DEVICES_STREAM, subjects: topics.map(natsMqttSubject) })
  } finally {
    await nc.close()
  }
}

/**
 * How Mosquitto is configured:
 * - `defaults`: Mosquitto's queue, in-flight and socket defaults (`max_queued_messages 1000`,
 *   `max_inflight_messages 20`, `set_tcp_nodelay false`). Beyond 1,000 messages queued for the
 *   bridge, Mosquitto drops new ones silently, after it has already sent PUBACK to the device.
 * - `tuned`: `max_queued_messages 0` (unlimited, held in memory), `max_inflight_messages 1000`,
 *   `set_tcp_nodelay true` (without it, Nagle's algorithm against the client's delayed ACKs holds
 *   Mosquitto's PUBACKs back: ~11 ms p50 at 100 msg/s per device).
 */
export type MosquittoVariant = 'defaults' | 'tuned'

/** Configuration lines that differ between the variants. */
export const MOSQUITTO_VARIANT_CONFIG: Record<MosquittoVariant, readonly string[]> = {
  defaults: [],
  tuned: ['max_queued_messages 0', 'max_inflight_messages 1000', 'set_tcp_nodelay true'],
}

export interface MosquittoBridge {
  readonly proc: Proc
  readonly mqttPort: number
  readonly variant: MosquittoVariant
  /** The full mosquitto.conf used. */
  readonly config: string
  /** Number of times the log shows the bridge connecting to NATS. */
  bridgeConnects(): number
  /** Stops Mosquitto and removes its directory. Idempotent. */
  close(): Promise<void>
}

export function mosquittoBin(): string {
  for (const p of ['/usr/sbin/mosquitto', '/usr/bin/mosquitto', '/usr/local/sbin/mosquitto']) if (fs.existsSync(p)) return p
  throw new Error('mosquitto is not installed: apt-get update && apt-get install -y mosquitto')
}

export function mosquittoVersion(): string {
  try {
    // `mosquitto -h` prints the version on its first line and exits non-zero.
    execFileSync(mosquittoBin(), ['-h'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] })
  } catch (err) {
    const out = String((err as { stdout?: string }).stdout ?? '')
    const m = /mosquitto version (\S+)/.exec(out)
    if (m) return `mosquitto ${m[1]}`
  }
  return 'unknown'
}

/**
 * Mosquitto on a free loopback port, persistence on (temp `persistence_location`, default
 * `autosave_interval` of 1800 s), bridging `devices/#` (or `topics`) at QoS 1 to NATS's MQTT listener.
 * `cleansession false` keeps the bridge's queue across link drops (with `true`, Mosquitto also
 * cleans the local session of the bridge when the link drops); `try_private false` because NATS
 * refuses the bridge flag; `restart_timeout 1 2` (jittered backoff between 1 and 2 s) so a returning
 * upstream is found within ~2 s: Mosquitto's default is 5–30 s, and the constant form
 * `restart_timeout 1` was seen retrying only every ~5 s with Mosquitto 2.0.11.
 * `logEveryPacket` adds `log_type all` (debugging).
 */
export async function startMosquittoBridge(opts: { variant: MosquittoVariant; natsMqttPort: number; logEveryPacket?: boolean; topics?: readonly string[] }): Promise<MosquittoBridge> {
  const mqttPort = await freePort()
  const dir = tempDir('ferry-bench-mosquitto-')
  const conf = path.join(dir, 'mosquitto.conf')
  const config = [
    `listener ${mqttPort} 127.0.0.1`,
    'allow_anonymous true',
    'persistence true',
    `persistence_location ${dir}/`,
    // Started as root, Mosquitto would switch to user mosquitto, who cannot write the temp dir.
    ...(process.getuid?.() === 0 ? ['user root'] : []),
    'log_dest stderr',
    'log_type error',
    'log_type warning',
    'log_type notice',
    'log_type information',
    ...(opts.logEveryPacket ? ['log_type all'] : []),
    ...MOSQUITTO_VARIANT_CONFIG[opts.variant],
    '',
    'connection nats',
    `address 127.0.0.1:${opts.natsMqttPort}`,
    'remote_clientid ferry-bench-bridge',
    ...(opts.topics ?? ['devices/#']).map((t) => `topic ${t} out 1`),
    `topic ${PROBE_TOPIC.split('/')[0]}/# out 1`,
    'try_private false',
    'cleansession false',
    'bridge_protocol_version mqttv311',
    'restart_timeout 1 2',
    '',
  ].join('\n')
  fs.writeFileSync(conf, config)
  const proc = startProc(mosquittoBin(), ['-c', conf])
  try {
    await waitPort(mqttPort)
  } catch (err) {
    await proc.stop('SIGKILL')
    throw new Error(`mosquitto did not start: ${(err as Error).message}\n${proc.output().slice(-2000)}`)
  }
  let closed = false
  return {
    proc,
    mqttPort,
    variant: opts.variant,
    config,
    bridgeConnects: () => (proc.output().match(/Connecting bridge nats/g) ?? []).length,
    async close() {
      if (closed) return
      closed = true
      await proc.stop()
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
}

/** Topic prefix the bridge also forwards (outside `devices/#`, so probes never land in the DEVICES stream). */
const PROBE_TOPIC = 'ferry-bench-probe/bridge'

/**
 * Resolves once a QoS 1 probe published to Mosquitto has crossed the bridge and reached NATS
 * (so the bridge is connected end to end); throws after `ms`.
 */
export async function waitBridgeConnected(bridge: MosquittoBridge, natsUrl: string, ms = 15_000): Promise<void> {
  const { connectAsync } = await import('mqtt')
  const nc = await connect({ servers: natsUrl })
  const client = await connectAsync(`mqtt://127.0.0.1:${bridge.mqttPort}`, { clientId: `probe-${process.pid}`, clean: true, reconnectPeriod: 0 })
  try {
    const arrived = new Promise<void>((resolve) => {
      nc.subscribe(PROBE_TOPIC.replaceAll('/', '.'), { max: 1, callback: () => resolve() })
    })
    await nc.flush()
    const until = performance.now() + ms
    for (;;) {
      await client.publishAsync(PROBE_TOPIC, 'probe', { qos: 1 })
      const ok = await Promise.race([arrived.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), 250))])
      if (ok) return
      if (performance.now() > until) throw new Error(`mosquitto bridge did not deliver a probe within ${ms} ms\n${bridge.proc.output().slice(-2000)}`)
    }
  } finally {
    await client.endAsync()
    await nc.close()
  }
}

/**
 * An edge broker in front of a restartable nats-server (stopped and started again for an outage): Ferry, or Mosquitto
 * bridged to NATS's MQTT listener. Used by drain.ts and priority.ts.
 */
export interface Edge {
  readonly nats: RestartableNats
  readonly mqttPort: number
  /** The edge process (Ferry or Mosquitto). */
  readonly proc: Proc
  /** Stream that stores what devices publish. */
  readonly stream: string
  /** What precedes a topic's levels in the stored subjects: `ferry.up.` (Ferry) or `` (NATS's MQTT listener). */
  readonly subjectPrefix: string
  close(): Promise<void>
}

/**
 * The bundled gateway (`--log-max-bytes 4GiB` and `args`) in front of a nats-server without MQTT; resolves once the
 * gateway has created its stream (upstream is up at the start; the outage comes after).
 */
export async function startFerryEdge(args: readonly string[] = []): Promise<Edge> {
  const nats = await startRestartableNats({ mqtt: false })
  const dataDir = tempDir('ferry-bench-drain-')
  try {
    const ferry = await startFerry(['--nats-url', nats.url, '--data-dir', dataDir, '--log-max-bytes', '4GiB', ...args])
    for (let i = 0; i < 200 && !ferry.proc.output().includes('created JetStream stream'); i++) await new Promise((r) => setTimeout(r, 50))
    return {
      nats,
      mqttPort: ferry.mqttPort,
      proc: ferry.proc,
      stream: 'FERRY',
      subjectPrefix: 'ferry.up.',
      async close() {
        await ferry.proc.stop()
        await nats.close()
        fs.rmSync(dataDir, { recursive: true, force: true })
      },
    }
  } catch (err) {
    await nats.close()
    fs.rmSync(dataDir, { recursive: true, force: true })
    throw err
  }
}

/** Mosquitto (`variant`) bridging `topics` (default `devices/#`) to NATS's MQTT listener, the DEVICES stream on them, the bridge connected end to end. */
export async function startMosquittoEdge(variant: MosquittoVariant, topics: readonly string[] = ['devices/#']): Promise<Edge> {
  const nats = await startRestartableNats({ mqtt: true })
  let bridge: MosquittoBridge | undefined
  try {
    await addDevicesStream(nats.url, topics)
    bridge = await startMosquittoBridge({ variant, natsMqttPort: nats.mqttPort, topics })
    await waitBridgeConnected(bridge, nats.url)
    const b = bridge
    return {
      nats,
      mqttPort: b.mqttPort,
      proc: b.proc,
      stream: DEVICES_STREAM,
      subjectPrefix: '',
      async close() {
        await b.close()
        await nats.close()
      },
    }
  } catch (err) {
    await bridge?.close()
    await nats.close()
    throw err
  }
}
