// Durable commands: JetStream (`<prefix>.cmd.<device>.<rest>`) → MQTT QoS 1 on the device's command
// topic, acknowledged in JetStream only after the device's PUBACK.
//
// The command stream (--cmd-stream, created with --stream-replicas replicas) has work-queue retention:
// a command leaves it when acknowledged. Each device has ONE durable pull consumer, `cmd_<device>`
// (consumerName), shared by every gateway of a fleet, filtered to the device's subjects, with one
// unacknowledged command at a time: commands reach a device in order, across gateways too, and a
// device that never acknowledges holds up only itself. A gateway reads a device's consumer only
// while the device is connected to it and subscribed to its command topic, and stops pulling the
// moment the device leaves (no pull request stays at the server to take its next command), so
// whichever gateway the device connects to next gets its waiting commands at once.
// An older Ferry's per-gateway consumer `<gatewayId>_<device>` with the same filter blocks the
// shared one on a work-queue stream (JetStream error 10100): it is deleted (its unacknowledged
// command stays in the stream) and the shared one created.
//
// A command older than its TTL (header Ferry-TTL, or --cmd-ttl-ms) is terminated, never delivered
// late, and reported as the event `command-expired`; one the device was offered --cmd-max-deliver
// times without a PUBACK is terminated and reported as `command-dead` (how moves are kept out of that
// count: see `handle`). Both events go through the ring log, like presence. A command's age is
// measured on the NATS server's clock (server-clock.ts), the clock that stamped it, so the gateway's
// own clock does not matter.
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
import { AckPolicy, DeliverPolicy, JetStreamApiError, RetentionPolicy, jetstream, jetstreamManager } from '@nats-io/jetstream'
import type { ConsumerMessages, JetStreamClient, JetStreamManager, JsMsg } from '@nats-io/jetstream'
import type { NatsConnection, Subscription } from '@nats-io/transport-node'
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
  /** num_replicas of --cmd-stream when this gateway creates it (--stream-replicas); default 1. */
  readonly replicas?: number
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

/**
 * Deliveries the server allows beyond --cmd-max-deliver. A device that moves (or reconnects) while a
 * command is out can cost a delivery that never reached it; the gateway terminates a command (with
 * `command-dead`) at delivery maxDeliver + MAX_DELIVER_SPARE - 1 whatever happened, so the server's
 * own limit, which would leave it in the stream without a word, is never reached through moves.
 */
const MAX_DELIVER_SPARE = 10
/** JetStream's error code for a filtered consumer that overlaps another on a work-queue stream (JSConsumerWQConsumerNotUniqueErr). */
const WQ_CONSUMER_NOT_UNIQUE = 10100

/** How long one pull request waits on the server for a device's next command (it is withdrawn at once when the device leaves). */
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

/**
 * The name of a device's command consumer, the same on every gateway of a fleet: `cmd_<clientId>` when
 * the id matches /^[A-Za-z0-9_-]{1,48}$/ and does not end in `_<24 hex digits>`, else `cmd_<id with
 * other characters as _, first 40>_<first 24 hex digits of sha256(id)>` (readable when the id is
 * plain). One-to-one: a plain name never ends like a hashed one, and two hashed names are equal only
 * if 96 bits of sha256 are. consumerFor still checks the filter of a consumer it finds.
 */
export function consumerName(clientId: string): string {
  return `cmd_${deviceSuffix(clientId, 24)}`
}

/** The name an older Ferry (one consumer per gateway and device) gave a device's consumer: `<gatewayId>_<device>`. */
export function legacyConsumerName(gatewayId: string, clientId: string): string {
  return `${gatewayId}_${deviceSuffix(clientId)}`
}

function deviceSuffix(clientId: string, hexDigits = 12): string {
  if (/^[A-Za-z0-9_-]{1,48}$/.test(clientId) && (hexDigits === 12 || !HASHED_TAIL.test(clientId))) return clientId
  const base = clientId.replace(/[^A-Za-z0-9_-]/g, '_').slice(0, 40)
  return `${base}_${crypto.createHash('sha256').update(clientId).digest('hex').slice(0, hexDigits)}`
}

/** The tail of a hashed consumer name: a plain client id that ends like one is hashed too, so names are one-to-one. */
const HASHED_TAIL = /_[0-9a-f]{24}$/

/** The command topic of a device for `rest` (topic levels). */
export function commandTopic(template: string, clientId: string, rest: string): string {
  return template.replaceAll('{device}', clientId).replaceAll('{rest}', rest)
}

/**
 * Withdraws a pull request from the server without losing a command handed out meanwhile.
 * nats-server 2.9 has no call to cancel a pull request; it drops a waiting one whose reply inbox has
 * no interest any more (consumer.go nextWaiting). ConsumerMessages.stop() unsubscribes at once, so a
 * command the server sent just before the UNSUB arrived is dropped by the client and waits for
 * ack_wait (seen in the fleet test, about 1 move in 3 with commands 25 ms apart). Draining the
 * pull's subscription instead (UNSUB, then a PING: what arrives before the PONG is still delivered)
 * hands such a command to the pump, which gives it back at once; nats.js ends the iterator when the
 * drain completes (PullConsumerMessagesImpl.start: sub.closed + isDraining). `sub` is a public field
 * of nats.js 3.4's PullConsumerMessagesImpl, not of the ConsumerMessages interface: stop() when it is
 * missing. On a cluster a command already on its way from another node when the UNSUB reached this
 * node can still be dropped (a route's latency): it is redelivered after ack_wait.
 */
function withdraw(pull: ConsumerMessages): void {
  const sub = (pull as unknown as { readonly sub?: Subscription }).sub
  if (sub && typeof sub.drain === 'function' && !sub.isClosed()) {
    if (!sub.isDraining()) sub.drain().catch(() => pull.stop())
  } else pull.stop()
}

/** The error for a consumer name that already serves another filter (another device's, or another prefix's). */
function collision(name: string, has: string, filter: string): Error {
  return new Error(`consumer ${name} already serves ${has}, not ${filter}: two client ids map to this one name; this device's commands are not delivered (rename one device, or delete the consumer)`)
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
  /** The open pull of each pumping device: stopped the moment the device leaves. */
  private readonly pulls = new Map<string, ConsumerMessages>()
  /**
   * Per device, the command (stream sequence) now being offered to it here and how many times the
   * device had it without a PUBACK, at this gateway since it connected. Bounded by the devices
   * connected here: removed when the device leaves.
   */
  private readonly tries = new Map<string, { seq: number; n: number }>()
  /**
   * The consumers known to exist, by name, with the filter they were made for. Two client ids can map
   * to one name (a plain id spelled like another id's hashed form, `<id as _>_<sha256 12 hex>`): the
   * filter tells them apart, and a consumer made for another device is never used nor updated.
   */
  private readonly consumers = new Map<string, string>()
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
    opts.devices.on('offline', (d) => this.leave(d.clientId))
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
    const replicas = this.opts.replicas ?? 1
    if (!info) {
      await jsm.streams.add({ name: this.opts.stream, subjects: [subject], retention: RetentionPolicy.Workqueue, num_replicas: replicas })
      this.opts.logger.info('created command stream', { stream: this.opts.stream, subjects: [subject], retention: 'workqueue', replicas })
      return
    }
    if (!(info.config.subjects ?? []).includes(subject)) {
      this.opts.logger.warn(`command stream does not capture "${subject}"; commands to this gateway's devices will not arrive`, { stream: this.opts.stream, subjects: info.config.subjects })
    }
    const has = info.config.num_replicas || 1
    if (has < replicas) {
      this.opts.logger.warn(`command stream has ${has} replica(s), fewer than --stream-replicas ${replicas}; left as it is (losing a node may lose or stall commands)`, { stream: this.opts.stream, replicas: has, wanted: replicas })
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
    if (!this.running || !this.js || this.pumps.has(clientId) || !this.present(clientId)) return
    const pump = this.pump(clientId).then(
      () => {
        this.pumps.delete(clientId)
        // Back online and subscribed meanwhile (a quick reconnect): start over.
        setImmediate(() => this.maybeStart(clientId))
      },
      (err: unknown) => {
        this.pumps.delete(clientId)
        const name = consumerName(clientId)
        // Made again next time (unless it is another device's, which that device keeps).
        if (this.consumers.get(name) === this.filterOf(clientId)) this.consumers.delete(name)
        if (!this.running) return
        this.lastError = { at: Date.now(), message: `commands to ${JSON.stringify(clientId)}: ${(err as Error).message}` }
        // NATS unreachable, stream or consumer missing: try again in a while (commands wait in JetStream).
        this.opts.logger.warn('command delivery to a device interrupted; retrying in 2 s', { clientId, error: err })
        setTimeout(() => this.maybeStart(clientId), 2000).unref()
      },
    )
    this.pumps.set(clientId, pump)
  }

  /** The device is connected here and subscribed to its command topic: its commands may be pulled. */
  private present(clientId: string): boolean {
    return this.running && this.opts.devices.isOnline(clientId) && this.subscribed(clientId)
  }

  /** The device left this gateway: withdraw its pull request at once (see `withdraw`). */
  private leave(clientId: string): void {
    const pull = this.pulls.get(clientId)
    if (pull) withdraw(pull)
    this.tries.delete(clientId)
  }

  /**
   * Creates (or updates) the device's shared consumer. An existing consumer with this config is
   * used as it is: on a JetStream cluster, nats-server 2.9 turns every create of an existing durable
   * into a config update, which disturbs the command it holds (seen: a nak'd command then waited for
   * ack_wait). Gateways creating it at the same moment send the same config: the later create is an
   * update with nothing to change. A gateway with another --cmd-max-deliver / --cmd-ack-timeout-ms
   * updates it in place (keep those the same across a fleet).
   */
  private async consumerFor(clientId: string): Promise<string> {
    const name = consumerName(clientId)
    const filter = this.filterOf(clientId)
    const known = this.consumers.get(name)
    if (known !== undefined && known !== filter) throw collision(name, known, filter)
    if (known === undefined) {
      await this.ready
      const config = {
        durable_name: name,
        filter_subject: filter,
        ack_policy: AckPolicy.Explicit,
        deliver_policy: DeliverPolicy.All,
        // One command out at a time, whichever gateway holds it: the device's order holds across gateways.
        max_ack_pending: 1,
        // The server redelivers on its own if the gateway dies holding a command.
        ack_wait: (this.opts.ackTimeoutMs + 5000) * 1_000_000,
        // A backstop: the gateway terminates a command itself before this.
        max_deliver: this.opts.maxDeliver + MAX_DELIVER_SPARE,
        inactive_threshold: INACTIVE_NS,
      }
      // Create or update: nats.js sends action "create" by default, which nats-server 2.10+ refuses
      // for an existing consumer with another config (10148). '' is its CreateOrUpdate
      // (ConsumerApiAction is not exported).
      const createOrUpdate = (): Promise<unknown> => this.jsm!.consumers.add(this.opts.stream, config, { action: '' } as unknown as Parameters<JetStreamManager['consumers']['add']>[2])
      const has = (await this.jsm!.consumers.info(this.opts.stream, name).catch(() => undefined))?.config
      // Another device's consumer of the same name (or another prefix's): never taken over or re-filtered.
      if (has?.filter_subject !== undefined && has.filter_subject !== filter) throw collision(name, has.filter_subject, filter)
      const same = has !== undefined && (Object.keys(config) as (keyof typeof config)[]).every((k) => has[k] === config[k])
      if (same) {
        this.consumers.set(name, filter)
        return name
      }
      try {
        await createOrUpdate()
      } catch (err) {
        if (!(err instanceof JetStreamApiError) || err.code !== WQ_CONSUMER_NOT_UNIQUE) throw err
        await this.migrate(clientId, name, filter)
        await createOrUpdate()
      }
      this.consumers.set(name, filter)
    }
    return name
  }

  /** The filter of a device's consumer: `<prefix>.cmd.<deviceToken>.>`. */
  private filterOf(clientId: string): string {
    return `${this.opts.subjectPrefix}.cmd.${deviceToken(clientId)}.>`
  }

  /**
   * Deletes the consumers an older Ferry made for this device (`<gatewayId>_<device>`, same filter),
   * which a work-queue stream lets no other consumer overlap. Their unacknowledged command stays in
   * the stream for the new consumer. A consumer that overlaps with another filter is not ours: left
   * alone, and the error names it.
   */
  private async migrate(clientId: string, name: string, filter: string): Promise<void> {
    const jsm = this.jsm!
    const stream = this.opts.stream
    const old: string[] = []
    // Usually this gateway's own consumer from before the upgrade; else any gateway's, found by filter.
    const own = legacyConsumerName(this.opts.gatewayId, clientId)
    const info = await jsm.consumers.info(stream, own).catch(() => undefined)
    if (info?.config.filter_subject === filter) old.push(own)
    else {
      for await (const c of jsm.consumers.list(stream)) if (c.name !== name && c.config.filter_subject === filter) old.push(c.name)
    }
    if (old.length === 0) throw new Error(`consumer ${name}: another consumer of work-queue stream ${stream} overlaps its filter ${filter}; delete it`)
    for (const o of old) {
      try {
        await jsm.consumers.delete(stream, o)
      } catch (err) {
        // Another gateway migrating the same device at the same time deleted it first.
        if (!(err instanceof JetStreamApiError) || err.status !== 404) throw err
      }
      this.opts.logger.info("deleted an older Ferry's per-gateway command consumer; the device's commands now use one consumer shared by the fleet", { clientId, stream, deleted: o, consumer: name })
    }
  }

  /**
   * Delivers the device's commands one at a time while it is here (online and subscribed): one pull
   * request for one command at a time (fetch), withdrawn by `leave`. Not consume(): nats.js sends a
   * pull request when its iterator reaches it, so consume()'s refill, queued behind the command being
   * delivered, can go out after the device has left. fetch() sends its one request when first
   * iterated and none after its command.
   */
  private async pump(clientId: string): Promise<void> {
    const consumer = await this.js!.consumers.get(this.opts.stream, await this.consumerFor(clientId))
    while (this.present(clientId)) {
      const pull = await consumer.fetch({ max_messages: 1, expires: PULL_EXPIRES_MS })
      this.pulls.set(clientId, pull)
      try {
        // Left meanwhile: stopped before iterating, its pull request is never sent.
        if (!this.present(clientId)) return
        // One command per fetch: the loop is left after it, never asking the iterator for more. Its idle
        // heartbeat monitor (expires / 2, two missed) keeps running while the command waits for a slot
        // and a PUBACK, and the server sends no heartbeat for a satisfied pull: the iterator's next step
        // would throw "heartbeats missed" after a delivery longer than about 30 s.
        for await (const m of pull) {
          if (!this.present(clientId)) {
            // Handed out as the device left (or the gateway closes): never offered, back at once.
            m.nak()
            this.opts.metrics.commands.inc(1, { result: 'offline' })
            break
          }
          await this.slots.acquire()
          try {
            if (!this.present(clientId)) {
              // Left while its command waited for a slot (--cmd-max-inflight): back at once, no try counted.
              m.nak()
              this.opts.metrics.commands.inc(1, { result: 'offline' })
              break
            }
            await this.handle(clientId, m)
          } catch (err) {
            m.nak(1000)
            throw err
          } finally {
            this.slots.release()
          }
          break
        }
      } finally {
        pull.stop()
        if (this.pulls.get(clientId) === pull) this.pulls.delete(clientId)
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

  /**
   * Delivers one command, or terminates it (dead, expired), or hands it back to JetStream.
   *
   * What counts toward --cmd-max-deliver: JetStream's delivery count is shared by the fleet (one
   * consumer) and also grows when a command goes back because the device left (it moved to another
   * gateway, or dropped) before or while it was being sent. So a command is dead only when that count
   * is past --cmd-max-deliver AND the device already had it here, since it connected here, without a
   * PUBACK (or without a subscription to its topic): moves use up no try the device did not get where
   * it is now. A command handed back because the device left is never counted here. Whatever the
   * moves, a command is terminated (`command-dead`) at delivery maxDeliver + MAX_DELIVER_SPARE - 1,
   * before the consumer's max_deliver would leave it in the stream without a word.
   */
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
    const last = this.tries.get(clientId)
    const triedHere = last?.seq === m.seq ? last.n : 0
    const count = m.info.deliveryCount
    if ((count > this.opts.maxDeliver && triedHere > 0) || count >= this.opts.maxDeliver + MAX_DELIVER_SPARE - 1) {
      this.tries.delete(clientId)
      const reason =
        count > this.opts.maxDeliver && triedHere > 0
          ? wanted
            ? `not acknowledged by the device after ${this.opts.maxDeliver} deliveries`
            : `the device is not subscribed to ${topic} (${this.opts.maxDeliver} tries)`
          : `delivered ${count - 1} times without a PUBACK (the device left while it was out)`
      return this.dead(clientId, m, reason, about, count - 1)
    }
    if (!wanted) {
      // Its later commands wait behind it (one at a time, in order): try again later, then dead.
      this.tries.set(clientId, { seq: m.seq, n: triedHere + 1 })
      m.nak(NOT_SUBSCRIBED_RETRY_MS)
      metrics.commands.inc(1, { result: 'not_subscribed' })
      return
    }
    const started = performance.now()
    // To a v5 device, with what is left of its TTL as Message Expiry Interval and its Ferry-Prop-* headers.
    const props = commandProperties(m.headers, ttl ? ttl - ageMs : undefined)
    const r = await this.deliver(clientId, topic, Buffer.from(m.data), this.opts.ackTimeoutMs, undefined, props)
    // Only while the device is still here: `leave` dropped its entry (no stale try for its next visit).
    if ((r === 'timeout' || r === 'refused') && this.present(clientId)) this.tries.set(clientId, { seq: m.seq, n: triedHere + 1 })
    else this.tries.delete(clientId)
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
      // The device left ('offline'): this gateway has no pull request open now (fetch asks for one
      // command at a time and the next fetch waits for the device), so the gateway the device is on
      // now gets it at once.
      m.nak(unacked ? 1000 : 0)
      metrics.commands.inc(1, { result: unacked ? 'unacknowledged' : 'offline' })
    }
  }

  /** Stops reading commands; the one being delivered goes back to JetStream if unacknowledged. */
  async close(): Promise<void> {
    this.running = false
    // Withdraw every pull; a command being delivered is nak'd when its delivery ends, or redelivered
    // by the server (ack_wait), so there is nothing to wait for.
    for (const pull of this.pulls.values()) withdraw(pull)
  }
}
