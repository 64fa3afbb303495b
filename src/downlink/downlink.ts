// The downlink's own NATS connection, and the commands and RPC that use it. Upstream being down
// does not stop the gateway: the connection is retried with backoff and then reconnects by itself.
import { connect } from '@nats-io/transport-node'
import type { ConnectionOptions, NatsConnection } from '@nats-io/transport-node'
import type { Logger } from '../logger.js'
import type { Commands } from './commands.js'
import type { Rpc } from './rpc.js'

export class Downlink {
  private nc: NatsConnection | undefined
  private running = true
  private readonly loop: Promise<void>
  private wake: (() => void) | undefined

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
      this.rpc.attach(this.nc)
      // The command stream may be missing permissions or JetStream may be starting: retry.
      for (let wait = 1000; this.running; wait = Math.min(30_000, wait * 2)) {
        try {
          await this.commands.attach(this.nc)
          break
        } catch (err) {
          this.logger.warn('downlink: command stream not ready; retrying', { error: err, retryMs: wait })
          await this.pause(wait)
        }
      }
      return
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
