// The connected devices: who is online, since when, from where, with message counts; and the one
// way to send a device a QoS 1 message and learn when it acknowledged it (commands, RPC).
//
// aedes has no public "deliver to this client and tell me about its PUBACK". We pass the packet to
// the client's own delivery path (`deliverQoS`, which also keeps it in a persistent session) with
// a packet id taken from the client's counter, the way aedes numbers its own deliveries, and watch
// the client's parser for the PUBACK with that id. Pinned to aedes 1.2; test/integration/downlink
// fails if that changes.
import { EventEmitter } from 'node:events'
import type { Aedes, Client } from 'aedes'

/** Why a device went offline (the `reason` of its "disconnected" event). */
export type DisconnectReason = 'clean' | 'keepalive_timeout' | 'error' | 'takeover' | 'connection_lost' | 'gateway_stop'

export interface DeviceInfo {
  readonly clientId: string
  readonly address: string
  readonly connectedAt: number
  readonly clean: boolean
  messagesIn: number
  messagesOut: number
}

interface Session extends DeviceInfo {
  readonly client: Client
  /** Deliveries waiting for a PUBACK, by packet id (created on the first delivery). */
  acks?: Map<number, () => void>
  /** Deliveries waiting for a PUBACK, told when the device goes. */
  waiting?: Set<() => void>
}

/** The aedes internals used here (see the file comment). */
interface AedesClientInternals {
  _nextId: number
  _parser: { on(event: 'packet', listener: (p: { cmd: string; messageId?: number }) => void): void }
  deliverQoS(packet: Record<string, unknown>, cb: () => void): void
  deliver0(packet: unknown, cb: () => void): void
  _disconnected?: boolean
  clean: boolean
  conn: { remoteAddress?: string }
  subscriptions: Record<string, { qos: number }>
}

export interface DeviceEvents {
  online: [info: DeviceInfo]
  offline: [info: DeviceInfo, reason: DisconnectReason]
  subscribed: [clientId: string, filters: string[]]
}

export class Devices extends EventEmitter<DeviceEvents> {
  private readonly sessions = new Map<string, Session>()
  private readonly reasons = new WeakMap<Client, DisconnectReason>()
  /** Set when the gateway stops: the disconnects that follow are reported as `gateway_stop`. */
  stopping = false

  constructor(private readonly broker: Aedes) {
    super()
    // Online from the moment CONNACK went out: a device's first PUBLISH can follow at once, and its
    // "connected" event must be in the log before that publish.
    broker.on('connackSent', (connack, client) => {
      if ((connack as { returnCode?: number }).returnCode === 0) this.ready(client)
    })
    // aedes closes the previous connection of a client id when it registers the new one.
    const b = broker as unknown as { registerClient(c: Client): void; clients: Record<string, Client | undefined> }
    const register = b.registerClient.bind(broker)
    b.registerClient = (c) => {
      const old = b.clients[c.id]
      if (old && old !== c) this.reasons.set(old, 'takeover')
      register(c)
    }
    broker.on('clientDisconnect', (client) => this.gone(client))
    broker.on('keepaliveTimeout', (client) => this.reasons.set(client, 'keepalive_timeout'))
    broker.on('clientError', (client) => {
      if (!this.reasons.has(client)) this.reasons.set(client, 'error')
    })
    broker.on('subscribe', (subs, client) => {
      if (client && this.sessions.get(client.id)?.client === client) this.emit('subscribed', client.id, subs.map((s) => s.topic))
    })
  }

  private ready(client: Client): void {
    // Reset between the CONNACK write and this event: its disconnect has already passed by.
    if ((client as unknown as { closed?: boolean }).closed) return
    const c = client as unknown as AedesClientInternals
    const old = this.sessions.get(client.id)
    if (old) {
      this.reasons.set(old.client, 'takeover')
      this.gone(old.client)
    }
    const s: Session = { client, clientId: client.id, address: c.conn.remoteAddress ?? '', connectedAt: Date.now(), clean: c.clean, messagesIn: 0, messagesOut: 0 }
    c._parser.on('packet', (p) => {
      if (p.cmd === 'puback' && p.messageId !== undefined && s.acks) {
        const done = s.acks.get(p.messageId)
        if (done) {
          s.acks.delete(p.messageId)
          done()
        }
      }
    })
    // Count every delivery to the device (subscriptions, commands, RPC).
    const deliverQoS = c.deliverQoS.bind(c)
    const deliver0 = c.deliver0.bind(c)
    c.deliverQoS = (packet, cb) => (s.messagesOut++, deliverQoS(packet, cb))
    c.deliver0 = (packet, cb) => (s.messagesOut++, deliver0(packet, cb))
    this.sessions.set(client.id, s)
    this.emit('online', s)
  }

  private gone(client: Client): void {
    const s = this.sessions.get(client.id)
    if (!s || s.client !== client) return
    this.sessions.delete(client.id)
    const reason = (client as unknown as AedesClientInternals)._disconnected ? 'clean' : this.stopping ? 'gateway_stop' : (this.reasons.get(client) ?? 'connection_lost')
    for (const w of [...(s.waiting ?? [])]) w()
    this.emit('offline', s, reason)
  }

  /** Counts a publish received from a device. */
  countIn(client: Client | null): void {
    if (client) {
      const s = this.sessions.get(client.id)
      if (s?.client === client) s.messagesIn++
    }
  }

  isOnline(clientId: string): boolean {
    return this.sessions.has(clientId)
  }

  /** The filters the device holds (its session's subscriptions). */
  subscriptions(clientId: string): string[] {
    const s = this.sessions.get(clientId)
    return s ? Object.keys((s.client as unknown as AedesClientInternals).subscriptions ?? {}) : []
  }

  list(): DeviceInfo[] {
    return [...this.sessions.values()].map(({ clientId, address, connectedAt, clean, messagesIn, messagesOut }) => ({ clientId, address, connectedAt, clean, messagesIn, messagesOut }))
  }

  /**
   * Sends `payload` on `topic` to the device at QoS 1. Resolves 'acked' on its PUBACK, 'offline' if
   * it is not connected or disconnects first, 'timeout' after `timeoutMs`.
   */
  deliver(clientId: string, topic: string, payload: Buffer, timeoutMs: number): Promise<'acked' | 'offline' | 'timeout'> {
    const s = this.sessions.get(clientId)
    if (!s) return Promise.resolve('offline')
    const c = s.client as unknown as AedesClientInternals
    const id = c._nextId
    c._nextId = id >= 65535 ? 1 : id + 1
    return new Promise((resolve) => {
      const acks = (s.acks ??= new Map())
      const waiting = (s.waiting ??= new Set())
      const offline = (): void => finish('offline')
      const finish = (r: 'acked' | 'offline' | 'timeout'): void => {
        clearTimeout(timer)
        acks.delete(id)
        waiting.delete(offline)
        resolve(r)
      }
      const timer = setTimeout(() => finish('timeout'), timeoutMs)
      acks.set(id, () => finish('acked'))
      waiting.add(offline)
      const packet = { cmd: 'publish', brokerId: this.broker.id, brokerCounter: ++(this.broker as unknown as { counter: number }).counter, topic, payload, qos: 1, retain: false, dup: false, messageId: id }
      if (c.clean) {
        c.deliverQoS(packet, () => {})
        return
      }
      // A persistent session keeps its outgoing QoS 1 messages in aedes' persistence: queue it
      // there first, as aedes' own Client.publish does (deliverQoS only updates a queued packet).
      const persistence = (this.broker as unknown as { persistence: { outgoingEnqueue(sub: { clientId: string }, p: unknown): Promise<void> } }).persistence
      persistence.outgoingEnqueue({ clientId }, packet).then(
        () => c.deliverQoS(packet, () => {}),
        () => finish('offline'),
      )
    })
  }
}
