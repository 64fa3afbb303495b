// The connected devices: who is online, since when, from where, with message counts; and the one
// way to send a device a QoS 1 message and learn when it acknowledged it (commands, RPC).
//
// aedes has no public "deliver to this client and tell me about its PUBACK"; the internals this
// takes are in aedes-internals.ts. A delivery that ends without a PUBACK (timeout, device gone,
// cancelled) is withdrawn from a persistent session's queue, so a device reconnecting with
// clean=false gets only what is still being delivered: at most one copy per delivery.
import { EventEmitter } from 'node:events'
import type { Aedes, Client } from 'aedes'
import { disconnectedCleanly, isClosed, onDeliver, onPuback, onTakeover, sendQoS1, sessionOf, subscriptionsOf } from './aedes-internals.js'

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

/** How a delivery ended: PUBACK, device gone (or not there), no PUBACK in time, or cancelled by its sender. */
export type DeliveryResult = 'acked' | 'offline' | 'timeout' | 'cancelled'

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

  /**
   * `mayReceive` is asked before each delivery (the ACL in force now, see Admission.mayReceive): a
   * delivery it refuses is not sent and ends 'timeout' at once, as one the device never acknowledged
   * (commands are then retried after a pause and end dead; 'offline' would be retried at once).
   */
  constructor(
    private readonly broker: Aedes,
    private readonly mayReceive: (client: Client, topic: string) => boolean = () => true,
  ) {
    super()
    // Online from the moment CONNACK went out: a device's first PUBLISH can follow at once, and its
    // "connected" event must be in the log before that publish.
    broker.on('connackSent', (connack, client) => {
      if ((connack as { returnCode?: number }).returnCode === 0) this.ready(client)
    })
    // aedes closes the previous connection of a client id when it registers the new one.
    onTakeover(broker, (old) => this.reasons.set(old, 'takeover'))
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
    if (isClosed(client)) return
    const old = this.sessions.get(client.id)
    if (old) {
      this.reasons.set(old.client, 'takeover')
      this.gone(old.client)
    }
    const { clean, address } = sessionOf(client)
    const s: Session = { client, clientId: client.id, address, connectedAt: Date.now(), clean, messagesIn: 0, messagesOut: 0 }
    onPuback(client, (messageId) => {
      const done = s.acks?.get(messageId)
      if (done) {
        s.acks!.delete(messageId)
        done()
      }
    })
    // Count every delivery to the device (subscriptions, commands, RPC).
    onDeliver(client, () => s.messagesOut++)
    this.sessions.set(client.id, s)
    this.emit('online', s)
  }

  private gone(client: Client): void {
    const s = this.sessions.get(client.id)
    if (!s || s.client !== client) return
    this.sessions.delete(client.id)
    const reason = disconnectedCleanly(client) ? 'clean' : this.stopping ? 'gateway_stop' : (this.reasons.get(client) ?? 'connection_lost')
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
    return s ? subscriptionsOf(s.client) : []
  }

  list(): DeviceInfo[] {
    return [...this.sessions.values()].map(({ clientId, address, connectedAt, clean, messagesIn, messagesOut }) => ({ clientId, address, connectedAt, clean, messagesIn, messagesOut }))
  }

  /**
   * Sends `payload` on `topic` to the device at QoS 1. Resolves 'acked' on its PUBACK, 'offline' if
   * it is not connected or disconnects first, 'timeout' after `timeoutMs`, 'cancelled' when `signal`
   * aborts first. Unless acked, the delivery is withdrawn: a persistent session does not keep it.
   */
  deliver(clientId: string, topic: string, payload: Buffer, timeoutMs: number, signal?: AbortSignal): Promise<DeliveryResult> {
    const s = this.sessions.get(clientId)
    if (!s) return Promise.resolve('offline')
    if (signal?.aborted) return Promise.resolve('cancelled')
    if (!this.mayReceive(s.client, topic)) return Promise.resolve('timeout')
    return new Promise((resolve) => {
      const acks = (s.acks ??= new Map())
      const waiting = (s.waiting ??= new Set())
      let ended = false
      const offline = (): void => finish('offline')
      const cancel = (): void => finish('cancelled')
      const finish = (r: DeliveryResult): void => {
        if (ended) return
        ended = true
        clearTimeout(timer)
        acks.delete(sent.messageId)
        waiting.delete(offline)
        signal?.removeEventListener('abort', cancel)
        if (r !== 'acked') sent.withdraw() // (a PUBACK has removed it already)
        resolve(r)
      }
      const sent = sendQoS1(this.broker, s.client, topic, payload, offline)
      const timer = setTimeout(() => finish('timeout'), timeoutMs)
      acks.set(sent.messageId, () => finish('acked'))
      waiting.add(offline)
      signal?.addEventListener('abort', cancel, { once: true })
    })
  }
}
