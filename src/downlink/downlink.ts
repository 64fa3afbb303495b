// The downlink's own NATS connection, and the commands, RPC and device requests that use it. Upstream being down
// does not stop the gateway: the connection is retried with backoff and then reconnects by itself.
import type { ConnectionOptions, NatsConnection } from '@nats-io/transport-node'
import { ClosedSignal, remainingMs } from '../lifecycle.js'
import type { Component, Deadline } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import { Backoff, Pause, connectWithBackoff, drainWithin, watchConnection } from '../upstream/index.js'
import type { Commands } from './commands.js'
import type { Requests } from './requests.js'
import type { Rpc } from './rpc.js'

/** The downlink's state, for the `downlink` readiness check. */
export interface DownlinkHealth {
  readonly connected: boolean
  /**
   * RPC requests can reach every device connected here: the connection is not closed and no device's
   * request subscription (`<prefix>.rpc.<device>.>`) was ended by the server (e.g. a permission),
   * and the server refused no subscription for its max_subscriptions since the connection was made.
   * True with no device connected.
   */
  readonly subscribed: boolean
  /** Why the command stream cannot be used ('' = it can). */
  readonly commandsProblem: string
  readonly lastError?: { readonly at: number; readonly message: string }
}

export class Downlink implements Component {
  private nc: NatsConnection | undefined
  private running = true
  private readonly loop: Promise<void>
  private readonly pause = new Pause()
  private closing: Promise<void> | undefined
  private readonly stopped = new ClosedSignal()
  private connected = false
  private commandsProblem = 'not attached yet'
  private lastError: { readonly at: number; readonly message: string } | undefined
  /**
   * Set when the server refused a subscription of this connection for its max_subscriptions (one RPC
   * subscription per connected device can reach it): the connection stays up and the subscription
   * looks open, but some device's requests get no responders. Cleared by a reconnect (every
   * subscription is sent again, and refused again when still too many).
   */
  private subscriptionLimitAt: number | undefined
  private subscriptionLimitLoggedAt = -Infinity

  constructor(
    private readonly servers: readonly string[],
    private readonly connectOptions: Partial<ConnectionOptions>,
    private readonly name: string,
    private readonly commands: Commands,
    private readonly rpc: Rpc,
    private readonly logger: Logger,
    /** Requests from devices to cloud services (absent: none are taken). */
    private readonly requests?: Requests,
  ) {
    this.loop = this.run()
  }

  private async run(): Promise<void> {
    // nats.js reconnects by itself once connected; until the first connection, retry with backoff.
    const nc = await connectWithBackoff({
      servers: this.servers,
      options: { ...this.connectOptions, name: this.name, maxReconnectAttempts: -1, reconnectTimeWait: 500, timeout: 5000 },
      backoff: new Backoff({ minMs: 250, maxMs: 10_000, jitter: false }),
      pause: this.pause,
      running: () => this.running,
      onError: (err, backoff) => {
        // `backoff` has not stepped yet: log once the wait about to start reaches 8 s.
        if (backoff.current >= 4000) this.logger.debug('downlink: NATS not reachable; retrying', { error: err })
      },
    })
    if (!nc) return
    this.nc = nc
    this.watch(nc)
    this.rpc.attach(nc)
    this.requests?.attach(nc)
    // The command stream may be missing permissions or JetStream may be starting: retry.
    for (let wait = 1000; this.running; wait = Math.min(30_000, wait * 2)) {
      try {
        await this.commands.attach(nc)
        this.commandsProblem = ''
        break
      } catch (err) {
        this.commandsProblem = (err as Error).message
        this.lastError = { at: Date.now(), message: `command stream: ${(err as Error).message}` }
        this.logger.warn('downlink: command stream not ready; retrying', { error: err, retryMs: wait })
        await this.pause.sleep(wait)
      }
    }
  }

  /** Follows the connection's state for health. */
  private watch(nc: NatsConnection): void {
    this.connected = true
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'reconnect') this.subscriptionLimitAt = undefined
        else if (s.type === 'error' && /maximum subscriptions exceeded/i.test(s.error.message)) this.onSubscriptionLimit(s.error)
      }
    })().catch(() => {})
    watchConnection(nc, {
      up: (connected) => {
        this.connected = connected
        if (this.requests) this.requests.upstreamUp = connected
      },
      closed: (err) => {
        this.connected = false
        if (this.requests) this.requests.upstreamUp = false
        if (err) this.lastError = { at: Date.now(), message: `connection closed: ${err.message}` }
      },
    })
  }

  private onSubscriptionLimit(err: Error): void {
    const now = Date.now()
    this.subscriptionLimitAt = now
    this.lastError = { at: now, message: `the NATS server refused a subscription: ${err.message} (its max_subscriptions for this user or account; one RPC subscription per connected device): RPC requests (no responders) or commands of some connected devices go unanswered` }
    // Once per burst: every refused SUB (e.g. all of them again after a reconnect) sends one error.
    if (performance.now() - this.subscriptionLimitLoggedAt >= 10_000) {
      this.subscriptionLimitLoggedAt = performance.now()
      this.logger.error('downlink: the NATS server refused a subscription (maximum subscriptions exceeded): RPC requests or commands of some connected devices go unanswered; raise max_subscriptions for the downlink\'s user or account', { error: err })
    }
  }

  /** Connection, RPC subscriptions, command stream, and the latest error of the downlink. */
  get health(): DownlinkHealth {
    const errors = [this.lastError, this.rpc.lastError, this.commands.lastError].filter((e) => e !== undefined)
    return {
      connected: this.connected,
      subscribed: this.rpc.subscribed && this.subscriptionLimitAt === undefined,
      commandsProblem: this.commandsProblem,
      ...(errors.length ? { lastError: errors.reduce((a, b) => (b.at > a.at ? b : a)) } : {}),
    }
  }

  /**
   * Stops reading commands and requests, answers pending requests, drains the connection (at most
   * 1 s, and not past `deadline`). Idempotent: every call resolves when the first is done.
   */
  close(deadline: Deadline): Promise<void> {
    this.closing ??= this.shutdown(deadline)
    return this.closing
  }

  /** Settles (undefined) once closed: the downlink retries upstream failures forever and never stops on its own. */
  closed(): Promise<Error | undefined> {
    return this.stopped.promise
  }

  private async shutdown(deadline: Deadline): Promise<void> {
    this.running = false
    this.requests?.close()
    this.pause.wake()
    await this.commands.close()
    this.rpc.close()
    // A connect in progress (to a server that accepts TCP and never answers, it waits for its own
    // timeout) is abandoned at the deadline: connectWithBackoff closes it if it completes later.
    let timer: NodeJS.Timeout | undefined
    await Promise.race([this.loop.catch(() => {}), new Promise<void>((resolve) => (timer = setTimeout(resolve, remainingMs(deadline))))])
    clearTimeout(timer)
    if (this.nc) await drainWithin(this.nc, Math.min(1000, remainingMs(deadline)))
    this.stopped.resolve()
  }
}
