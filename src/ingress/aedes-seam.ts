// The one seam to aedes: the only module that imports `aedes` or touches its objects. Ferry sees
// an MQTT core with Ferry-owned types (MqttClientRef, PublishRequest, the hooks and events below).
//
// Checked against aedes 1.2.0 (node_modules/aedes/package.json). Every use of something aedes does
// not document is marked `// aedes 1.2.x internal:` with what breaks if it changes, and is pinned
// by test/unit/aedes-seam.test.ts, which fails first when an upgrade changes one. The internals
// used, in one list:
//   client._parser (parse, 'packet' events)   frame guard; PUBACKs of our deliveries
//   client._nextId                             packet ids of our deliveries
//   client.deliverQoS / client.deliver0        sending our QoS 1 deliveries; counting deliveries
//   client._disconnected                       "ended with DISCONNECT" (the clean disconnect reason)
//   client.subscriptions                       the filters a client holds
//   client.will                                telling a will from a device's own PUBLISH
//   broker.registerClient / broker.clients     noticing a takeover of a client id
//   broker.unregisterClient / _finishRegisterClient   one registered client per id (see wire())
//   broker.id / broker.counter                 numbering our deliveries as aedes numbers its own
//   broker.persistence.outgoing*               a persistent session's copy of a delivery
//   broker.emit                                catching a throw from a listener of a client event
//   error messages 'maxInflightInbound exceeded…' and 'drain timeout'   limits aedes enforces itself
//   connack.returnCode (connackSent)           whether a CONNACK accepted the client
//
// Publish decisions: aedes calls `authorizePublish` before it writes PUBACK (QoS 1) or PUBREC
// (QoS 2) and holds the acknowledgement until the callback runs (lib/handlers/publish.js): that is
// where ingress appends to the log, so PUBACK means "stored". aedes calls it in packet order.
//
// How aedes 1.2 sends a QoS 1 message (lib/client.js): `deliverQoS(packet)` writes it on the next
// turn. For a persistent session (clean=false) it first calls `persistence.outgoingUpdate` on the
// copy queued by `outgoingEnqueue` (and fails the client when there is none); that gives the queued
// copy its packet id (it is found by brokerId and brokerCounter; enqueued, it has none). The copy
// stays queued until the client's PUBACK, which removes it by packet id (`outgoingClearMessageId`,
// lib/handlers/puback.js). On a reconnect with clean=false, aedes writes every queued copy again
// right after the CONNACK (`emptyQueue`, lib/handlers/connect.js). So a copy the gateway has given
// up on must be removed from the queue, or the device gets it again on its next connect.
import { EventEmitter } from 'node:events'
import type { Duplex } from 'node:stream'
import type net from 'node:net'
import { Aedes } from 'aedes'
import type { AuthenticateError, Client, Subscription } from 'aedes'

/** The installed aedes version this seam was checked against (the contract test asserts it). */
export const AEDES_CHECKED_VERSION = '1.2.0'

/** CONNACK return codes of MQTT 3.1.1 that refuse a client. */
export const CONNACK = {
  IDENTIFIER_REJECTED: 2,
  SERVER_UNAVAILABLE: 3,
  BAD_CREDENTIALS: 4,
  NOT_AUTHORIZED: 5,
} as const

/** A CONNACK code refusing a client (MQTT 3.1.1 §3.2.2.3). */
export type ConnackRefusal = (typeof CONNACK)[keyof typeof CONNACK]

/** A client connection as Ferry sees it. The same object for the whole life of the connection. */
export interface MqttClientRef {
  /** Its client id (set once CONNECT was read). */
  readonly id: string
  /** Its peer address ('' when unknown). */
  readonly address: string
  /** CleanSession of its CONNECT. */
  readonly clean: boolean
  /** Its connection: a TLS socket over MQTTS (peer certificate), a plain socket otherwise. */
  readonly socket: net.Socket | Duplex
  /** Whether the core has closed it (possibly before its events reached us). */
  readonly closed: boolean
  /** Whether it ended its connection with a DISCONNECT packet. */
  readonly sentDisconnect: boolean
  /** Closes the connection. */
  close(): void
}

/**
 * The MQTT 5 properties of a PUBLISH as the core parsed them (mqtt-packet's names). Absent for
 * MQTT 3.1.1 clients; a topic alias is resolved by the core before Ferry sees the packet.
 */
export interface PublishProperties {
  readonly payloadFormatIndicator?: boolean
  /** Seconds. */
  readonly messageExpiryInterval?: number
  readonly contentType?: string
  readonly responseTopic?: string
  readonly correlationData?: Buffer
  /** Name → value, or values when a name repeats. */
  readonly userProperties?: Readonly<Record<string, string | string[]>>
  readonly topicAlias?: number
  readonly subscriptionIdentifier?: number | number[]
}

/** A PUBLISH a device (or a will) asks to have accepted; structural over the core's packet. */
export interface PublishRequest {
  readonly topic: string
  readonly payload: Buffer | string
  readonly qos: number
  readonly retain: boolean
  readonly dup?: boolean
  readonly messageId?: number
  /** MQTT 5 only. */
  readonly properties?: PublishProperties
}

/** Why a client's connection ended (the `reason` of a disconnected event). */
export type SessionEndReason = 'clean' | 'keepalive_timeout' | 'error' | 'takeover' | 'connection_lost'

/** A limit the core enforces itself, named as in ferry_mqtt_limit_refusals_total. */
export type CoreLimit = 'inflight_in' | 'drain_timeout'

/** How a QoS 1 delivery ended: PUBACK, device gone (or not there), no PUBACK in time, or cancelled by its sender. */
export type DeliveryResult = 'acked' | 'offline' | 'timeout' | 'cancelled'

/** The decisions Ferry makes for the core. A throw from one is the caller's to catch. */
export interface CoreHooks {
  /**
   * CONNECT: `done(null)` accepts, `done(code)` refuses with that CONNACK. `keepaliveSec` as sent
   * (0 when absent; undefined if the core did not show us the CONNECT packet).
   */
  authenticate(client: MqttClientRef, username: string | undefined, password: Buffer | undefined, keepaliveSec: number | undefined, done: (refusal: ConnackRefusal | null) => void): void
  /**
   * PUBLISH (and wills, `isWill`): `done(null)` acknowledges it; `done(err)` refuses it (no
   * acknowledgement; over MQTT 3.1.1 the core closes the connection). The acknowledgement waits for `done`.
   */
  authorizePublish(client: MqttClientRef | null, publish: PublishRequest, isWill: boolean, done: (err?: Error | null) => void): void
  /** One filter of a SUBSCRIBE: granted, or refused with SUBACK 0x80 (the client stays). */
  authorizeSubscribe(client: MqttClientRef, topic: string, done: (err: Error | null, granted: boolean) => void): void
  /** Whether a message on `topic` may be written to the client now. */
  mayForward(client: MqttClientRef, topic: string): boolean
}

/** The core's own limits (aedes options). */
export interface CoreOptions {
  readonly maxClientIdLength: number
  readonly connectTimeoutMs: number
  readonly maxTopicLevels: number
  readonly maxInflightIn: number
  readonly drainTimeoutMs: number
  /** A throw from a listener of an event naming a client: that client is closed after this is told. */
  readonly onListenerError: (event: string, client: MqttClientRef, err: unknown) => void
}

export interface CoreEvents {
  /** A client passed CONNECT and holds its client id (counted as connected from here). */
  registered: [client: MqttClientRef]
  /** A CONNACK was written: `accepted` with code 0, else the refusal code. */
  connected: [client: MqttClientRef, outcome: { accepted: boolean; code: number }]
  /** A registered client is gone. */
  disconnected: [client: MqttClientRef, reason: SessionEndReason]
  /** The filters of a SUBSCRIBE once answered, granted or not (`subscriptionsOf` tells what is held). */
  subscribed: [client: MqttClientRef, topics: string[]]
  /** A client ended on an error; `limit` names a limit the core enforced itself. */
  clientError: [client: MqttClientRef, err: Error, limit: CoreLimit | undefined]
  /** A connection closed on an error before CONNECT completed. */
  connectionError: [err: Error]
}

/** A QoS 1 PUBLISH of ours on its way to a client. */
export interface Sent {
  /** Its packet id: the client's PUBACK carries it. */
  readonly messageId: number
  /**
   * Gives it up: the copy queued in a persistent session is removed (now, or as soon as aedes has
   * taken it for writing), so aedes never sends it again, on this connection or the next. Idempotent.
   */
  withdraw(): void
}

// aedes 1.2.x internal: the fields and methods of lib/client.js and aedes.js used below (not in
// its typings). Each is pinned by test/unit/aedes-seam.test.ts.
interface ClientInternals {
  /** aedes 1.2.x internal: next packet id of the client's deliveries; if renamed, our ids collide with aedes' own. */
  _nextId: number
  /** aedes 1.2.x internal: the mqtt-packet parser; if renamed, no frame guard and no PUBACK of ours is seen. */
  _parser?: { parse(buf: Buffer): unknown; on(event: 'packet', listener: (p: { cmd: string; messageId?: number }) => void): void }
  /** aedes 1.2.x internal: writes a QoS>0 delivery (persistent: after outgoingUpdate); if changed, commands are not sent. */
  deliverQoS(packet: Record<string, unknown>, cb: () => void): void
  /** aedes 1.2.x internal: writes a QoS 0 delivery; if changed, messagesOut misses QoS 0. */
  deliver0(packet: unknown, cb: () => void): void
  /** aedes 1.2.x internal: set on a DISCONNECT packet; if renamed, every clean disconnect reads as connection_lost. */
  _disconnected?: boolean
  /** aedes 1.2.x internal: filter → { qos }; if changed, --max-subscriptions and /devices subscriptions break. */
  subscriptions?: Record<string, { qos: number }>
  /** aedes 1.2.x internal: the will being published; if renamed, a will without packet id is refused as malformed. */
  will?: unknown
}

interface BrokerInternals {
  /** aedes 1.2.x internal: broker id and delivery counter, which key a persistent session's queued copy. */
  id: string
  counter: number
  persistence: {
    outgoingEnqueue(sub: { clientId: string }, packet: unknown): Promise<void>
    outgoingUpdate(client: Client, packet: unknown): Promise<void>
    outgoingClearMessageId(client: Client, packet: { messageId: number }): Promise<unknown>
  }
  clients: Record<string, Client | undefined>
  /** aedes 1.2.x internal: registers a client id, closing its previous connection (takeover). */
  registerClient(c: Client): void
  /** aedes 1.2.x internal: the second half of registerClient, once the previous connection closed. */
  _finishRegisterClient(c: Client): void
  /** aedes 1.2.x internal: called by a closing client that authenticated, when any client holds its id. */
  unregisterClient(c: Client): void
}

const internals = (c: Client): ClientInternals => c as unknown as ClientInternals

/** The Ferry view of one aedes client. */
class ClientRef implements MqttClientRef {
  /** PUBACK waiters of our deliveries, by packet id (created on the first delivery). */
  acks: Map<number, () => void> | undefined
  /** Deliveries told when the connection ends. */
  waiting: Set<() => void> | undefined
  /** Set once the core reported it disconnected: a delivery then ends 'offline' at once. */
  gone = false
  /** Told of every PUBLISH the core writes to the client (onDeliver). */
  delivered: (() => void)[] | undefined
  constructor(readonly client: Client) {}
  get id(): string {
    return this.client.id
  }
  get address(): string {
    return (this.client.conn as { remoteAddress?: string }).remoteAddress ?? ''
  }
  get clean(): boolean {
    return this.client.clean
  }
  get socket(): net.Socket | Duplex {
    return this.client.conn
  }
  get closed(): boolean {
    return this.client.closed === true
  }
  get sentDisconnect(): boolean {
    return internals(this.client)._disconnected === true
  }
  close(): void {
    this.client.close()
  }
}

/** Whether `value` is an aedes client (the argument of a broker event that names one). */
function isClient(value: unknown): value is Client {
  return typeof value === 'object' && value !== null && 'conn' in value && 'broker' in value
}

/**
 * What a CONNACK the core wrote says: accepted (code 0) or the refusal code.
 * aedes 1.2.x internal: the CONNACK packet object of the connackSent event; MQTT 3.1.1 names its
 * code `returnCode`, MQTT 5 (aedes 2.0) `reasonCode`: either is read, so a v5 device is not left
 * offline. A CONNACK with neither counts as refused (code -1), never as accepted.
 */
export function connackOutcome(connack: unknown): { accepted: boolean; code: number } {
  const { returnCode, reasonCode } = (connack ?? {}) as { returnCode?: unknown; reasonCode?: unknown }
  const code = typeof returnCode === 'number' ? returnCode : typeof reasonCode === 'number' ? reasonCode : -1
  return { accepted: code === 0, code }
}

/** The aedes error messages of limits aedes enforces itself. */
function limitOf(err: Error): CoreLimit | undefined {
  // aedes 1.2.x internal: error message text of lib/handlers/publish.js and lib/client.js; if
  // reworded, these refusals are no longer counted in ferry_mqtt_limit_refusals_total.
  if (err.message.startsWith('maxInflightInbound exceeded')) return 'inflight_in'
  if (err.message === 'drain timeout') return 'drain_timeout'
  return undefined
}

/** The MQTT core: an aedes broker behind Ferry's types. */
export class MqttCore extends EventEmitter<CoreEvents> {
  private readonly refs = new WeakMap<Client, ClientRef>()
  private readonly reasons = new WeakMap<Client, SessionEndReason>()
  private readonly keepalives = new WeakMap<Client, number>()
  private readonly b: BrokerInternals

  private constructor(private readonly broker: Aedes) {
    super()
    this.b = broker as unknown as BrokerInternals
  }

  /** Creates the broker. */
  static async create(opts: CoreOptions, hooks: CoreHooks): Promise<MqttCore> {
    let core: MqttCore | undefined
    const ref = (c: Client): ClientRef => core!.ref(c)
    const broker = await Aedes.createBroker({
      maxClientsIdLength: opts.maxClientIdLength,
      connectTimeout: opts.connectTimeoutMs,
      maxTopicLevels: opts.maxTopicLevels,
      maxInflightInbound: opts.maxInflightIn,
      drainTimeout: opts.drainTimeoutMs,
      preConnect: (client, packet, cb) => {
        core!.keepalives.set(client, packet.keepalive ?? 0)
        cb(null, true)
      },
      authenticate: (client, username, password, cb) => {
        const keepalive = core!.keepalives.get(client)
        hooks.authenticate(ref(client), username, password, keepalive, (refusal) => {
          if (refusal === null) return cb(null, true)
          // Documented aedes contract: the CONNACK code is taken from `returnCode` (2 to 5, else 5).
          cb(Object.assign(new Error('connection refused'), { returnCode: refusal }) as AuthenticateError, null)
        })
      },
      authorizePublish: (client, packet, cb) => {
        // aedes 1.2.x internal: `client.will` is the will being published; a will has no packet id.
        const isWill = client !== null && packet === internals(client).will
        hooks.authorizePublish(client ? ref(client) : null, packet, isWill, cb)
      },
      authorizeForward: (client, packet) => (hooks.mayForward(ref(client), packet.topic) ? packet : null),
      authorizeSubscribe: (client, sub: Subscription, cb) => hooks.authorizeSubscribe(ref(client), sub.topic, (err, granted) => cb(err, granted ? sub : null)),
    })
    core = new MqttCore(broker)
    core.guardClientEvents(opts.onListenerError)
    core.wire()
    return core
  }

  private ref(c: Client): ClientRef {
    let r = this.refs.get(c)
    if (!r) {
      r = new ClientRef(c)
      this.refs.set(c, r)
    }
    return r
  }

  private wire(): void {
    const broker = this.broker
    // aedes 1.2.x internal: registerClient closes the previous connection of a client id; we wrap
    // it to learn that it was a takeover. If renamed, a takeover reads as connection_lost.
    const register = this.b.registerClient.bind(broker)
    this.b.registerClient = (c) => {
      const old = this.b.clients[c.id]
      if (old && old !== c) this.reasons.set(old, 'takeover')
      register(c)
    }
    // aedes 1.2.x internal: a closing client that authenticated unregisters its id when any client
    // holds it (lib/client.js, close), and registerClient finishes after a takeover whether or not
    // the new client is still there. So a connection that authenticates and drops before its own
    // registration (while its session is fetched) would unregister the connected client of its id,
    // and then be registered itself, closed: the next connection of that id would not close the
    // first (MQTT-3.1.4-2). Only the registered client unregisters; a closed one is not registered.
    const unregister = this.b.unregisterClient.bind(broker)
    this.b.unregisterClient = (c) => {
      if (this.b.clients[c.id] === c) unregister(c)
    }
    const finishRegister = this.b._finishRegisterClient.bind(broker)
    this.b._finishRegisterClient = (c) => {
      if (!c.closed) finishRegister(c)
    }
    broker.on('client', (c) => this.emit('registered', this.ref(c)))
    broker.on('connackSent', (connack, c) => this.emit('connected', this.ref(c), connackOutcome(connack)))
    broker.on('keepaliveTimeout', (c) => this.reasons.set(c, 'keepalive_timeout'))
    broker.on('clientError', (c, err) => {
      if (!this.reasons.has(c)) this.reasons.set(c, 'error')
      this.emit('clientError', this.ref(c), err, limitOf(err))
    })
    broker.on('clientDisconnect', (c) => {
      const r = this.ref(c)
      r.gone = true
      const reason: SessionEndReason = internals(c)._disconnected === true ? 'clean' : (this.reasons.get(c) ?? 'connection_lost')
      this.ended(r)
      this.emit('disconnected', r, reason)
    })
    broker.on('subscribe', (subs, c) => {
      if (c) this.emit('subscribed', this.ref(c), subs.map((s) => s.topic))
    })
    broker.on('connectionError', (_c, err) => this.emit('connectionError', err))
  }

  /**
   * Catches a throw from any listener of a broker event that names a client (`client`,
   * `connackSent`, `clientDisconnect`, `subscribe`, …, and so every event of this core). aedes emits
   * these from its packet handlers, where a throw would end the process with every device; instead
   * `failed` is told and that one client is closed. Events naming no client rethrow as before.
   */
  private guardClientEvents(failed: CoreOptions['onListenerError']): void {
    // aedes 1.2.x internal: events are emitted with broker.emit from the packet handlers; if aedes
    // stops calling its own emit, a listener's throw ends the process again.
    const emit = this.broker.emit.bind(this.broker) as (event: string | symbol, ...args: unknown[]) => boolean
    ;(this.broker as unknown as { emit: typeof emit }).emit = (event, ...args) => {
      try {
        return emit(event, ...args)
      } catch (err) {
        const client = args.find(isClient)
        if (!client) throw err
        failed(String(event), this.ref(client), err)
        client.close()
        return true
      }
    }
  }

  /**
   * Hands a connection to the core behind the frame guard: every chunk is checked by `check`
   * (limits.ts, reading only fixed headers) before aedes' parser buffers it; on a violation
   * `onViolation` runs once, the connection is destroyed and nothing of that chunk is parsed.
   */
  attach(socket: net.Socket | Duplex, check: (buf: Buffer) => string | undefined, onViolation: (why: string, client: MqttClientRef) => void): MqttClientRef {
    const client = this.broker.handle(socket)
    const r = this.ref(client)
    this.countDeliveries(r)
    // aedes 1.2.x internal: lib/client.js feeds every socket chunk to `client._parser.parse`; if
    // renamed, packets are no longer bounded before buffering (a 200 MB announcement is held).
    const parser = internals(client)._parser
    if (!parser || typeof parser.parse !== 'function') throw new Error('aedes client without _parser.parse: the frame guard needs updating for this aedes version')
    const parse = parser.parse.bind(parser)
    let violated = false
    parser.parse = (buf: Buffer) => {
      if (violated) return 0
      const why = check(buf)
      if (why === undefined) return parse(buf)
      violated = true
      onViolation(why, r)
      socket.destroy()
      return 0
    }
    return r
  }

  /** The topic filters the client holds. */
  subscriptionsOf(client: MqttClientRef): string[] {
    // aedes 1.2.x internal: client.subscriptions (filter → { qos }).
    return Object.keys(internals((client as ClientRef).client).subscriptions ?? {})
  }

  /** Calls `listener` for every PUBLISH the core writes to the client from now on (subscriptions, commands, RPC). */
  onDeliver(client: MqttClientRef, listener: () => void): void {
    ;((client as ClientRef).delivered ??= []).push(listener)
  }

  /**
   * Wraps the client's delivery methods before its CONNECT is read. aedes 1.2.x internal: every
   * delivery goes through deliverQoS or deliver0 (lib/client.js); a subscription keeps the method it
   * found when it was made, and a persistent session's subscriptions are restored before the CONNACK,
   * so a later wrap would miss them. deliverQoS hands a QoS 0 packet to this.deliver0: that is one
   * delivery, told once. If renamed, messagesOut stays 0.
   */
  private countDeliveries(r: ClientRef): void {
    const c = internals(r.client)
    const deliverQoS = c.deliverQoS.bind(c)
    const deliver0 = c.deliver0.bind(c)
    let inQoS = false
    const tell = (): void => {
      if (r.delivered) for (const l of r.delivered) l()
    }
    c.deliverQoS = (packet, cb) => {
      tell()
      inQoS = true
      try {
        deliverQoS(packet, cb)
      } finally {
        inQoS = false
      }
    }
    c.deliver0 = (packet, cb) => {
      if (!inQoS) tell()
      deliver0(packet, cb)
    }
  }

  /**
   * Sends `payload` on `topic` to the client at QoS 1. Resolves 'acked' on its PUBACK, 'offline' when
   * its connection ends first (or the delivery cannot be queued), 'timeout' after `timeoutMs`,
   * 'cancelled' when `signal` aborts first. Unless acked, the delivery is withdrawn: a persistent
   * session does not keep it.
   */
  deliver(client: MqttClientRef, topic: string, payload: Buffer, timeoutMs: number, signal?: AbortSignal): Promise<DeliveryResult> {
    const r = client as ClientRef
    if (signal?.aborted) return Promise.resolve('cancelled')
    if (r.gone) return Promise.resolve('offline')
    this.watchPubacks(r)
    return new Promise((resolve) => {
      const acks = (r.acks ??= new Map())
      const waiting = (r.waiting ??= new Set())
      let ended = false
      const offline = (): void => finish('offline')
      const cancel = (): void => finish('cancelled')
      const finish = (result: DeliveryResult): void => {
        if (ended) return
        ended = true
        clearTimeout(timer)
        acks.delete(sent.messageId)
        waiting.delete(offline)
        signal?.removeEventListener('abort', cancel)
        if (result !== 'acked') sent.withdraw() // (a PUBACK has removed it already)
        resolve(result)
      }
      const sent = this.sendQoS1(r, topic, payload, offline)
      const timer = setTimeout(() => finish('timeout'), timeoutMs)
      acks.set(sent.messageId, () => finish('acked'))
      waiting.add(offline)
      signal?.addEventListener('abort', cancel, { once: true })
    })
  }

  /**
   * Ends the client's deliveries as 'offline' now (its connection was taken over or is ending).
   * Also done when the core reports it disconnected.
   */
  ended(client: MqttClientRef): void {
    const r = client as ClientRef
    for (const w of [...(r.waiting ?? [])]) w()
  }

  private watchPubacks(r: ClientRef): void {
    if (r.acks) return
    r.acks = new Map()
    // aedes 1.2.x internal: the parser emits every packet the client sends, PUBACK included; if
    // renamed, deliveries never resolve 'acked' (commands time out and are retried).
    internals(r.client)._parser!.on('packet', (p) => {
      if (p.cmd !== 'puback' || p.messageId === undefined) return
      const done = r.acks?.get(p.messageId)
      if (done) {
        r.acks!.delete(p.messageId)
        done()
      }
    })
  }

  /**
   * The primitive under `deliver`: sends `payload` on `topic` to the client at QoS 1, numbered from
   * the client's own packet id counter the way aedes numbers its deliveries. A persistent session's
   * copy is queued in aedes' persistence first, as aedes' own Client.publish does, and stays queued
   * (replayed on the next connect) until the client's PUBACK or `withdraw()`. `onFailed` is called
   * when it cannot be queued.
   */
  sendQoS1(ref: MqttClientRef, topic: string, payload: Buffer, onFailed: () => void): Sent {
    const client = (ref as ClientRef).client
    const b = this.b
    const c = internals(client)
    // aedes 1.2.x internal: _nextId (1..65535, wrapping), brokerId/brokerCounter keying the queued
    // copy, persistence.outgoing*; see the file comment. If changed, a command may take an id aedes
    // uses too, or a persistent session fails the client ("no such packet").
    const messageId = c._nextId
    c._nextId = messageId >= 65535 ? 1 : messageId + 1
    const packet = { cmd: 'publish', brokerId: b.id, brokerCounter: ++b.counter, topic, payload, qos: 1, retain: false, dup: false, messageId }
    if (client.clean) {
      c.deliverQoS(packet, () => {})
      return { messageId, withdraw: () => {} }
    }
    // Removing the queued copy before deliverQoS has called outgoingUpdate on it would make aedes fail
    // the client ("no such packet"): deliverQoS does that on its next turn (setImmediate), so a
    // withdrawal waits until a setImmediate queued after it has run. The copy is given its packet id
    // first (a no-op once deliverQoS did it), as only then can it be removed by it; if it is gone
    // already (a late PUBACK), nothing is removed.
    let state: 'queueing' | 'sending' | 'sent' | 'withdrawn' = 'queueing'
    let wanted = false
    const clear = (): void => {
      state = 'withdrawn'
      b.persistence.outgoingUpdate(client, packet).then(
        () => b.persistence.outgoingClearMessageId(client, { messageId }).catch(() => {}),
        () => {},
      )
    }
    b.persistence.outgoingEnqueue({ clientId: client.id }, packet).then(
      () => {
        if (wanted) return clear()
        state = 'sending'
        c.deliverQoS(packet, () => {})
        setImmediate(() => {
          state = 'sent'
          if (wanted) clear()
        })
      },
      () => {
        state = 'withdrawn'
        onFailed()
      },
    )
    return {
      messageId,
      withdraw: () => {
        wanted = true
        if (state === 'sent') clear()
      },
    }
  }

  /** Closes every client and the broker. */
  close(): Promise<void> {
    return new Promise<void>((resolve) => this.broker.close(() => resolve()))
  }
}
