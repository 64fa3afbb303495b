// An in-process MqttCore (src/ingress/aedes-seam.ts) with clients on in-memory streams (no sockets)
// that send and read raw MQTT packets (mqtt-packet), for the unit tests of the seam.
import { Duplex, PassThrough } from 'node:stream'
import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'
import { MqttCore } from '../../src/ingress/aedes-seam.js'
import type { CoreHooks, MqttClientRef, SessionEndReason } from '../../src/ingress/aedes-seam.js'
import { frameCheck } from '../../src/ingress/limits.js'
import { packetLog } from './packets.js'

export interface Peer {
  readonly got: Packet[]
  /** Wire size of each packet in `got` (fixed header + remaining length), by index. */
  readonly bytes: number[]
  readonly conn: Duplex
  send(p: Packet): void
  /** Sends raw bytes to the broker. */
  raw(b: Buffer): void
  /** Resolves with the first packet received (from now or before) that `match` accepts. */
  next(match: (p: Packet) => boolean, ms?: number): Promise<Packet>
  close(): void
}

/** A connection to `core` over in-memory streams, behind the frame guard (`maxPacketBytes`). */
export function open(core: MqttCore, maxPacketBytes = 1 << 20, onViolation: (why: string) => void = () => {}, protocolVersion: 4 | 5 = 4): { peer: Peer; client: MqttClientRef } {
  const toBroker = new PassThrough()
  const fromBroker = new PassThrough()
  const conn = Duplex.from({ readable: toBroker, writable: fromBroker })
  const bytes: number[] = []
  const log = packetLog(protocolVersion, 2000, (p) => bytes.push(mqttPacket.generate(p, { protocolVersion }).length))
  fromBroker.on('data', (b: Buffer) => log.parse(b))
  const peer: Peer = {
    got: log.got,
    bytes,
    conn,
    send: (p) => void toBroker.write(mqttPacket.generate(p, { protocolVersion })),
    raw: (b) => void toBroker.write(b),
    next: log.next,
    close: () => void conn.destroy(),
  }
  const client = core.attach(conn, frameCheck(maxPacketBytes), (why) => onViolation(why))
  return { peer, client }
}

/** Opens a connection, sends CONNECT and resolves after the CONNACK (and the SUBACK when subscribing). */
export async function connect(core: MqttCore, clientId: string, clean: boolean, subscribe: string[] = [], extra: Partial<mqttPacket.IConnectPacket> = {}): Promise<{ peer: Peer; client: MqttClientRef }> {
  const version = extra.protocolVersion === 5 ? 5 : 4
  const { peer, client } = open(core, 1 << 20, () => {}, version)
  peer.send({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId, clean, keepalive: 0, ...extra })
  await peer.next((p) => p.cmd === 'connack')
  if (subscribe.length > 0) {
    peer.send({ cmd: 'subscribe', messageId: 1, subscriptions: subscribe.map((topic) => ({ topic, qos: 1 as const })) })
    await peer.next((p) => p.cmd === 'suback')
  }
  return { peer, client }
}

/** The PUBLISHes `peer` has received: topic and packet id. */
export const publishes = (peer: Peer): { topic: string; messageId: number | undefined }[] =>
  peer.got.filter((p): p is mqttPacket.IPublishPacket => p.cmd === 'publish').map((p) => ({ topic: p.topic, messageId: p.messageId }))

/** Resolves with the reason once `client` is reported disconnected. */
export const gone = (core: MqttCore, client: MqttClientRef): Promise<SessionEndReason> => new Promise((r) => core.on('disconnected', (c, reason) => c === client && r(reason)))

/** Hooks that allow everything. */
export const allow: CoreHooks = {
  authenticate: (_c, _u, _p, _k, done) => done(null),
  authorizePublish: (_c, _p, _w, done) => done(null),
  authorizeSubscribe: (_c, _t, done) => done(null, true),
  mayForward: () => true,
}

/** Creates cores with the test limits (`hooks` over `allow`) and closes all it created with `closeAll`. */
export function coreFactory(onListenerError: (event: string, client: MqttClientRef, err: unknown) => void = () => {}): {
  create: (hooks?: Partial<CoreHooks>, maxInflightIn?: number, drainTimeoutMs?: number) => Promise<MqttCore>
  closeAll: () => Promise<void>
} {
  const cores: MqttCore[] = []
  return {
    create: async (hooks = {}, maxInflightIn = 100, drainTimeoutMs = 5000) => {
      const core = await MqttCore.create(
        { maxClientIdLength: 255, connectTimeoutMs: 5000, maxTopicLevels: 16, maxInflightIn, drainTimeoutMs, maxPacketBytes: 1 << 20, topicAliasMaximum: 10, maxSessionExpirySec: 3600, maxKeepaliveSec: 60, onListenerError },
        { ...allow, ...hooks },
      )
      cores.push(core)
      return core
    },
    closeAll: async () => {
      await Promise.all(cores.splice(0).map((c) => c.close()))
    },
  }
}
