// The connected devices: who is online, since when, from where, with message counts; and the one
// way to send a device a QoS 1 message and learn when it acknowledged it (commands, RPC).
//
// Everything it knows of the MQTT core comes through aedes-seam.ts: session events, and a QoS 1
// delivery that resolves on the device's PUBACK. A delivery that ends without a PUBACK (timeout,
// device gone, cancelled) is withdrawn from a persistent session's queue, so a device reconnecting
// with clean=false gets only what is still being delivered: at most one copy per delivery.
import { EventEmitter } from 'node:events'
import type { DeliveryResult, MqttClientRef, MqttCore, PublishProperties, SessionEndReason } from './aedes-seam.js'

export type { DeliveryResult } from './aedes-seam.js'

/** Why a device went offline (the `reason` of its "disconnected" event). */
export type DisconnectReason = SessionEndReason | 'gateway_stop'

export interface DeviceInfo {
  readonly clientId: string
  readonly address: string
  readonly connectedAt: number
  readonly clean: boolean
  /** Set when another gateway of the fleet took the device over (its "disconnected" event names it). */
  readonly takenOverBy?: string
  messagesIn: number
  messagesOut: number
}

interface Session extends DeviceInfo {
  readonly client: MqttClientRef
  takenOverBy?: string
}

export interface DeviceEvents {
  online: [info: DeviceInfo]
  /** `reasonCode`: MQTT 5 only, the DISCONNECT reason code (MqttClientRef.disconnectReasonCode). */
  offline: [info: DeviceInfo, reason: DisconnectReason, reasonCode?: number]
  subscribed: [clientId: string, filters: string[]]
}

export class Devices extends EventEmitter<DeviceEvents> {
  private readonly sessions = new Map<string, Session>()
  /** Set when the gateway stops: the disconnects that follow are reported as `gateway_stop`. */
  stopping = false

  /**
   * `mayReceive` is asked before each delivery (the ACL in force now, see Admission.mayReceive): a
   * delivery it refuses is not sent and ends 'timeout' at once, as one the device never acknowledged
   * (commands are then retried after a pause and end dead; 'offline' would be retried at once).
   */
  constructor(
    private readonly core: MqttCore,
    private readonly mayReceive: (client: MqttClientRef, topic: string) => boolean = () => true,
  ) {
    super()
    // Online from the moment CONNACK went out: a device's first PUBLISH can follow at once, and its
    // "connected" event must be in the log before that publish.
    core.on('connected', (client, outcome) => {
      if (outcome.accepted) this.ready(client)
    })
    core.on('disconnected', (client, reason) => this.gone(client, reason))
    core.on('subscribed', (client, topics) => {
      if (this.sessions.get(client.id)?.client === client) this.emit('subscribed', client.id, topics)
    })
  }

  private ready(client: MqttClientRef): void {
    // Reset between the CONNACK write and this event: its disconnect has already passed by.
    if (client.closed) return
    const old = this.sessions.get(client.id)
    // The core closes the previous connection of a client id when it registers the new one.
    if (old) this.gone(old.client, old.client.sentDisconnect ? 'clean' : 'takeover')
    const s: Session = { client, clientId: client.id, address: client.address, connectedAt: Date.now(), clean: client.clean, messagesIn: 0, messagesOut: 0 }
    // Count every delivery to the device (subscriptions, commands, RPC).
    this.core.onDeliver(client, () => s.messagesOut++)
    this.sessions.set(client.id, s)
    this.emit('online', s)
  }

  private gone(client: MqttClientRef, ended: SessionEndReason): void {
    const s = this.sessions.get(client.id)
    if (!s || s.client !== client) return
    this.sessions.delete(client.id)
    const reason: DisconnectReason = ended === 'clean' ? 'clean' : s.takenOverBy !== undefined ? 'takeover' : this.stopping ? 'gateway_stop' : ended
    this.core.ended(client)
    this.emit('offline', s, reason, client.disconnectReasonCode)
  }

  /**
   * Closes the device's session because gateway `by` of the fleet now holds it (the registry's
   * cross-gateway takeover): MQTT 5 DISCONNECT 0x8E, 3.1.1 close. Its "offline" event has reason
   * 'takeover' and `takenOverBy`. False when the device is not connected here.
   */
  takeOver(clientId: string, by: string): boolean {
    const s = this.sessions.get(clientId)
    if (!s) return false
    s.takenOverBy = by
    this.core.takeOver(s.client)
    return true
  }

  /** Counts a publish received from a device. */
  countIn(client: MqttClientRef | null): void {
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
    return s ? this.core.subscriptionsOf(s.client) : []
  }

  list(): DeviceInfo[] {
    return [...this.sessions.values()].map(({ clientId, address, connectedAt, clean, messagesIn, messagesOut }) => ({ clientId, address, connectedAt, clean, messagesIn, messagesOut }))
  }

  /**
   * Sends `payload` on `topic` to the device at QoS 1. Resolves 'acked' on its PUBACK, 'offline' if
   * it is not connected or disconnects first, 'timeout' after `timeoutMs`, 'cancelled' when `signal`
   * aborts first. Unless acked, the delivery is withdrawn: a persistent session does not keep it.
   */
  deliver(clientId: string, topic: string, payload: Buffer, timeoutMs: number, signal?: AbortSignal, properties?: PublishProperties): Promise<DeliveryResult> {
    const s = this.sessions.get(clientId)
    if (!s) return Promise.resolve('offline')
    if (signal?.aborted) return Promise.resolve('cancelled')
    if (!this.mayReceive(s.client, topic)) return Promise.resolve('timeout')
    return this.core.deliver(s.client, topic, payload, timeoutMs, signal, properties)
  }
}
