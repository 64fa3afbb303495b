// MQTT ingress: the MQTT core (aedes, behind aedes-seam.ts) on TCP and TLS listeners, whose publishes
// are stored in the log before they are acknowledged.
//
// Where a PUBACK is decided: `authorizePublish` below. The core calls it before it writes PUBACK
// (QoS 1) or PUBREC (QoS 2), and holds the acknowledgement until our callback runs. We append there
// and call back once the append is stored under the fsync policy. Appends are queued in call order,
// and the core calls the hook in packet order, so each client's publishes keep their order in the log.
//
// Buffer policy (issue 16), decided in the same place: `route` names the class log of the topic and
// its --ttl (the record's expiry is the earlier of its MQTT 5 Message Expiry and receive time + TTL);
// a device at or over its fair share (shares.ts) has its new publishes refused before anything is
// appended; the device's rate buckets (device-rate.ts) refuse past --device-hard-rate, or give the
// time at which the stored publish's PUBACK/PUBREC may go (QoS 0: the connection is read again).
import { isUtf8 } from 'node:buffer'
import net from 'node:net'
import tls from 'node:tls'
import type { Config } from '../config/index.js'
import { encodeEntry, encodePayload, encodingOf, propertiesBlockBytes, propertyHeaderBytes } from '../codec/index.js'
import type { MessageProperties, PayloadPolicy } from '../codec/index.js'
import { FerryError } from '../errors.js'
import { ClosedSignal, deadlineIn, remainingMs } from '../lifecycle.js'
import type { Component, Deadline } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import { CONNACK, MqttCore, REASON } from './aedes-seam.js'
import type { ConnectRefusal, MqttClientRef, PublishProperties, PublishRefusal, PublishRequest } from './aedes-seam.js'
import { Devices } from './devices.js'
import type { IngressMetrics } from './metrics.js'
import { ConnectionLimiter, HandshakeLimiter, frameCheck } from './limits.js'
import { retransmitHash } from './retransmits.js'
import type { RetransmitIndex } from './retransmits.js'
import type { PubackGate } from './slowdown.js'
import { DeviceRates } from './device-rate.js'
import type { DeviceShares } from './shares.js'

/** What ingress needs from the log: an ordered, durable append. */
export interface Appender {
  append(body: Uint8Array): Promise<number>
  /** Bytes appended and not yet written. */
  readonly pendingAppendBytes: number
}

/** A class log as ingress needs it: an appender whose acknowledged position releases device shares. */
export interface ClassLog extends Appender {
  /** Every seq <= acked is acknowledged upstream (or expired, or evicted). */
  readonly acked: number
}

/** Where a device publish on a topic goes: the log of its priority class, and its --ttl. */
export interface PublishRoute {
  readonly log: ClassLog
  /** The class name (the `class` label with IngressOptions.classLabels; the key of the device shares). */
  readonly className: string
  /** --ttl of the topic in ms; 0 = none. */
  readonly ttlMs: number
}

/** What ingress needs from admission (src/auth's Admission): who may connect, publish, subscribe, receive. */
export interface AdmissionPolicy {
  /** Decides a CONNECT: `done(null)` admits, `done(refusal)` refuses with that CONNACK code (MQTT 5: reason code and Reason String). */
  authenticate(client: MqttClientRef, username: string | undefined, password: Buffer | undefined, done: (refusal: ConnectRefusal | null) => void): void
  mayPublish(client: MqttClientRef | null, topic: string): boolean
  maySubscribe(client: MqttClientRef, topic: string): boolean
  mayReceive(client: MqttClientRef, topic: string): boolean
  /** An MQTT 5 session of `clientId` expired: nothing of it remains to protect. */
  sessionExpired?(clientId: string): void
}

/** The protective limits of the MQTT listeners (see the --max-* options; keepalive in seconds, 0 = no bound). */
export type IngressLimits = Config['limits']

/** Options of the MQTT ingress. */
export interface IngressOptions {
  readonly host: string
  /** TCP port; 0 picks a free one. */
  readonly port: number
  /** The MQTT-over-TLS listener, if any. */
  readonly tls?: { readonly host: string; readonly port: number; readonly options: tls.TlsOptions }
  readonly admission: AdmissionPolicy
  readonly limits: IngressLimits
  /** Encodes payloads for upstream (JSON to CBOR) before they are stored. */
  readonly payloads: PayloadPolicy
  /** Largest stored entry (topic + client id + encoded payload + 7 bytes); bigger publishes are refused. */
  readonly maxEntryBytes: number
  /** Memory of stored publishes, to recognise retransmissions (filled from the log's tail before listening). */
  readonly retransmits: RetransmitIndex
  /** Above this many bytes waiting to be written, QoS 0 publishes also wait for their append (backpressure). */
  readonly maxPendingBytes: number
  readonly logger: Logger
  readonly metrics: IngressMetrics
  /** Where device publishes are stored when there is no `route`. */
  readonly log: Appender
  /**
   * The --max-forward-lag slow-down (slowdown.ts): while it is slowing, the acknowledgement of a
   * stored QoS 1/2 publish is held there. Ingress closes it when it stops.
   */
  readonly gate?: PubackGate
  /**
   * Where a device publish on `topic` is stored (its class log) and its --ttl. Absent: `log`, class
   * 'normal', no TTL (as before issue 16). Called once per publish: keep it cheap (TopicPolicy memoises).
   */
  readonly route?: (topic: string) => PublishRoute
  /** Every ferry_drops_total increment for a device publish carries `class` (the route's class) too. */
  readonly classLabels?: boolean
  /**
   * Fair shares (--device-max-bytes): charged with every stored device publish; a device at or over
   * its share has its new publishes refused (reason device_quota). The gateway seeds it from the logs.
   */
  readonly shares?: DeviceShares
  /** --device-max-rate, publishes/s per device: acknowledgements held back beyond it (0 or absent: off). */
  readonly deviceMaxRate?: number
  /**
   * --device-hard-rate, publishes/s per device (0 or absent: off). Beyond it an MQTT 5 QoS 1/2 publish
   * is not stored and the device gets DISCONNECT 0x96 Message rate too high (a PUBACK cannot carry
   * 0x96); QoS 0 publishes are dropped; MQTT 3.1.1 QoS 1/2 are held back instead.
   */
  readonly deviceHardRate?: number
}

/**
 * Longest client id, in UTF-8 bytes: a log entry stores its length in one byte (codec/entry.ts).
 * aedes' own `maxClientsIdLength` counts UTF-16 units, so 130 × "é" (260 bytes) would pass it.
 */
export const MAX_CLIENT_ID_BYTES = 255

/** How long a listener stops accepting after an accept failed for lack of descriptors (EMFILE/ENFILE). */
export const ACCEPT_PAUSE_MS = 1000

/**
 * Idle time before the kernel probes an MQTT socket (TCP keepalive, on for every connection). It
 * finds a half-open connection of a device with keepalive 0, which MQTT keepalive never would:
 * Node (libuv) then probes every second and gives up after 10 unanswered probes.
 */
export const TCP_KEEPALIVE_MS = 60_000

/**
 * What the MQTTS listener offers unless its TLS options say otherwise: TLS 1.3's suites (all AEAD)
 * and, for TLS 1.2, only ECDHE key exchange with AES-GCM or ChaCha20-Poly1305 (forward secrecy,
 * no CBC, no RSA key transport). Node applies the `TLS_*` names to TLS 1.3 and the rest to 1.2.
 */
export const MQTTS_CIPHERS = [
  'TLS_AES_128_GCM_SHA256',
  'TLS_AES_256_GCM_SHA384',
  'TLS_CHACHA20_POLY1305_SHA256',
  'ECDHE-ECDSA-AES128-GCM-SHA256',
  'ECDHE-RSA-AES128-GCM-SHA256',
  'ECDHE-ECDSA-AES256-GCM-SHA384',
  'ECDHE-RSA-AES256-GCM-SHA384',
  'ECDHE-ECDSA-CHACHA20-POLY1305',
  'ECDHE-RSA-CHACHA20-POLY1305',
].join(':')

/** Why a publish was refused (label of ferry_mqtt_refused_total). */
const MALFORMED_TOPIC = /[\u0000\uFFFD]/

type RefuseReason = 'malformed' | 'sys_topic' | 'too_large' | 'topic_too_long' | 'acl' | 'log_full' | 'log_error' | 'payload_format' | 'internal_error' | 'device_quota' | 'rate_limited'

function refusalReason(err: unknown): RefuseReason {
  return (err as { code?: string }).code === 'FERRY_ERR_LOG_FULL' ? 'log_full' : 'log_error'
}

/**
 * What a device is told for each refusal (README, "Refusals"). MQTT 5: the PUBACK/PUBREC reason code
 * (only success means stored; never 0x10) and a generic Reason String. MQTT 3.1.1: a refusal by
 * policy follows --refused-publish (default: acknowledged and dropped, so the device is not wedged
 * resending it); the others close the connection without an acknowledgement, as before (a full log
 * under --discard new: the device resends later).
 */
const REFUSALS: Record<RefuseReason, { reasonCode: number; reasonString: string; policy: boolean; v5Disconnect?: boolean }> = {
  sys_topic: { reasonCode: REASON.TOPIC_NAME_INVALID, reasonString: 'topic name invalid', policy: true },
  topic_too_long: { reasonCode: REASON.TOPIC_NAME_INVALID, reasonString: 'topic name invalid', policy: true },
  acl: { reasonCode: REASON.NOT_AUTHORIZED, reasonString: 'not authorized', policy: true },
  malformed: { reasonCode: REASON.MALFORMED_PACKET, reasonString: 'malformed packet', policy: false, v5Disconnect: true },
  payload_format: { reasonCode: REASON.PAYLOAD_FORMAT_INVALID, reasonString: 'payload format invalid', policy: false },
  // Refused every time it is sent: a 3.1.1 device resending it after each reconnect would be wedged.
  too_large: { reasonCode: REASON.IMPLEMENTATION_SPECIFIC_ERROR, reasonString: 'message too large to store', policy: true },
  log_full: { reasonCode: REASON.QUOTA_EXCEEDED, reasonString: 'quota exceeded, retry later', policy: false },
  log_error: { reasonCode: REASON.UNSPECIFIED_ERROR, reasonString: 'not stored', policy: false },
  internal_error: { reasonCode: REASON.UNSPECIFIED_ERROR, reasonString: 'not stored', policy: false },
  // Refused like a full log under --discard new (3.1.1: no PUBACK, the connection closes; the device resends later).
  device_quota: { reasonCode: REASON.QUOTA_EXCEEDED, reasonString: 'quota exceeded, retry later', policy: false },
  // Only MQTT 5 QoS 1/2 publishes are refused for their rate (3.1.1 ones are held back instead).
  // 0x96 Message rate too high is a DISCONNECT reason code only (MQTT 5.0 §3.14.2.1; PUBACK/PUBREC
  // cannot carry it): the connection ends, the publish unacknowledged, and the device resends it later.
  rate_limited: { reasonCode: REASON.MESSAGE_RATE_TOO_HIGH, reasonString: 'message rate too high', policy: false, v5Disconnect: true },
}

/** How often a refusal acknowledged and dropped is logged, per reason (the others are counted in between). */
export const REFUSED_LOG_INTERVAL_MS = 10_000

/** The MQTT 5 properties of a PUBLISH that Ferry keeps (codec's MessageProperties), or undefined. */
export function messageProperties(p: PublishProperties | undefined, nowMs: number): MessageProperties | undefined {
  if (!p) return undefined
  const out: { -readonly [K in keyof MessageProperties]: MessageProperties[K] } = {}
  if (p.messageExpiryInterval !== undefined) out.expiresAtMs = nowMs + p.messageExpiryInterval * 1000
  if (p.contentType !== undefined) out.contentType = p.contentType
  if (p.payloadFormatIndicator === true) out.utf8 = true
  if (p.userProperties !== undefined) {
    // mqtt-packet groups repeated names (in order of first appearance, values in order): the pairs
    // come out name by name. The order across different names is kept; their interleaving is not.
    const pairs: [string, string][] = []
    for (const [name, value] of Object.entries(p.userProperties)) {
      for (const v of Array.isArray(value) ? value : [value]) pairs.push([name, String(v)])
    }
    if (pairs.length > 0) out.userProperties = pairs
  }
  if (p.responseTopic !== undefined) out.responseTopic = p.responseTopic
  if (p.correlationData !== undefined) out.correlationData = p.correlationData
  return Object.keys(out).length > 0 ? out : undefined
}

/** `p` with the record's expiry brought forward to `expiresAtMs` (an earlier MQTT 5 Message Expiry wins). */
export function withExpiry(p: MessageProperties | undefined, expiresAtMs: number): MessageProperties {
  if (p?.expiresAtMs !== undefined && p.expiresAtMs <= expiresAtMs) return p
  return { ...p, expiresAtMs }
}

/**
 * The CRCs of the other forms a payload may have been stored in: before a restart with other --cbor
 * or --raw-topics settings, as sent or as CBOR (RetransmitIndex.find calls it, rarely).
 */
function otherForms(topic: string, payload: Uint8Array): number[] {
  return [retransmitHash(topic, payload), retransmitHash(topic, encodePayload(payload, true).data)]
}

/** Lets acknowledgements just released reach their sockets: the microtasks and ticks that write them, twice over. */
async function releasedWritten(): Promise<void> {
  for (let i = 0; i < 2; i++) await new Promise<void>((resolve) => setImmediate(resolve))
}

/** How long a close without a deadline gives the clients to be closed before their sockets are destroyed. */
export const DEFAULT_CLOSE_MS = 10_000

export class Ingress implements Component {
  private stopping = false
  private closing: Promise<void> | undefined
  private readonly stopped = new ClosedSignal()
  /** Timers of listeners pausing for lack of descriptors (cleared on close). */
  private readonly timers = new Set<NodeJS.Timeout>()
  /** The listeners' bound addresses (kept: a listener pausing for lack of descriptors has none). */
  private readonly bound: { host: string; port: number }[] = []
  private readonly connIds = new WeakMap<MqttClientRef, number>()
  /** Filters granted and perhaps not yet stored in the client's session (see authorizeSubscribe). */
  private readonly granting = new WeakMap<MqttClientRef, Set<string>>()
  private readonly receivedByQos: { inc(n?: number): void }[]
  private readonly receivedBytesByQos: { inc(n?: number): void }[]
  private lastConnId = 0
  /** Who is connected; delivery of commands and RPC requests. */
  readonly devices: Devices
  /**
   * Publishes answered inside the gateway instead of being stored (RPC responses): returns true
   * when it took the publish, which is then acknowledged once `handled` resolves.
   */
  intercept: ((client: MqttClientRef, topic: string, payload: Buffer, properties?: PublishProperties) => Promise<void> | undefined) | undefined
  /** Where device publishes go (IngressOptions.route, or the one log). */
  private readonly route: (topic: string) => PublishRoute
  /** --device-max-rate / --device-hard-rate; undefined when both are off. */
  private readonly rates: DeviceRates | undefined

  private constructor(
    private readonly opts: IngressOptions,
    private readonly core: MqttCore,
    private readonly servers: readonly net.Server[],
    private readonly sockets: Set<net.Socket>,
  ) {
    this.receivedByQos = [0, 1, 2].map((q) => opts.metrics.mqttReceived.child({ qos: String(q) }))
    if (opts.route) this.route = opts.route
    else {
      const only: PublishRoute = { log: opts.log as ClassLog, className: 'normal', ttlMs: 0 }
      this.route = () => only
    }
    const rates = new DeviceRates({ maxRate: opts.deviceMaxRate ?? 0, hardRate: opts.deviceHardRate ?? 0, metrics: opts.metrics })
    this.rates = rates.enabled ? rates : undefined
    const shares = opts.shares
    if (shares) {
      opts.metrics.deviceShareMaxBytes?.collect(() => {
        shares.release()
        return shares.largest()?.bytes ?? 0
      })
      opts.metrics.deviceShareDevices?.collect(() => shares.devices)
    }
    this.receivedBytesByQos = [0, 1, 2].map((q) => opts.metrics.mqttReceivedBytes.child({ qos: String(q) }))
    this.devices = new Devices(core, (client, topic) => opts.admission.mayReceive(client, topic))
    // A device that sent DISCONNECT had its PUBACKs: what it sent is not resent without DUP (retransmits.ts).
    this.devices.on('offline', (info, reason) => {
      if (reason === 'clean') opts.retransmits.ended(info.clientId)
    })
  }

  private get retransmits(): RetransmitIndex {
    return this.opts.retransmits
  }

  /** Creates the broker and listens. Rejects with FERRY_ERR_INGRESS_LISTEN when the address cannot be bound. */
  static async start(opts: IngressOptions): Promise<Ingress> {
    let self: Ingress | undefined
    const { admission, limits, metrics, logger } = opts
    const core = await MqttCore.create(
      {
        maxClientIdLength: 255,
        connectTimeoutMs: limits.connectTimeoutMs,
        maxTopicLevels: limits.maxTopicLevels,
        maxInflightIn: limits.maxInflightIn,
        maxPacketBytes: limits.maxPacketBytes,
        topicAliasMaximum: limits.maxTopicAlias,
        maxSessionExpirySec: limits.maxSessionExpiry,
        maxKeepaliveSec: limits.maxKeepalive,
        drainTimeoutMs: limits.drainTimeoutMs,
        // Whatever a listener does on behalf of one client (presence events, device registry, downlink)
        // may fail for that client only: it is disconnected, the gateway and the other devices go on.
        onListenerError: (event, client, err) => self?.hookFailed(`event ${event}`, client, err),
      },
      {
        authenticate: (client, username, password, keepaliveSec, done) => {
          // Not aedes' keepaliveLimit: it answers CONNACK 6, which MQTT 3.1.1 does not define. Like
          // Mosquitto, a non-zero keepalive above the bound gets "identifier rejected" (2).
          // Keepalive 0 is allowed by MQTT and the default of Paho and many embedded stacks: it is
          // accepted, and TCP keepalive (TCP_KEEPALIVE_MS) detects a dead peer. An MQTT 5 client is
          // never refused for its keepalive: the core gives it Server Keep Alive = the bound.
          if (client.protocolVersion !== 5 && keepaliveSec !== undefined && limits.maxKeepalive > 0 && keepaliveSec > limits.maxKeepalive) {
            metrics.mqttLimits.inc(1, { limit: 'keepalive' })
            logger.info('connection refused: keepalive out of bounds (--max-keepalive)', { clientId: client.id, max: limits.maxKeepalive })
            return done(CONNACK.IDENTIFIER_REJECTED)
          }
          // Checked here, before the client id is stored anywhere (sessions, log entries, events).
          const idBytes = Buffer.byteLength(client.id)
          if (idBytes > MAX_CLIENT_ID_BYTES) {
            metrics.mqttLimits.inc(1, { limit: 'client_id_bytes' })
            logger.info('connection refused: client id too long', { clientIdPrefix: client.id.slice(0, 32), bytes: idBytes, max: MAX_CLIENT_ID_BYTES })
            return done(CONNACK.IDENTIFIER_REJECTED)
          }
          try {
            admission.authenticate(client, username, password, done)
          } catch (err) {
            self?.hookFailed('authenticate', client, err)
            done(CONNACK.SERVER_UNAVAILABLE)
          }
        },
        // A throw in a hook would end the process with every client: refuse that one client instead.
        authorizePublish: (client, publish, isWill, done) => {
          if (!self) return done(new Error('starting'))
          try {
            self.authorizePublish(client, publish, isWill, done)
          } catch (err) {
            self.hookFailed('authorizePublish', client, err)
            done({ ...REFUSALS.internal_error, v3: 'disconnect' })
          }
        },
        // Every message the core sends a client (subscriptions, retained, a persistent session's
        // queue, commands and RPC requests) is checked against the ACL in force now: a reload revokes.
        mayForward: (client, topic) => {
          try {
            return admission.mayReceive(client, topic)
          } catch (err) {
            self?.hookFailed('authorizeForward', client, err)
            return false
          }
        },
        authorizeSubscribe: (client, topic, done) => {
          if (!self) return done(new Error('starting'), false)
          try {
            self.authorizeSubscribe(client, topic, done)
          } catch (err) {
            self.hookFailed('authorizeSubscribe', client, err)
            done(null, false)
          }
        },
      },
    )
    const sockets = new Set<net.Socket>()
    const limiter = new ConnectionLimiter(limits.maxConnections, limits.connectionRate, limits.connectionRatePerAddress)
    /** Counts a new TCP connection (before any TLS handshake) and closes it at once when a limit says so. */
    const admit = (socket: net.Socket): boolean => {
      sockets.add(socket)
      socket.once('close', () => sockets.delete(socket))
      const refused = limiter.refuse(socket.remoteAddress ?? '', sockets.size)
      if (!refused) return true
      metrics.mqttLimits.inc(1, { limit: refused })
      socket.destroy()
      return false
    }
    /** Hands an admitted connection (plain, or TLS after its handshake) to aedes behind the frame guard. */
    const attach = (socket: net.Socket): void => {
      // Small packets (PUBACK, commands, RPC) go out at once instead of waiting on Nagle's algorithm.
      socket.setNoDelay(true)
      // Half-open connections of devices with keepalive 0 (or a long one) are found by the kernel.
      socket.setKeepAlive(true, TCP_KEEPALIVE_MS)
      core.attach(
        socket,
        frameCheck(limits.maxPacketBytes),
        (why, client) => {
          metrics.mqttLimits.inc(1, { limit: 'packet_size' })
          logger.info('connection closed: packet refused before buffering', { clientId: client.id ?? null, address: socket.remoteAddress, why })
        },
        // --device-max-rate: while a client's answers are held, its socket is not read on (the pause).
        opts.deviceMaxRate || opts.deviceHardRate ? (client) => self?.rates?.holds(client) === true : undefined,
      )
    }
    const servers: net.Server[] = [net.createServer((socket) => admit(socket) && attach(socket))]
    if (opts.tls) {
      // The TLS server never listens itself: a plain listener admits each raw connection (the
      // connection limits, then the handshake limits) and only then hands it to the TLS server.
      // A refused connection so costs an accept and a close, no TLS state and no key exchange
      // (the ClientHello has not been read). A handshake must finish within the CONNECT timeout;
      // a failed one is counted and its socket closed (Node leaves it open when there is a
      // tlsClientError listener). One in progress ends when it completes, or when its raw socket
      // closes before that or it is evicted as the oldest beyond --max-tls-handshakes. A handshake
      // that failed (protocol error, bad or missing certificate) or that its client abandoned costs
      // its address extra; one Ferry evicted (a slow honest device amid a flood) does not.
      const handshakes = new HandshakeLimiter(limits.maxTlsHandshakes, limits.tlsHandshakeRatePerAddress)
      const handshaking = new Map<string, { readonly raw: net.Socket; end(penalty: boolean): void }>()
      const secured = (socket: tls.TLSSocket): void => {
        if (handshaking.delete(`${socket.remoteAddress}|${socket.remotePort}`)) handshakes.done()
        attach(socket)
      }
      const tlsServer = tls.createServer({ minVersion: 'TLSv1.2', ciphers: MQTTS_CIPHERS, handshakeTimeout: limits.connectTimeoutMs, ...opts.tls.options }, secured)
      tlsServer.on('tlsClientError', (err, socket) => {
        metrics.mqttAuthFailures.inc(1, { reason: 'tls_handshake' })
        logger.info('TLS handshake failed', { error: err.message })
        socket.destroy()
      })
      const s = net.createServer((raw) => {
        if (!admit(raw)) return
        const address = raw.remoteAddress ?? ''
        const refused = handshakes.refuse(address)
        if (refused) {
          metrics.mqttLimits.inc(1, { limit: refused })
          raw.destroy()
          return
        }
        const key = `${address}|${raw.remotePort}`
        const pending = {
          raw,
          end(penalty: boolean): void {
            handshaking.delete(key)
            handshakes.done()
            if (penalty) handshakes.failed(address)
          },
        }
        handshaking.set(key, pending)
        raw.once('close', () => {
          if (handshaking.get(key) === pending) pending.end(true) // failed, or abandoned by its client
        })
        // Too many in progress: the oldest goes (the Map keeps insertion order), not the newest.
        for (const [, oldest] of handshaking) {
          if (!handshakes.over) break
          oldest.end(false)
          oldest.raw.destroy()
          metrics.mqttLimits.inc(1, { limit: 'tls_handshakes' })
        }
        tlsServer.emit('connection', raw)
      })
      servers.push(s)
    }
    self = new Ingress(opts, core, servers, sockets)
    self.wireEvents()
    const addresses = [{ host: opts.host, port: opts.port }, ...(opts.tls ? [opts.tls] : [])]
    try {
      for (const [i, server] of servers.entries()) {
        const { host, port } = addresses[i]!
        await new Promise<void>((resolve, reject) => {
          server.once('error', (err) =>
            reject(new FerryError('FERRY_ERR_INGRESS_LISTEN', `cannot listen for MQTT${i > 0 ? 'S' : ''} on ${host}:${port}: ${err.message}`, { cause: err })),
          )
          server.listen(port, host, () => resolve())
        })
        const a = server.address() as net.AddressInfo
        self.bound[i] = { host: a.address, port: a.port }
        self.pauseOnDescriptorExhaustion(server, self.bound[i], i > 0 ? 'MQTTS' : 'MQTT')
      }
    } catch (err) {
      for (const server of servers) server.close()
      self.rates?.close() // its sweep timer
      await core.close()
      throw err
    }
    return self
  }

  /** Whether every MQTT listener accepts connections (not while one pauses for lack of descriptors). */
  get listening(): boolean {
    return !this.stopping && this.servers.every((s) => s.listening)
  }

  /** The bound address of the TCP listener (port resolved when 0 was asked). */
  get address(): { host: string; port: number } {
    return this.bound[0]!
  }

  /** The bound address of the TLS listener, if any. */
  get tlsAddress(): { host: string; port: number } | undefined {
    return this.bound[1]
  }

  /**
   * An accept that fails with EMFILE/ENFILE leaves the connection in the backlog, so the listener
   * would be told about it again at once, for as long as descriptors lack (a busy loop). libuv
   * usually absorbs this itself (it frees a reserved descriptor, accepts and closes the pending
   * connections); when that reserve is gone too the error reaches us: the listener then closes
   * (stops accepting) and listens again on the same address after
   * {@link ACCEPT_PAUSE_MS}, retrying while descriptors still lack. Logged once per episode.
   */
  private pauseOnDescriptorExhaustion(server: net.Server, at: { host: string; port: number }, name: string): void {
    const { logger } = this.opts
    let paused = false
    let timer: NodeJS.Timeout | undefined
    server.on('listening', () => {
      if (!paused) return
      paused = false
      logger.info(`${name} listener accepting again`, { address: `${at.host}:${at.port}` })
    })
    server.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EMFILE' && err.code !== 'ENFILE') {
        logger.error(`${name} listener error`, { error: err })
        // A listener that stopped on its own (e.g. its address taken while it paused): ingress stops,
        // and closed() says why.
        if (!server.listening && !this.stopping) {
          void this.shutdown(deadlineIn(DEFAULT_CLOSE_MS), new FerryError('FERRY_ERR_INGRESS_LISTEN', `${name} listener on ${at.host}:${at.port} stopped: ${err.message}`, { cause: err }))
        }
        return
      }
      if (!paused) logger.warn(`${name} listener out of file descriptors: not accepting connections for a while`, { address: `${at.host}:${at.port}`, code: err.code, pauseMs: ACCEPT_PAUSE_MS })
      paused = true
      if (server.listening) server.close()
      if (timer || this.stopping) return
      const t = setTimeout(() => {
        this.timers.delete(t)
        timer = undefined
        if (!this.stopping) server.listen(at.port, at.host)
      }, ACCEPT_PAUSE_MS)
      timer = t
      this.timers.add(t)
      t.unref()
    })
  }

  private wireEvents(): void {
    const { logger, metrics } = this.opts
    let clients = 0
    metrics.mqttClients.collect(() => clients)
    this.core.on('registered', (client) => {
      clients++
      this.connIds.set(client, ++this.lastConnId)
    })
    this.core.on('disconnected', (client) => {
      clients--
      this.opts.gate?.clientGone(client)
      this.rates?.clientGone(client)
    })
    this.core.on('sessionExpired', (clientId) => this.opts.admission.sessionExpired?.(clientId))
    this.core.on('subscribed', (client, topics) => {
      const pending = this.granting.get(client)
      if (pending) for (const t of topics) pending.delete(t)
    })
    // The core reports an error once per pending write (e.g. every delivery a slow subscriber left): log the first.
    const reported = new WeakSet<MqttClientRef>()
    this.core.on('clientError', (client, err, limit) => {
      if (reported.has(client)) return
      reported.add(client)
      // Limits the core enforces itself, counted with ours.
      if (limit) metrics.mqttLimits.inc(1, { limit })
      logger.info('client disconnected on error', { clientId: client.id, error: err.message })
    })
    // A QoS 1/2 delivery over an MQTT 5 device's Receive Maximum, with MAX_QUEUED_OUT already waiting.
    const overflowed = new WeakSet<MqttClientRef>()
    this.core.on('outboundDropped', (client) => {
      metrics.drops.inc(1, { reason: 'outbound_queue_full' })
      if (overflowed.has(client)) return
      overflowed.add(client)
      logger.warn('deliveries dropped: the device acknowledges slower than its Receive Maximum allows them to be sent', { clientId: client.id })
    })
    this.core.on('connectionError', (err) => {
      logger.info('connection closed before CONNECT completed', { error: err.message })
    })
  }

  /** Where a PUBACK is decided: `cb(null)` once the publish is stored; the core writes PUBACK then. */
  private authorizePublish(client: MqttClientRef | null, packet: PublishRequest, isWill: boolean, cb: (refusal?: PublishRefusal | null) => void): void {
    const { metrics } = this.opts
    const started = performance.now()
    const clientId = client?.id ?? ''
    if (packet.topic.startsWith('$')) return this.refuse(client, cb, 'sys_topic', `publish to "${packet.topic}" refused: topics starting with "$" are reserved`, packet.topic)
    // Malformed for MQTT 3.1.1 yet passed by the parser: QoS > 0 without a packet id [MQTT-2.3.1-1], and
    // U+0000 [MQTT-1.5.3-2] or ill-formed UTF-8 [MQTT-1.5.3-1] in the topic. The parser has already
    // turned ill-formed bytes into U+FFFD, so a topic holding U+FFFD is refused (a real U+FFFD too).
    // (A will is published by the core itself, at its QoS, without a packet id.)
    if (packet.qos !== 0 && packet.qos !== 1 && packet.qos !== 2) return this.refuse(client, cb, 'malformed', `QoS ${String(packet.qos)}`, packet.topic) // a will's QoS 3 gets this far
    if (packet.qos > 0 && !packet.messageId && !isWill) return this.refuse(client, cb, 'malformed', 'QoS 1/2 PUBLISH without a packet identifier', packet.topic)
    if (MALFORMED_TOPIC.test(packet.topic)) return this.refuse(client, cb, 'malformed', 'topic holds U+0000 or ill-formed UTF-8', packet.topic)
    if (Buffer.byteLength(packet.topic) > this.opts.limits.maxTopicBytes) {
      return this.refuse(client, cb, 'topic_too_long', `topic of ${Buffer.byteLength(packet.topic)} bytes exceeds --max-topic-bytes ${this.opts.limits.maxTopicBytes}`, packet.topic)
    }
    if (!this.opts.admission.mayPublish(client, packet.topic)) return this.refuse(client, cb, 'acl', `publish to "${packet.topic}" denied by the ACL`, packet.topic)
    if (!isWill) this.devices.countIn(client)
    if (client && this.intercept) {
      const handled = this.intercept(client, packet.topic, typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload, packet.properties)
      if (handled) {
        handled.then(
          () => cb(null),
          () => cb(null),
        )
        return
      }
    }
    const payload = typeof packet.payload === 'string' ? Buffer.from(packet.payload) : packet.payload
    const qos = packet.qos
    const packetId = packet.messageId ?? 0
    // MQTT 5 [MQTT-3.3.2-4]: a payload said to be UTF-8 (Payload Format Indicator 1) must be.
    if (packet.properties?.payloadFormatIndicator === true && !isUtf8(payload)) {
      return this.refuse(client, cb, 'payload_format', `payload on "${packet.topic}" is not UTF-8 although its Payload Format Indicator says so`, packet.topic)
    }
    // The MQTT 5 properties kept with the message (a topic alias was resolved by the core already).
    const receivedAt = Date.now()
    const mqttProperties = messageProperties(packet.properties, receivedAt)
    const route = this.route(packet.topic)
    // Stored as it goes upstream; a retransmission is encoded the same way, so its CRC matches.
    // (Encoded with the device's own properties: a --ttl expiry does not change the payload.)
    const encoded = this.opts.payloads.encode(packet.topic, payload, mqttProperties)
    // --ttl: the record expires at the earlier of its MQTT 5 Message Expiry and receive time + TTL.
    const properties = route.ttlMs > 0 ? withExpiry(mqttProperties, receivedAt + route.ttlMs) : mqttProperties
    const hash = retransmitHash(packet.topic, encoded.data)
    let entry: Buffer
    try {
      entry = encodeEntry({ clientId, topic: packet.topic, qos, retain: packet.retain, packetId, encoding: encodingOf(encoded.contentType), payload: encoded.data, ...(properties ? { properties } : {}) })
    } catch (err) {
      return this.refuse(client, cb, 'too_large', (err as Error).message, packet.topic)
    }
    // With MQTT 5 properties, the message grows upstream (escaping, base64, header names): it is
    // measured as it will be sent, so a stored message always fits the server's max_payload.
    const recordBytes = properties ? Math.max(entry.length, entry.length - propertiesBlockBytes(entry) + propertyHeaderBytes(clientId, encoded.contentType, properties)) : entry.length
    if (recordBytes > this.opts.maxEntryBytes) {
      return this.refuse(client, cb, 'too_large', `publish of ${payload.length} payload bytes on "${packet.topic}" exceeds the ${this.opts.maxEntryBytes}-byte record limit${recordBytes > entry.length ? ' with its properties as headers' : ''}`, packet.topic)
    }
    const conn = (client && this.connIds.get(client)) ?? -1
    // Only device PUBLISH packets (QoS > 0, with a packet id) can be retransmitted; wills cannot.
    // The original may have been stored in another form (otherForms). A topic has one class, so
    // the original went to the same class log as its retransmission would.
    const prior = packetId > 0 ? this.retransmits.find(clientId, packetId, hash, conn, packet.dup === true, started, otherForms, packet.topic, payload) : undefined
    if (prior) {
      // A retransmission of a message already stored or being stored (our acknowledgement was
      // lost, e.g. in a crash): acknowledge it once the original is stored, without storing it
      // twice. See retransmits.ts for the rule. It is neither charged to the device's share nor
      // counted against its rate (it adds nothing to the log).
      metrics.mqttRetransmits.inc()
      const gate = this.opts.gate
      if (!prior.pending) {
        if (gate?.slowing && client) return gate.hold(client, packetId, () => cb(null), true)
        return cb(null)
      }
      prior.pending.then(
        () => (gate?.slowing && client ? gate.hold(client, packetId, () => cb(null), true) : cb(null)),
        (err: unknown) => this.refuse(client, cb, refusalReason(err), (err as Error).message, packet.topic),
      )
      return
    }
    // Fair share and rates: a device's own new publishes (not wills, which the core publishes for it).
    const shares = this.opts.shares
    const device = client !== null && !isWill ? client : null
    if (device && shares) {
      if (!shares.tracks(route.className) && typeof route.log.acked === 'number') shares.track(route.className, route.log)
      if (shares.over(clientId)) {
        return this.refuseDevice(device, cb, 'device_quota', qos, route, `device over its share: ${shares.bytesOf(clientId)} bytes not yet forwarded, --device-max-bytes ${shares.maxBytes}`)
      }
    }
    let releaseAt = 0
    if (device && this.rates) {
      // Past --device-hard-rate: MQTT 5 QoS 1/2 and every QoS 0 publish are refused; 3.1.1 QoS 1/2 are held.
      const d = this.rates.arrive(clientId, qos === 0 || device.protocolVersion === 5)
      if (d.refused) return this.refuseDevice(device, cb, 'rate_limited', qos, route, `device over --device-hard-rate ${this.opts.deviceHardRate ?? 0}/s`)
      releaseAt = d.releaseAt
    }
    this.receivedByQos[qos]!.inc()
    this.receivedBytesByQos[qos]!.inc(payload.length)
    const log = route.log
    const pendingBefore = log.pendingAppendBytes
    const stored = log.append(entry)
    if (shares && client) {
      // Charged from the append on (a burst of appends counts before its seqs are known).
      const bytes = entry.length
      const cls = route.className
      shares.reserve(clientId, bytes)
      stored.then(
        (seq) => shares.settle(clientId, bytes, cls, seq),
        () => shares.settle(clientId, bytes, cls, undefined),
      )
    }
    const rates = this.rates
    if (qos === 0 || packetId === 0) {
      // QoS 0 goes through the same log but nothing waits for it to be stored, unless writes fall
      // behind: then it waits too, so that aedes stops reading the socket (bounded memory). A will
      // (QoS 1/2 without packet id) waits for its append; it is never a retransmission.
      // Over --device-max-rate, a QoS 0 publisher's socket is paused: the core reads its next
      // packets once this one is answered.
      const go = (): void => (releaseAt > 0 && device && rates ? rates.hold(device, releaseAt, () => cb(null)) : cb(null))
      if (qos === 0 && pendingBefore < this.opts.maxPendingBytes) {
        stored.catch(() => {})
        return go()
      }
      stored.then(go, go)
      return
    }
    const remembered = this.retransmits.add(clientId, packetId, hash, conn, started, stored)
    stored.then(
      () => {
        remembered.pending = undefined
        remembered.at = performance.now() // monotonic, as `started`: see retransmits.ts
        metrics.pubackLatency.observe((performance.now() - started) / 1000)
        // Over --max-forward-lag with a healthy upstream: the record is stored, its PUBACK waits.
        const gate = this.opts.gate
        const ack = (): void => {
          if (gate?.slowing && client) gate.hold(client, packetId, () => cb(null))
          else cb(null)
        }
        // Over --device-max-rate: the record is stored, its PUBACK/PUBREC waits for its slot.
        if (releaseAt > 0 && device && rates) rates.hold(device, releaseAt, ack)
        else ack()
      },
      (err: unknown) => {
        this.retransmits.forget(clientId, packetId, remembered)
        this.refuse(client, cb, refusalReason(err), (err as Error).message, packet.topic)
      },
    )
  }

  /** Per device refusal reason: when one was last logged, and how many since. */
  private readonly deviceRefusedLog = new Map<RefuseReason, { at: number; since: number }>()

  /**
   * Refuses a device's publish for its share or its rate: counted in ferry_drops_total{reason}
   * (with its class under classLabels) and, for QoS 1/2, ferry_mqtt_refused_total{reason}, as a
   * full log under --discard new is; logged at most every REFUSED_LOG_INTERVAL_MS per reason.
   * QoS 0: dropped silently (nothing to answer). QoS 1/2: MQTT 5 gets the reason code (device_quota:
   * PUBACK/PUBREC 0x97, the connection stays; rate_limited: DISCONNECT 0x96); 3.1.1 no
   * acknowledgement (the connection closes and the device resends later), as under --discard new.
   */
  private refuseDevice(client: MqttClientRef, cb: (refusal?: PublishRefusal | null) => void, reason: 'device_quota' | 'rate_limited', qos: number, route: PublishRoute, message: string): void {
    const { metrics, logger } = this.opts
    metrics.drops.inc(1, this.opts.classLabels ? { reason, class: route.className } : { reason })
    if (qos > 0) metrics.mqttRefused.inc(1, { reason })
    const now = performance.now()
    const last = this.deviceRefusedLog.get(reason)
    if (last && now - last.at < REFUSED_LOG_INTERVAL_MS) last.since++
    else {
      const r = REFUSALS[reason]
      const how = qos === 0 ? 'dropped (QoS 0)' : client.protocolVersion !== 5 ? 'disconnecting the client (no PUBACK)' : r.v5Disconnect ? 'DISCONNECT with the reason code' : 'reason code sent'
      logger.warn(`publish refused: ${reason === 'device_quota' ? 'device over --device-max-bytes' : 'device over --device-hard-rate'}; ${how}`, { clientId: client.id, reason, class: route.className, detail: message, alsoSinceLastLine: last?.since ?? 0 })
      this.deviceRefusedLog.set(reason, { at: now, since: 0 })
    }
    const r = REFUSALS[reason]
    cb({ reasonCode: r.reasonCode, reasonString: r.reasonString, v3: qos === 0 ? 'ack' : 'disconnect', ...(qos > 0 && r.v5Disconnect ? { v5Disconnect: true } : {}) })
  }

  /** Per refusal reason: when one acknowledged and dropped was last logged, and how many since. */
  private readonly refusedLog = new Map<RefuseReason, { at: number; since: number }>()

  private hookFailed(hook: string, client: MqttClientRef | null, err: unknown): void {
    this.opts.metrics.mqttRefused.inc(1, { reason: 'internal_error' })
    this.opts.logger.error('error in an MQTT hook; refusing that client', { hook, clientId: client?.id ?? null, error: err })
  }

  private authorizeSubscribe(client: MqttClientRef, topic: string, cb: (err: Error | null, granted: boolean) => void): void {
    const { limits, metrics } = this.opts
    const held = new Set(this.core.subscriptionsOf(client))
    const bytes = Buffer.byteLength(topic)
    // Refused filters get SUBACK 0x80; the client stays connected.
    if (bytes > limits.maxTopicBytes) {
      metrics.mqttLimits.inc(1, { limit: 'topic_bytes' })
      return cb(null, false)
    }
    // Granted filters not yet in `held` count too: a persistent session stores them asynchronously,
    // so every filter of one SUBSCRIBE would otherwise be measured against the same count.
    const pending = this.granting.get(client)
    let count = held.size
    if (pending) for (const f of pending) if (!held.has(f)) count++
    if (!held.has(topic) && !pending?.has(topic) && count >= limits.maxSubscriptions) {
      metrics.mqttLimits.inc(1, { limit: 'subscriptions' })
      this.opts.logger.info('subscription refused: --max-subscriptions reached', { clientId: client.id, topic, limit: limits.maxSubscriptions })
      return cb(null, false)
    }
    const granted = this.opts.admission.maySubscribe(client, topic)
    if (granted) {
      const set = this.granting.get(client) ?? new Set<string>()
      set.add(topic)
      this.granting.set(client, set)
    }
    cb(null, granted)
  }

  /**
   * Refuses a publish (see REFUSALS). MQTT 5: a reason code, the connection stays. MQTT 3.1.1: a
   * refusal by policy under --refused-publish ack is acknowledged and dropped (ferry_drops_total
   * {reason="refused"}, logged at most every REFUSED_LOG_INTERVAL_MS per reason); otherwise no
   * acknowledgement and the core closes the connection (3.1.1 has no negative acknowledgement).
   */
  private refuse(client: MqttClientRef | null, cb: (refusal?: PublishRefusal | null) => void, reason: RefuseReason, message: string, topic?: string): void {
    const { metrics, logger, limits } = this.opts
    metrics.mqttRefused.inc(1, { reason })
    const how = REFUSALS[reason]
    const v3: PublishRefusal['v3'] = how.policy && limits.refusedPublish === 'ack' ? 'ack' : 'disconnect'
    const v5 = client?.protocolVersion === 5
    if (!v5 && v3 === 'ack' && client !== null) {
      metrics.drops.inc(1, this.opts.classLabels && topic !== undefined ? { reason: 'refused', class: this.route(topic).className } : { reason: 'refused' })
      const now = performance.now()
      const last = this.refusedLog.get(reason)
      if (last && now - last.at < REFUSED_LOG_INTERVAL_MS) last.since++
      else {
        logger.info('publish refused; acknowledged and dropped (--refused-publish ack)', { clientId: client.id, reason, detail: message, alsoSinceLastLine: last?.since ?? 0 })
        this.refusedLog.set(reason, { at: now, since: 0 })
      }
    } else if (v5) logger.info('publish refused; reason code sent', { clientId: client.id, reason, reasonCode: how.reasonCode, detail: message })
    else logger.info('publish refused; disconnecting the client', { clientId: client?.id, reason, detail: message })
    cb({ reasonCode: how.reasonCode, reasonString: how.reasonString, v3, ...(how.v5Disconnect ? { v5Disconnect: true } : {}) })
  }

  /**
   * Stops accepting connections and closes every client; sockets still open at `deadline` (default
   * {@link DEFAULT_CLOSE_MS} from now) are destroyed. Idempotent: a second call waits for the first.
   */
  close(deadline: Deadline = deadlineIn(DEFAULT_CLOSE_MS)): Promise<void> {
    return this.shutdown(deadline)
  }

  /** Settles once ingress has stopped: undefined after close(), the error when a listener died on its own. */
  closed(): Promise<Error | undefined> {
    return this.stopped.promise
  }

  private shutdown(deadline: Deadline, failure?: Error): Promise<void> {
    this.closing ??= (async () => {
      this.stopping = true
      this.devices.stopping = true
      // Held PUBACKs go out now, before the clients are closed: the core writes them over the next
      // turns of the event loop (each client's after its previous one, QoS 2 after its session
      // store), and a client closed first would not get them (the device would resend them all).
      const held = (this.opts.gate?.held ?? 0) + (this.rates?.heldNow ?? 0)
      // Rate holds first: what they release may pass through the gate, which then releases it too.
      this.rates?.close()
      this.opts.gate?.close()
      for (const t of this.timers) clearTimeout(t)
      this.timers.clear()
      const serverClosed = Promise.all(this.servers.map((s) => new Promise<void>((resolve) => s.close(() => resolve()))))
      if (held > 0) await releasedWritten()
      let timer: NodeJS.Timeout | undefined
      const late = new Promise<boolean>((resolve) => {
        timer = setTimeout(() => resolve(false), remainingMs(deadline))
      })
      const inTime = await Promise.race([this.core.close().then(() => true), late])
      clearTimeout(timer)
      if (!inTime) this.opts.logger.warn('MQTT clients not closed by the deadline; their sockets are destroyed')
      // Sockets that never completed CONNECT are not clients of the core: close them too.
      for (const s of this.sockets) s.destroy()
      await serverClosed
      this.stopped.resolve(failure)
    })()
    return this.closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}
