// The downlink's own NATS connection, and the commands and RPC that use it. Upstream being down
// does not stop the gateway: the connection is retried with backoff and then reconnects by itself.
import { connect } from '@nats-io/transport-node'
import type { ConnectionOptions, NatsConnection } from '@nats-io/transport-node'
import type { Logger } from '../logger.js'
import type { Commands } from './commands.js'
import type { Rpc } from './rpc.js'

/** The downlink's state, for the `downlink` readiness check. */
export interface DownlinkHealth {
  readonly connected: boolean
  /** The RPC request subscription is open. */
  readonly subscribed: boolean
  /** Why the command stream cannot be used ('' = it can). */
  readonly commandsProblem: string
  readonly lastError?: { readonly at: number; readonly message: string }
}

export class Downlink {
  private nc: NatsConnection | undefined
  private running = true
  private readonly loop: Promise<void>
  private wake: (() => void) | undefined
  private connected = false
  private commandsProblem = 'not attached yet'
  private lastError: { readonly at: number; readonly message: string } | undefined

  constructor(
    private readonly servers: readonly string[],
    private readonly connectOptions: Partial<ConnectionOptions>,
    private readonly name: string,
    private readonly commands: Commands,
    private readonly rpc: Rpc,
    private readonly logger: Logger,
  ) {
    this.loop = this.run()
  }

  private async run(): Promise<void> {
    let backoff = 250
    while (this.running) {
      try {
        this.nc = await connect({ ...this.connectOptions, servers: [...this.servers], name: this.name, maxReconnectAttempts: -1, reconnectTimeWait: 500, timeout: 5000 })
      } catch (err) {
        if (backoff >= 8000) this.logger.debug('downlink: NATS not reachable; retrying', { error: err })
        await this.pause(backoff)
        backoff = Math.min(10_000, backoff * 2)
        continue
      }
      if (!this.running) break
      this.watch(this.nc)
      this.rpc.attach(this.nc)
      // The command stream may be missing permissions or JetStream may be starting: retry.
      for (let wait = 1000; this.running; wait = Math.min(30_000, wait * 2)) {
        try {
          await this.commands.attach(this.nc)
          this.commandsProblem = ''
          break
        } catch (err) {
          this.commandsProblem = (err as Error).message
          this.lastError = { at: Date.now(), message: `command stream: ${(err as Error).message}` }
          this.logger.warn('downlink: command stream not ready; retrying', { error: err, retryMs: wait })
          await this.pause(wait)
        }
      }
      return
    }
  }

  /** Follows the connection's state for health. */
  private watch(nc: NatsConnection): void {
    this.connected = true
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') this.connected = false
        else if (s.type === 'reconnect') this.connected = true
      }
    })().catch(() => {})
    void nc.closed().then((err) => {
      this.connected = false
      if (err) this.lastError = { at: Date.now(), message: `connection closed: ${err.message}` }
    })
  }

  /** Connection, RPC subscription, command stream, and the latest error of the downlink. */
  get health(): DownlinkHealth {
    const errors = [this.lastError, this.rpc.lastError, this.commands.lastError].filter((e) => e !== undefined)
    return {
      connected: this.connected,
      subscribed: this.rpc.subscribed,
      commandsProblem: this.commandsProblem,
      ...(errors.length ? { lastError: errors.reduce((a, b) => (b.at > a.at ? b : a)) } : {}),
    }
  }

  /** Sleeps `ms`, or less when close() wakes it. */
  private pause(ms: number): Promise<void> {
    return new Promise<void>((r) => {
      const t = setTimeout(r, ms)
      this.wake = () => (clearTimeout(t), r())
    })
  }

  /** Stops reading commands and requests, answers pending requests, closes the connection. */
  async close(): Promise<void> {
    this.running = false
    this.wake?.()
    await this.commands.close()
    this.rpc.close()
    await this.loop.catch(() => {})
    if (this.nc && !this.nc.isClosed()) {
      await Promise.race([this.nc.drain().catch(() => {}), new Promise((r) => setTimeout(r, 1000))])
      await this.nc.close().catch(() => {})
    }
  }
}
