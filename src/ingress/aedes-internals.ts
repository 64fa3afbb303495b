// The one adapter over aedes 1.2 internals (beyond its public API) that the device registry needs:
// sending a client a QoS 1 PUBLISH of our own and seeing its PUBACK, taking that copy back out of a
// persistent session's queue, counting deliveries, noticing takeovers. test/unit/aedes-internals.test.ts
// pins each of these to the installed aedes; it fails first when aedes changes them.
//
// How aedes 1.2 sends a QoS 1 message (lib/client.js): `deliverQoS(packet)` writes it on the next
// turn. For a persistent session (clean=false) it first calls `persistence.outgoingUpdate` on the
// copy queued by `outgoingEnqueue` (and fails the client when there is none); that gives the queued
// copy its packet id (it is found by brokerId and brokerCounter; enqueued, it has none). The copy
// stays queued until the client's PUBACK, which removes it by packet id (`outgoingClearMessageId`,
// lib/handlers/puback.js). On a reconnect with clean=false, aedes writes every queued copy again
// right after the CONNACK (`emptyQueue`, lib/handlers/connect.js). So a copy the gateway has given
// up on must be removed from the queue, or the device gets it again on its next connect.
import type { Aedes, Client } from 'aedes'

interface ClientInternals {
  _nextId: number
  _parser: { on(event: 'packet', listener: (p: { cmd: string; messageId?: number }) => void): void }
  deliverQoS(packet: Record<string, unknown>, cb: () => void): void
  deliver0(packet: unknown, cb: () => void): void
  _disconnected?: boolean
  closed?: boolean
  clean: boolean
  conn: { remoteAddress?: string }
  subscriptions: Record<string, { qos: number }>
}

interface Persistence {
  outgoingEnqueue(sub: { clientId: string }, packet: unknown): Promise<void>
  outgoingUpdate(client: Client, packet: unknown): Promise<void>
  outgoingClearMessageId(client: Client, packet: { messageId: number }): Promise<unknown>
}

interface BrokerInternals {
  id: string
  counter: number
  persistence: Persistence
  clients: Record<string, Client | undefined>
  registerClient(c: Client): void
}

const internals = (c: Client): ClientInternals => c as unknown as ClientInternals
const brokerInternals = (b: Aedes): BrokerInternals => b as unknown as BrokerInternals

/** Calls `listener` with the packet id of every PUBACK the client sends. */
export function onPuback(client: Client, listener: (messageId: number) => void): void {
  internals(client)._parser.on('packet', (p) => {
    if (p.cmd === 'puback' && p.messageId !== undefined) listener(p.messageId)
  })
}

/** Calls `listener` for every PUBLISH aedes sends the client (subscriptions, commands, RPC). */
export function onDeliver(client: Client, listener: () => void): void {
  const c = internals(client)
  const deliverQoS = c.deliverQoS.bind(c)
  const deliver0 = c.deliver0.bind(c)
  c.deliverQoS = (packet, cb) => (listener(), deliverQoS(packet, cb))
  c.deliver0 = (packet, cb) => (listener(), deliver0(packet, cb))
}

/** Calls `listener` with the previous connection of a client id when a new one takes it over. */
export function onTakeover(broker: Aedes, listener: (previous: Client) => void): void {
  const b = brokerInternals(broker)
  const register = b.registerClient.bind(broker)
  b.registerClient = (c) => {
    const old = b.clients[c.id]
    if (old && old !== c) listener(old)
    register(c)
  }
}

/** The topic filters the client holds. */
export function subscriptionsOf(client: Client): string[] {
  return Object.keys(internals(client).subscriptions ?? {})
}

/** Whether the client ended with a DISCONNECT packet. */
export function disconnectedCleanly(client: Client): boolean {
  return internals(client)._disconnected === true
}

/** Whether aedes has closed the client (possibly before its events reached us). */
export function isClosed(client: Client): boolean {
  return internals(client).closed === true
}

export function sessionOf(client: Client): { clean: boolean; address: string } {
  const c = internals(client)
  return { clean: c.clean, address: c.conn.remoteAddress ?? '' }
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

/**
 * Sends `payload` on `topic` to the client at QoS 1, numbered from the client's own packet id
 * counter the way aedes numbers its deliveries. A persistent session's copy is queued in aedes'
 * persistence first, as aedes' own Client.publish does. `onFailed` is called when it cannot be queued.
 */
export function sendQoS1(broker: Aedes, client: Client, topic: string, payload: Buffer, onFailed: () => void): Sent {
  const b = brokerInternals(broker)
  const c = internals(client)
  const messageId = c._nextId
  c._nextId = messageId >= 65535 ? 1 : messageId + 1
  const packet = { cmd: 'publish', brokerId: b.id, brokerCounter: ++b.counter, topic, payload, qos: 1, retain: false, dup: false, messageId }
  if (c.clean) {
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

/** Whether `value` is an aedes client (the argument of a broker event that names one). */
function isClient(value: unknown): value is Client {
  return typeof value === 'object' && value !== null && 'conn' in value && 'broker' in value
}

/**
 * Catches a throw from any listener of a broker event that names a client (`client`,
 * `connackSent`, `clientDisconnect`, `subscribe`, …). aedes emits these from its packet handlers,
 * where a throw would end the process with every device; instead `failed` is told, and can close
 * that one client. Events naming no client rethrow as before.
 */
export function guardClientEvents(broker: Aedes, failed: (event: string, client: Client, err: unknown) => void): void {
  const emit = broker.emit.bind(broker) as (event: string | symbol, ...args: unknown[]) => boolean
  ;(broker as unknown as { emit: typeof emit }).emit = (event, ...args) => {
    try {
      return emit(event, ...args)
    } catch (err) {
      const client = args.find(isClient)
      if (!client) throw err
      failed(String(event), client, err)
      return true
    }
  }
}
