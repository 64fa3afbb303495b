// Connecting to NATS, shared by the forwarder and the downlink: attempts with backoff until one
// succeeds or the user stops, and the connection's state followed for health.
//
// Reconnection is each user's choice, passed in `options`: the forwarder connects with nats.js's
// reconnection off and one connection per session (see forward/forwarder.ts), the downlink lets
// nats.js reconnect by itself.
import { connect } from '@nats-io/transport-node'
import type { ConnectionOptions, NatsConnection } from '@nats-io/transport-node'
import type { Backoff, Pause } from './backoff.js'

/** How to connect, and when to stop trying. */
export interface ConnectAttempts {
  readonly servers: readonly string[]
  /** Authentication and TLS (forward/upstream-auth.ts) plus the user's own options (name, reconnect, timeouts). */
  readonly options: Partial<ConnectionOptions>
  readonly backoff: Backoff
  /** The user's pause: its wake() (on close) ends the wait between attempts. */
  readonly pause: Pause
  /** False once the user stops: no further attempt, and a connection made meanwhile is closed. */
  readonly running: () => boolean
  /** Called after a failed attempt, before the wait; `backoff` has not stepped yet. */
  readonly onError?: (err: unknown, backoff: Backoff) => void
}

/**
 * Connects, with a backoff step between failed attempts, until one succeeds (the backoff is then
 * reset) or `running()` turns false (undefined).
 */
export async function connectWithBackoff(a: ConnectAttempts): Promise<NatsConnection | undefined> {
  while (a.running()) {
    try {
      const nc = await connect({ ...a.options, servers: [...a.servers] })
      if (!a.running()) {
        await nc.close().catch(() => {})
        return undefined
      }
      a.backoff.reset()
      return nc
    } catch (err) {
      a.onError?.(err, a.backoff)
      await a.pause.sleep(a.backoff.next())
    }
  }
  return undefined
}

/** What a user of a connection hears about its state. */
export interface ConnectionWatcher {
  /** The socket went down (nats.js reconnects, when it was asked to) or came back. */
  readonly up?: (connected: boolean) => void
  /** The connection closed for good, with the error that closed it, if any. */
  readonly closed: (err: Error | undefined) => void
}

/** Follows `nc`'s status (disconnect, reconnect) and its close. */
export function watchConnection(nc: NatsConnection, w: ConnectionWatcher): void {
  const up = w.up
  if (up) {
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') up(false)
        else if (s.type === 'reconnect') up(true)
      }
    })().catch(() => {})
  }
  void nc.closed().then((err) => w.closed(err ?? undefined))
}

/** Drains `nc` for at most `ms`, then closes it. Never rejects. */
export async function drainWithin(nc: NatsConnection, ms: number): Promise<void> {
  if (nc.isClosed()) return
  let timer: NodeJS.Timeout | undefined
  const drained = await Promise.race([
    nc.drain().then(
      () => true,
      () => true,
    ),
    new Promise<boolean>((r) => (timer = setTimeout(() => r(false), ms))),
  ])
  clearTimeout(timer)
  if (!drained || !nc.isClosed()) await nc.close().catch(() => {})
}
