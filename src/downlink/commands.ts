// Durable commands: JetStream (`<prefix>.cmd.<device>.<rest>`) → MQTT QoS 1 on the device's command
// topic, acknowledged in JetStream only after the device's PUBACK.
//
// The command stream (--cmd-stream) has work-queue retention: a command leaves it when acknowledged.
// Each device gets its own durable pull consumer, `<gatewayId>_<device>`, filtered to its subjects,
// with one unacknowledged command at a time, so commands reach a device in order and a device that
// never acknowledges holds up only itself. A device's consumer is read only while the device is
// connected and subscribed to its command topic; otherwise commands wait in JetStream, not here. A
// command older than its TTL (header Ferry-TTL, or --cmd-ttl-ms) is terminated, never delivered
// late, and reported as the event `command-expired`; one delivered --cmd-max-deliver times without a
// PUBACK is terminated and reported as `command-dead`. Both events go through the ring log, like
// presence. A command's age is measured on the NATS server's clock (server-clock.ts), the clock that
// stamped it, so the gateway's own clock does not matter.
//
// Each command is handled in isolation: one that cannot be delivered as it is (a subject token not
// in the canonical form topicToSubject writes, a level that would be an MQTT wildcard or empty, a
// Ferry-TTL that is not a positive duration) is terminated at once as `command-dead` with the
// reason, so it never holds the device's queue. A valid Ferry-TTL can only shorten --cmd-ttl-ms.
// The consumer's own max_deliver is a backstop should the gateway fail on a command in a way these
// checks do not foresee.
// To an MQTT 5 device a command carries its remaining TTL as Message Expiry Interval and its
// `Ferry-Prop-<name>` headers as User Properties (delivery.ts).
import crypto from 'node:crypto'
import { AckPolicy, DeliverPolicy, RetentionPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import type { JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream'
import type { NatsConnection } from '@nats-io/transport-node'
import { canonicalLevels, deviceToken, filtersOverlap, topicMatches } from '../codec/index.js'
import { parseDurationMs } from '../config/index.js'
import type { Devices } from '../ingress/index.js'
import type { Logger } from '../logger.js'
import { commandProperties } from './delivery.js'
import type { DeviceDelivery } from './delivery.js'
import type { CommandMetrics } from './metrics.js'
import { ServerClock } from './server-clock.js'

export interface CommandOptions {
  readonly stream: string
  readonly subjectPrefix: string
  readonly gatewayId: string
  /** MQTT topic template with {device} and {rest}. */
  readonly topicTemplate: string
  /** Wait for a device's PUBACK this long before trying again. */
  readonly ackTimeoutMs: number
  /** Deliveries without a PUBACK before a command is dead. */
  readonly maxDeliver: number
  /** TTL of commands without a Ferry-TTL header, ms; 0 = none. */
  readonly defaultTtlMs: number
  /** Commands being delivered at once, all devices together. */
  readonly maxInflight: number
  readonly devices: Devices
  /** Appends an event about a device to the ring log. */
  readonly event: (clientId: string, event: string, body: Record<string, unknown>) => void
  readonly logger: Logger
  readonly metrics: CommandMetrics
}

/** Deliveries the server allows beyond --cmd-max-deliver (the gateway terminates a command at delivery maxDeliver + 1). */
const MAX_DELIVER_SPARE = 2

/** How long one pull request waits on the server for a device's next command. */
const PULL_EXPIRES_MS = 30_000
/** A command whose topic the device has not subscribed to is offered again after this long. */
const NOT_SUBSCRIBED_RETRY_MS = 5000
/** Consumers of devices not seen for this long are removed by the server. */
const INACTIVE_NS = 7 * 24 * 3600 * 1e9
/** The server removes a clock probe's consumer after this long if deleting it failed. */
const PROBE_INACTIVE_NS = 30 * 1e9
/** Differences between this host's clock and the server's below this are not worth a warning. */
const SKEW_WARN_MS = 1000

/** Parses a TTL: milliseconds, or a number with ms, s, m, h, d (Ferry's one duration syntax). Undefined when not one. */
export function parseTtl(v: string): number | undefined {
  return parseDurationMs(v, ['ms', 's', 'm', 'h', 'd'])
}

/**
 * Where a command goes and its TTL (ms, 0 = none), or why it cannot be delivered at all. `rest` are
 * the subject's tokens after `<prefix>.cmd.<device>`, `ttlHeader` its Ferry-TTL. Never throws.
 */
export function commandTarget(template: string, clientId: string, rest: readonly string[], ttlHeader: string | undefined, defaultTtlMs: number): { readonly topic: string; readonly ttlMs: number } | { readonly problem: string } {
  const levels = canonicalLevels(rest)
  if (!Array.isArray(levels)) return { problem: `subject ${levels.problem}` }
  if (levels.length === 0) return { problem: 'subject has no topic levels after the device' }
  for (const l of levels) {
    if (l === '') return { problem: 'subject has an empty topic level' }
    if (/[+#]/.test(l)) return { problem: `topic level "${l}" holds an MQTT wildcard (+ or #), which a PUBLISH may not carry` }
    if (l.includes('\0')) return { problem: 'topic level holds U+0000, which MQTT topics may not carry' }
  }
  let ttlMs = defaultTtlMs
  if (ttlHeader !== undefined) {
    const asked = parseTtl(ttlHeader)
    if (asked === undefined || asked <= 0) return { problem: `Ferry-TTL "${ttlHeader}" is not a positive duration (ms, or a number with ms, s, m, h, d)` }
    // A sender may shorten --cmd-ttl-ms, never extend it (0 = none: then any valid TTL applies).
    ttlMs = defaultTtlMs > 0 ? Math.min(defaultTtlMs, asked) : asked
  }
  const topic = commandTopic(template, clientId, levels.join('/'))
  if (/[+#]/.test(topic)) return { problem: `topic "${topic}" holds an MQTT wildcard (+ or #), which a PUBLISH may not carry` }
  return { topic, ttlMs }
}

/** A consumer name for a device: readable when the id is plain, always unique. */
export function consumerName(gatewayId: string, clientId: string): string {
  const plain = /^[A-Za-z0-9_-]{1,48}$/.test(clientId)
  const base = clientId.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 40)
  return plain ? `${gatewayId}_${clientId}` : `${gatewayId}_${base}_${crypto.createHash('sha256').update(clientId).digest('hex').slice(0, 12)}`
}

/** The command topic of a device for `rest` (topic levels). */
export function commandTopic(template: string, clientId: string, rest: string): string {
  return template.replaceAll('{device}', clientId).replaceAll('{rest}', rest)
}

/** A counting semaphore. */
class Slots {
  private used = 0
  private readonly waiting: (() => void)[] = []

  constructor(private readonly size: number) {}

  get inUse(): number {
    return this.used
  }

  async acquire(): Promise<void> {
    if (this.used < this.size) {
      this.used++
      return
    }
    await new Promise<void>((r) => this.waiting.push(r))
  }

  release(): void {
    const next = this.waiting.shift()
    if (next) next()
    else this.used--
  }
}

export class Commands {
  private js: JetStreamClient | undefined
  private jsm: JetStreamManager | undefined
  private readonly pumps = new Map<string, Promise<void>>()
  private readonly consumers = new Set<string>()
  private readonly slots: Slots
  private running = true
  private ready: Promise<void> | undefined
  private readonly clock = new ServerClock(() => this.probeServerTime())
  /** The last failure while reading or handling commands, for health. */
  lastError: { readonly at: number; readonly message: string } | undefined
  /** The host-minus-server clock difference last warned about, ms. */
  private warnedSkewMs = 0
  /** Devices.deliver, typed with the MQTT 5 properties a core that speaks v5 takes. */
  private readonly deliver: DeviceDelivery

  constructor(private readonly opts: CommandOptions) {
    this.deliver = opts.devices.deliver.bind(opts.devices)
    this.slots = new Slots(opts.maxInflight)
    opts.metrics.commandsInflight.collect(() => this.slots.inUse)
    opts.devices.on('online', (d) => this.maybeStart(d.clientId))
    opts.devices.on('subscribed', (clientId) => this.maybeStart(clientId))
  }

  /** Uses `nc` (reconnecting by itself) from now on; creates the command stream when missing. */
  attach(nc: NatsConnection): Promise<void> {
    this.js = jetstream(nc)
    this.ready = (async () => {
      this.jsm = await jetstreamManager(nc, { timeout: 5000 })
      await this.ensureStream(this.jsm)
      await this.sampleClock()
      for (const id of this.opts.devices.list().map((d) => d.clientId)) this.maybeStart(id)
    })()
    return this.ready
  }

  private async ensureStream(jsm: JetStreamManager): Promise<void> {
    const subject = `${this.opts.subjectPrefix}.cmd.>`
    const info = await jsm.streams.info(this.opts.stream).catch(() => undefined)
    if (!info) {
      await jsm.streams.add({ name: this.opts.stream, subjects: [subject], retention: RetentionPolicy.Workqueue })
      this.opts.logger.info('created command stream', { stream: this.opts.stream, subjects: [subject], retention: 'workqueue' })
    } else if (!(info.config.subjects ?? []).includes(subject)) {
      this.opts.logger.warn(`command stream does not capture "${subject}"; commands to this gateway's devices will not arrive`, { stream: this.opts.stream, subjects: info.config.subjects })
    }
  }

  /**
   * The server's current time. nats-server 2.9 tells it in no API response but a new consumer's
   * `created` (2.10 and later also in `ts`), so this makes an ephemeral consumer that matches no
   * command, reads that and deletes it. Its filter `<prefix>.cmd.<token>` holds no command (those are
   * `<prefix>.cmd.<device>.<rest>`) and overlaps no device's `<prefix>.cmd.<device>.>`, as a
   * work-queue stream requires.
   */
  private async probeServerTime(): Promise<string> {
    const jsm = this.jsm!
    const info = await jsm.consumers.add(this.opts.stream, {
      // One token whatever the gateway id holds, so it never overlaps a device's filter.
      filter_subject: `${this.opts.subjectPrefix}.cmd._clock_${this.opts.gatewayId.replace(/[^A-Za-z0-9_-]/g, '_')}`,
      ack_policy: AckPolicy.Explicit,
      deliver_policy: DeliverPolicy.All,
      inactive_threshold: PROBE_INACTIVE_NS,
      mem_storage: true,
    })
    jsm.consumers.delete(this.opts.stream, info.name).catch(() => {})
    return info.ts ?? info.created
  }

  /** Samples the server's clock; logs instead of failing (TTLs then use this host's clock). */
  private async sampleClock(): Promise<void> {
    try {
      await this.clock.sample()
    } catch (err) {
      this.opts.logger.warn("cannot read the NATS server's clock; command TTLs use this host's clock meanwhile", { error: err })
      return
    }
    const skewMs = Math.round(Date.now() - this.clock.now()!)
    if (Math.abs(skewMs - this.warnedSkewMs) > SKEW_WARN_MS) {
      this.warnedSkewMs = skewMs
      this.opts.logger.warn("this host's clock differs from the NATS server's; command TTLs follow the server's", { skewMs })
    }
  }

  /** The NATS server's time now (this host's while it cannot be read), ms since the epoch. */
  private serverNow(): number {
    if (this.clock.due) void this.sampleClock()
    return this.clock.now() ?? Date.now()
  }

  /** Whether the device holds a subscription under its command topics (any command of it may match). */
  private subscribed(clientId: string): boolean {
    const t = this.opts.topicTemplate
    const subs = this.opts.devices.subscriptions(clientId)
    if (t.endsWith('{rest}')) {
      const all = commandTopic(t, clientId, '#')
      return subs.some((f) => filtersOverlap(f, all))
    }
    const probe = commandTopic(t, clientId, 'x')
    return subs.some((f) => topicMatches(f, probe))
  }

  private maybeStart(clientId: string): void {
    if (!this.running || !this.js || this.pumps.has(clientId) || !this.opts.devices.isOnline(clientId) || !this.subscribed(clientId)) return
    const pump = this.pump(clientId).then(
      () => {
        this.pumps.delete(clientId)
        // Back online and subscribed meanwhile (a quick reconnect): start over.
        setImmediate(() => this.maybeStart(clientId))
      },
      (err: unknown) => {
        this.pumps.delete(clientId)
        this.consumers.delete(consumerName(this.opts.gatewayId, clientId)) // made again next time
        if (!this.running) return
        this.lastError = { at: Date.now(), message: `commands to ${JSON.stringify(clientId)}: ${(err as Error).message}` }
        // NATS unreachable, stream or consumer missing: try again in a while (commands wait in JetStream).
        this.opts.logger.warn('command delivery to a device interrupted; retrying in 2 s', { clientId, error: err })
        setTimeout(() => this.maybeStart(clientId), 2000).unref()
      },
    )
    this.pumps.set(clientId, pump)
  }

  private async consumerFor(clientId: string): Promise<string> {
    const name = consumerName(this.opts.gatewayId, clientId)
    if (!this.consumers.has(name)) {
      await this.ready
      await this.jsm!.consumers.add(this.opts.stream, {
        durable_name: name,
        filter_subject: `${this.opts.subjectPrefix}.cmd.${deviceToken(clientId)}.>`,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        max_ack_pending: 1,
        // The server redelivers on its own if the gateway dies holding a command.
        ack_wait: (this.opts.ackTimeoutMs + 5000) * 1_000_000,
        // A backstop: the gateway terminates a command itself after maxDeliver deliveries.
        max_deliver: this.opts.maxDeliver + MAX_DELIVER_SPARE,
        inactive_threshold: INACTIVE_NS,
        // Create or update: a consumer made by an older Ferry (or with another --cmd-max-deliver)
        // is updated in place. nats.js sends action "create" by default, which nats-server 2.10+
        // refuses for an existing consumer with another config (10148). '' is its CreateOrUpdate
        // (ConsumerApiAction is not exported).
      }, { action: '' } as unknown as Parameters<JetStreamManager['consumers']['add']>[2])
      this.consumers.add(name)
    }
    return name
  }

  /** Delivers the device's commands one at a time while it is online and subscribed. */
  private async pump(clientId: string): Promise<void> {
    const { devices } = this.opts
    const consumer = await this.js!.consumers.get(this.opts.stream, await this.consumerFor(clientId))
    while (this.running && devices.isOnline(clientId) && this.subscribed(clientId)) {
      const m = await consumer.next({ expires: PULL_EXPIRES_MS })
      if (!m) continue
      await this.slots.acquire()
      try {
        await this.handle(clientId, m)
      } catch (err) {
        m.nak(1000)
        throw err
      } finally {
        this.slots.release()
      }
    }
  }

  /** Terminates a command that will never be delivered and reports it as `command-dead`. */
  private dead(clientId: string, m: JsMsg, reason: string, about: Record<string, unknown>, deliveries?: number): void {
    m.term() // (no reason text: nats-server 2.9 does not read one)
    this.opts.metrics.commands.inc(1, { result: 'dead' })
    this.opts.metrics.drops.inc(1, { reason: 'dead_letter' })
    this.opts.event(clientId, 'command-dead', { ...about, reason, ...(deliveries === undefined ? {} : { deliveries }) })
    this.opts.logger.warn('command dead', { clientId, ...about, reason })
  }

  private async handle(clientId: string, m: JsMsg): Promise<void> {
    const { metrics, devices } = this.opts
    const about = { subject: m.subject, streamSeq: m.seq }
    let target: ReturnType<typeof commandTarget>
    try {
      const rest = m.subject.split('.').slice(this.opts.subjectPrefix.split('.').length + 2)
      const ttlHeader = m.headers?.get('Ferry-TTL')
      target = commandTarget(this.opts.topicTemplate, clientId, rest, ttlHeader === '' ? undefined : ttlHeader, this.opts.defaultTtlMs)
    } catch (err) {
      target = { problem: `cannot be read: ${(err as Error).message}` }
    }
    if ('problem' in target) return this.dead(clientId, m, target.problem, about)
    const { topic, ttlMs: ttl } = target
    const ageMs = this.serverNow() - m.time.getTime() // both on the server's clock
    if (ttl && ageMs > ttl) {
      m.term() // (no reason text: nats-server 2.9 does not read one)
      metrics.commands.inc(1, { result: 'expired' })
      metrics.drops.inc(1, { reason: 'expired' })
      this.opts.event(clientId, 'command-expired', { ...about, ttlMs: ttl, ageMs: Math.round(ageMs) })
      this.opts.logger.info('command expired; not delivered', { clientId, ...about, ttlMs: ttl })
      return
    }
    // Only to a device subscribed to this very topic (it may hold just commands/<id>/reboot).
    const wanted = devices.subscriptions(clientId).some((f) => topicMatches(f, topic))
    if (m.info.deliveryCount > this.opts.maxDeliver) {
      const reason = wanted ? `not acknowledged by the device after ${this.opts.maxDeliver} deliveries` : `the device is not subscribed to ${topic} (${this.opts.maxDeliver} tries)`
      return this.dead(clientId, m, reason, about, this.opts.maxDeliver)
    }
    if (!wanted) {
      // Its later commands wait behind it (one at a time, in order): try again later, then dead.
      m.nak(NOT_SUBSCRIBED_RETRY_MS)
      metrics.commands.inc(1, { result: 'not_subscribed' })
      return
    }
    const started = performance.now()
    // To a v5 device, with what is left of its TTL as Message Expiry Interval and its Ferry-Prop-* headers.
    const props = commandProperties(m.headers, ttl ? ttl - ageMs : undefined)
    const r = await this.deliver(clientId, topic, Buffer.from(m.data), this.opts.ackTimeoutMs, undefined, props)
    if (r === 'acked') {
      m.ack() // the server holds this device's next command until it has processed the ack (max_ack_pending 1)
      metrics.commands.inc(1, { result: 'delivered' })
      metrics.commandLatency.observe((performance.now() - started) / 1000)
    } else if (r === 'too_large') {
      // It can never be delivered to this device (MQTT 5 Maximum Packet Size): dead now, not after retries.
      return this.dead(clientId, m, `larger than the device's Maximum Packet Size (MQTT 5)`, about, m.info.deliveryCount)
    } else {
      // Back to JetStream: it is delivered again when the device is (still, or again) there. A PUBACK
      // with a failure reason code (MQTT 5, 'refused') is not an acknowledgement: retried like a timeout.
      const unacked = r === 'timeout' || r === 'refused'
      m.nak(unacked ? 1000 : 0)
      metrics.commands.inc(1, { result: unacked ? 'unacknowledged' : 'offline' })
    }
  }

  /** Stops reading commands; the one being delivered goes back to JetStream if unacknowledged. */
  async close(): Promise<void> {
    this.running = false
    // Pumps wait in a pull request of up to 30 s; their commands are nak'd or redelivered by the
    // server (ack_wait), so there is nothing to wait for.
  }
}
