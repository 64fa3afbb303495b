// The fleet registry: which gateway holds which device, kept in a JetStream key-value bucket by every
// gateway of a fleet, on a NATS connection of its own.
//
// Invariants
// - Ingress never waits for the registry: device events only update in-memory maps; every write is
//   asynchronous, at most one per device in flight, and the queue keeps only the latest state per
//   device (bounded by MAX_QUEUED). NATS down = writes wait for the connection; failures are counted
//   (ferry_fleet_registry_updates_total{result="error"}) and logged, never thrown.
// - A device's first put, made while NATS stayed up since it connected, is a plain put: the bucket
//   orders it as the connects were ordered. Any later put (retried, delayed by an outage, rewriting a
//   removed entry) is a compare-and-set on the revision the key had when we last looked, and a delete
//   is a compare-and-delete on the revision of our own put: a late write never erases a newer one.
// - Revisions order writes: a local session yields (MQTT 5 DISCONNECT 0x8E) to another process's write
//   at a revision newer than ours (liveness.ts, mustYield / onConflict). One exception, where no
//   revision can order the connects: a device that connected while our view of the bucket was not
//   current, whose key another live gateway holds, is claimed only if it connected after that entry's
//   `since` (byConnectTime: clocks of two gateways, so skew between them matters in this case only).
// - Liveness is measured on this watcher's clock, up to the moment our view is known current (the send
//   time of our newest heartbeat seen back through the watcher): a gateway whose entry has not changed
//   for 6 of its heartbeats by then is dead; the live gateway with the lowest id removes its entries
//   (compare-and-delete, asking again before each). Our heartbeats not coming back for 3 heartbeats
//   means the watcher is stalled: it is replaced.
// - Memory: one small record per live device entry of the fleet (revision, gateway, boot); deleted keys
//   are not held.
import { randomBytes } from 'node:crypto'
import { JetStreamApiCodes, JetStreamApiError, jetstream } from '@nats-io/jetstream'
import { Kvm, KvWatchInclude } from '@nats-io/kv'
import type { KV, KvEntry } from '@nats-io/kv'
import type { ConnectionOptions, NatsConnection } from '@nats-io/transport-node'
import type { DeviceInfo, Devices } from '../ingress/index.js'
import { ClosedSignal, remainingMs } from '../lifecycle.js'
import type { Component, Deadline } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import { Backoff, Pause, connectWithBackoff, drainWithin } from '../upstream/index.js'
import { clientIdOfToken, deviceKey, gatewayKey, parseDeviceEntry, parseGatewayEntry } from './keys.js'
import type { DeviceEntry, GatewayEntry } from './keys.js'
import { DEAD_AFTER_HEARTBEATS, byConnectTime, isLive, mustYield, onConflict, sweeper } from './liveness.js'

/** Devices whose latest state may wait for NATS; beyond it a device's state is dropped (counted, logged). */
export const MAX_QUEUED = 100_000
/** Writes in flight at once. */
const MAX_INFLIGHT = 64
/** Wait before retrying writes that failed (NATS up but erroring). */
const RETRY_MS = 1000
/** Our own heartbeat written and not seen back through the watcher for this many heartbeats: the watcher is stalled. */
const STALLED_AFTER_HEARTBEATS = 3
/** A registry warning is logged at most this often (per message). */
const ERROR_LOG_INTERVAL_MS = 10_000

/** A counter with labels. */
export interface FleetLabelledCount<L extends string> {
  inc(n: number, labels: Readonly<Record<L, string>>): void
}

/** The metrics the registry updates (the gateway's catalogue satisfies it structurally). */
export interface FleetMetrics {
  /** ferry_fleet_takeovers_total{direction} */
  readonly fleetTakeovers: FleetLabelledCount<'direction'>
  /** ferry_fleet_registry_updates_total{op,result} */
  readonly fleetRegistryUpdates: FleetLabelledCount<'op' | 'result'>
  /** ferry_fleet_stale_entries_removed_total */
  readonly fleetStaleRemoved: { inc(n?: number): void }
  /** ferry_fleet_gateways */
  readonly fleetGateways: { collect(fn: () => number): void }
  /** ferry_fleet_gateway_id_conflicts_total */
  readonly fleetIdConflicts: { inc(n?: number): void }
}

export interface FleetRegistryOptions {
  readonly servers: readonly string[]
  /** Authentication and TLS, as the forwarder's (forward/upstream-auth.ts). */
  readonly connectOptions: Partial<ConnectionOptions>
  readonly bucket: string
  /** Replicas of the bucket when this gateway creates it (--stream-replicas). */
  readonly replicas: number
  readonly gatewayId: string
  /** How often this gateway renews `gateways.<id>`, ms. */
  readonly heartbeatMs: number
  readonly version: string
  readonly devices: Devices
  readonly logger: Logger
  readonly metrics: FleetMetrics
}

/** The registry's state in /status.json (`fleet`). */
export interface FleetStatus {
  readonly enabled: true
  readonly bucket: string
  readonly boot: string
  readonly connected: boolean
  /** The bucket was read (watcher initialised) on the current connection. */
  readonly ready: boolean
  /** Live gateways seen, this one included, sorted. */
  readonly gateways: readonly string[]
  /** Device entries in the bucket, and how many name this gateway. */
  readonly devices: number
  readonly devicesHere: number
  /** Device states waiting to be written. */
  readonly queued: number
  readonly lastError?: { readonly at: number; readonly message: string }
}

/** A device connected here, as the registry follows it. */
interface Local {
  readonly info: DeviceInfo
  /** Revision of its key when it connected (0: no entry). */
  seenRevision: number
  /**
   * The registry epoch (one per watcher initialisation on a connection) in which it connected, -1
   * when our view of the bucket was not current then (seenRevision is only a guess). A write in the
   * same epoch is prompt; in a later one it was delayed by an outage.
   */
  epoch: number
  /** A put was attempted already: the next one is a compare-and-set (see write()). */
  retried: boolean
  /** Revision of our put, once written. */
  ourRevision: number | undefined
  /** Its put is being written (the put, and on a lost compare-and-set the read that follows). */
  writing: boolean
  /** It went offline while its put was in flight: delete once the put is written. */
  gone: boolean
  /** Another gateway took it over. */
  yielded: boolean
}

type Op = { readonly kind: 'put'; readonly local: Local } | { readonly kind: 'delete'; readonly revision: number }

/**
 * A device entry in the bucket, as much of it as the rules need (every gateway holds one per device of
 * the fleet: measured 374 B each with the whole value, about 200 B like this). Deleted keys are not held:
 * their delete markers stay in the bucket for every client id ever seen.
 */
interface DeviceSeen {
  readonly revision: number
  /** Interned: one string per gateway id and boot, not one per entry. */
  readonly gateway: string
  readonly boot: string
  readonly seenAtMs: number
}

interface GatewaySeenEntry {
  readonly revision: number
  readonly entry: GatewayEntry
  readonly heartbeatMs: number
  readonly changedAtMs: number
}

/** Whether `err` is JetStream's "wrong last sequence" (a compare-and-set that lost). */
function isCasConflict(err: unknown): boolean {
  return err instanceof JetStreamApiError && (err.code === JetStreamApiCodes.StreamWrongLastSequence || err.code === JetStreamApiCodes.StreamWrongLastSequenceUnknown)
}

/** Waits for `p`, at most `ms`. */
async function within(p: Promise<unknown>, ms: number): Promise<void> {
  let timer: NodeJS.Timeout | undefined
  await Promise.race([p.catch(() => {}), new Promise<void>((resolve) => (timer = setTimeout(resolve, Math.max(0, ms))))])
  clearTimeout(timer)
}

function encode(v: DeviceEntry | GatewayEntry): Uint8Array {
  return Buffer.from(JSON.stringify(v))
}

export class FleetRegistry implements Component {
  /** Random id of this gateway process. */
  readonly boot = randomBytes(8).toString('hex')
  private readonly startedAt = Date.now()
  private nc: NatsConnection | undefined
  private kv: KV | undefined
  private connected = false
  private ready = false
  private running = true
  private readonly pause = new Pause()
  private readonly stopped = new ClosedSignal()
  private closing: Promise<void> | undefined
  private readonly loop: Promise<void>
  private timer: NodeJS.Timeout | undefined
  private retryTimer: NodeJS.Timeout | undefined
  private watcherStop: (() => void) | undefined
  private watchGeneration = 0
  /** Counts watcher initialisations: see Local.epoch. */
  private epoch = 0
  private sweeping = false
  private lastError: { at: number; message: string } | undefined
  private conflictLoggedAt = 0
  private readonly logged = new Map<string, { at: number; suppressed: number }>()
  private readonly locals = new Map<string, Local>()
  private readonly queue = new Map<string, Op>()
  /** Ops whose write failed, held out of the queue until the retry timer (RETRY_MS) puts them back. */
  private readonly retrying = new Map<string, Op>()
  private readonly inflight = new Set<string>()
  private readonly deviceSeen = new Map<string, DeviceSeen>()
  /** Gateway ids and boots of the entries held (cleared with them). */
  private readonly interned = new Map<string, string>()
  private readonly gatewaySeen = new Map<string, GatewaySeenEntry>()
  private watchStartedAtMs = 0
  /** Our heartbeats written and not yet seen back through the watcher, oldest first (at most 64). */
  private readonly heartbeatsSent: { readonly revision: number; readonly sentAtMs: number }[] = []
  /** The newest revision of our own entry the watcher has shown. */
  private selfRevisionSeen = 0
  /** Revision of our last heartbeat written: the stop deletes our entry only if it is still that one. */
  private heartbeatRevision: number | undefined
  /**
   * When (our clock) the newest of our heartbeats the watcher has shown was sent: every write that
   * reached the bucket before it has been seen too. The sweep measures silences up to this moment, not
   * up to now: a watcher behind (a stall of this process, a burst of updates) never makes a live
   * gateway look silent.
   */
  private viewCurrentAtMs = 0
  private readonly o: FleetRegistryOptions

  constructor(o: FleetRegistryOptions) {
    this.o = o
    o.devices.on('online', (d) => this.online(d))
    o.devices.on('offline', (d) => this.offline(d))
    o.metrics.fleetGateways.collect(() => this.liveGateways().length)
    this.loop = this.run().catch((err: unknown) => this.noteError('registry stopped', err))
  }

  // ---- device events (synchronous: ingress never waits) ----

  /** The other live gateway the registry shows holding `clientId` (for the "connected" event). */
  takenOverFrom(clientId: string): string | undefined {
    const seen = this.deviceSeen.get(deviceKey(clientId))
    if (!seen || seen.gateway === this.o.gatewayId) return undefined
    return this.gatewayLive(seen.gateway) ? seen.gateway : undefined
  }

  private online(d: DeviceInfo): void {
    const key = deviceKey(d.clientId)
    const seen = this.deviceSeen.get(key)
    const local: Local = { info: d, seenRevision: seen?.revision ?? 0, epoch: this.ready && this.connected ? this.epoch : -1, ourRevision: undefined, retried: false, writing: false, gone: false, yielded: false }
    this.locals.set(d.clientId, local)
    const from = this.takenOverFrom(d.clientId)
    if (from !== undefined) {
      this.o.metrics.fleetTakeovers.inc(1, { direction: 'in' })
      this.o.logger.info('device taken over from another gateway', { clientId: d.clientId, from })
    }
    this.enqueue(d.clientId, { kind: 'put', local })
  }

  private offline(d: DeviceInfo): void {
    const local = this.locals.get(d.clientId)
    if (!local || local.info !== d) return
    this.locals.delete(d.clientId)
    // Taken over: the key is another gateway's now.
    if (local.yielded) return this.dropPut(d.clientId, local)
    // A put in flight (a first write, or a rewrite whose ourRevision names an entry that is gone):
    // the delete waits for the revision it gets.
    if (local.writing) local.gone = true
    else if (local.ourRevision !== undefined) this.enqueue(d.clientId, { kind: 'delete', revision: local.ourRevision })
    // Never written: nothing to delete, and the put is no longer wanted.
    else this.dropPut(d.clientId, local)
  }

  /** Forgets the put of `local` waiting to be written (queued or waiting for its retry). */
  private dropPut(clientId: string, local: Local): void {
    for (const m of [this.queue, this.retrying]) {
      const q = m.get(clientId)
      if (q?.kind === 'put' && q.local === local) m.delete(clientId)
    }
  }

  /** A state of the device waits to be written (queued or waiting for its retry). */
  private pending(clientId: string): boolean {
    return this.queue.has(clientId) || this.retrying.has(clientId)
  }

  private enqueue(clientId: string, op: Op): void {
    if (!this.pending(clientId) && this.queue.size + this.retrying.size >= MAX_QUEUED) {
      this.o.metrics.fleetRegistryUpdates.inc(1, { op: op.kind, result: 'error' })
      this.noteError(`registry queue full (${MAX_QUEUED} devices): a device's state was not written`, undefined, { clientId })
      return
    }
    // Latest state per device: a newer op replaces the one waiting.
    this.queue.delete(clientId)
    this.retrying.delete(clientId)
    this.queue.set(clientId, op)
    this.pump()
  }

  // ---- writing ----

  private pump(): void {
    const kv = this.kv
    if (!kv || !this.ready || !this.connected || !this.running) return
    for (const [clientId, op] of this.queue) {
      if (this.inflight.size >= MAX_INFLIGHT) return
      if (this.inflight.has(clientId)) continue
      this.queue.delete(clientId)
      this.inflight.add(clientId)
      void this.write(kv, clientId, op).finally(() => {
        this.inflight.delete(clientId)
        this.pump()
      })
    }
  }

  private retryLater(clientId: string, op: Op): void {
    // Unless a newer state replaced it meanwhile. Held out of the queue until the timer: pump() runs
    // as each write ends and would otherwise send a failing write again at once (a busy loop).
    if (!this.queue.has(clientId)) this.retrying.set(clientId, op)
    this.retryTimer ??= setTimeout(() => {
      this.retryTimer = undefined
      for (const [id, again] of this.retrying) if (!this.queue.has(id)) this.queue.set(id, again)
      this.retrying.clear()
      this.pump()
    }, RETRY_MS)
  }

  private async write(kv: KV, clientId: string, op: Op): Promise<void> {
    const key = deviceKey(clientId)
    if (op.kind === 'delete') {
      try {
        await kv.delete(key, { previousSeq: op.revision })
        this.o.metrics.fleetRegistryUpdates.inc(1, { op: 'delete', result: 'ok' })
      } catch (err) {
        // Another write since ours: the key is not ours any more, nothing to delete.
        if (isCasConflict(err)) return
        this.o.metrics.fleetRegistryUpdates.inc(1, { op: 'delete', result: 'error' })
        this.noteError('registry delete failed; retrying', err, { clientId })
        this.retryLater(clientId, op)
      }
      return
    }
    const local = op.local
    if (this.locals.get(clientId) !== local || local.yielded) {
      // It left while this put was being written and the put did not settle it (failed, or lost a
      // compare-and-set): delete what it may hold, compare-and-delete (a stale revision deletes nothing).
      if (local.gone && !this.locals.has(clientId) && !this.pending(clientId)) {
        const cur = this.deviceSeen.get(key)
        const revision = cur?.gateway === this.o.gatewayId && cur.boot === this.boot ? cur.revision : local.ourRevision
        if (revision !== undefined) this.queue.set(clientId, { kind: 'delete', revision })
      }
      return
    }
    // A prompt write (first attempt, NATS up since the device connected) is a plain put: the bucket
    // orders it as the connects were ordered, and the highest revision holds the device. Any later
    // attempt is a compare-and-set, so that a write delayed by an outage cannot erase a newer one.
    const prompt = local.epoch === this.epoch && !local.retried
    local.retried = true
    let expected: number | undefined = prompt ? undefined : local.seenRevision
    if (local.epoch < 0) {
      // Connected while our view of the bucket was unknown: judge against the bucket as it is now.
      const cur = this.deviceSeen.get(key)
      expected = cur?.revision ?? 0
      if (cur && local.ourRevision !== undefined && mustYield(this.holder(local), cur)) return this.yieldTo(local, cur.gateway)
      if (cur && cur.gateway !== this.o.gatewayId && this.gatewayLive(cur.gateway)) {
        // Another live gateway holds it: no revision orders the two connects, their times decide
        // (byConnectTime; clock skew between gateways matters here only). Read its `since`.
        let got: KvEntry | null
        try {
          got = await kv.get(key)
        } catch (e) {
          this.o.metrics.fleetRegistryUpdates.inc(1, { op: 'put', result: 'error' })
          this.noteError('registry read failed; retrying', e, { clientId })
          this.retryLater(clientId, op)
          return
        }
        // It left, or was taken over, while we read: offline() settled it.
        if (this.locals.get(clientId) !== local || local.yielded) return
        const entry = got?.operation === 'PUT' ? parseDeviceEntry(got.value) : undefined
        if (entry && this.liveOther(entry.gateway) && byConnectTime(local.info.connectedAt, entry.since) === 'yield') return this.yieldTo(local, entry.gateway)
        expected = got?.revision ?? 0
      }
    }
    const value: DeviceEntry = { device: clientId, gateway: this.o.gatewayId, boot: this.boot, since: local.info.connectedAt, address: local.info.address, clean: local.info.clean }
    local.writing = true
    try {
      const revision = await kv.put(key, encode(value), expected === undefined ? {} : { previousSeq: expected })
      this.o.metrics.fleetRegistryUpdates.inc(1, { op: 'put', result: 'ok' })
      local.ourRevision = revision
      local.seenRevision = revision
      if (local.gone) {
        if (!this.pending(clientId)) this.queue.set(clientId, { kind: 'delete', revision })
        return
      }
      // A newer write by another gateway may have reached the watcher while ours was in flight.
      const cur = this.deviceSeen.get(key)
      if (cur && mustYield(this.holder(local), cur)) this.yieldTo(local, cur.gateway)
    } catch (err) {
      if (!isCasConflict(err)) {
        this.o.metrics.fleetRegistryUpdates.inc(1, { op: 'put', result: 'error' })
        this.noteError('registry put failed; retrying', err, { clientId })
        this.retryLater(clientId, op)
        return
      }
      let cur: KvEntry | null
      try {
        cur = await kv.get(key)
      } catch (e) {
        this.o.metrics.fleetRegistryUpdates.inc(1, { op: 'put', result: 'error' })
        this.noteError('registry read failed; retrying', e, { clientId })
        this.retryLater(clientId, op)
        return
      }
      const entry = cur?.operation === 'PUT' ? parseDeviceEntry(cur.value) : undefined
      const write = entry && cur ? { revision: cur.revision, gateway: entry.gateway, boot: entry.boot } : undefined
      const decision = onConflict({ gateway: this.o.gatewayId, boot: this.boot }, write, entry ? this.gatewayLive(entry.gateway) : false, local.seenRevision, local.epoch >= 0)
      if (decision === 'yield' && entry) return this.yieldTo(local, entry.gateway)
      // Connected while our view of the bucket was unknown, and another live gateway wrote since we
      // looked: the connect times decide (as above).
      if (local.epoch < 0 && entry && this.liveOther(entry.gateway) && byConnectTime(local.info.connectedAt, entry.since) === 'yield') return this.yieldTo(local, entry.gateway)
      // Claim: write again at the key's current revision (our own earlier write, a delete, a dead gateway's entry).
      local.seenRevision = cur?.revision ?? 0
      if (local.epoch >= 0) local.epoch = this.epoch
      this.o.logger.debug('registry: claiming a device key that changed since the device connected', { clientId, revision: cur?.revision, was: entry?.gateway })
      if (!this.pending(clientId)) this.queue.set(clientId, op)
    } finally {
      local.writing = false
    }
  }

  /** Another gateway id than ours, live now. */
  private liveOther(gateway: string): boolean {
    return gateway !== this.o.gatewayId && this.gatewayLive(gateway)
  }

  private holder(local: Local): { gateway: string; boot: string; ourRevision: number | undefined } {
    return { gateway: this.o.gatewayId, boot: this.boot, ourRevision: local.ourRevision }
  }

  /** Closes the local session of a device another gateway now holds (MQTT 5: DISCONNECT 0x8E). */
  private yieldTo(local: Local, by: string): void {
    if (local.yielded || this.locals.get(local.info.clientId) !== local) return
    local.yielded = true
    this.o.metrics.fleetTakeovers.inc(1, { direction: 'out' })
    this.o.logger.info('device taken over by another gateway; closing its session here', { clientId: local.info.clientId, by })
    this.o.devices.takeOver(local.info.clientId, by)
  }

  // ---- connection, bucket, watcher ----

  private async run(): Promise<void> {
    const nc = await connectWithBackoff({
      servers: this.o.servers,
      options: { ...this.o.connectOptions, name: `ferry-${this.o.gatewayId}-registry`, maxReconnectAttempts: -1, reconnectTimeWait: 500, timeout: 5000 },
      backoff: new Backoff({ minMs: 250, maxMs: 10_000, jitter: false }),
      pause: this.pause,
      running: () => this.running,
      onError: (err, backoff) => {
        if (backoff.current >= 4000) this.o.logger.debug('registry: NATS not reachable; retrying', { error: err })
      },
    })
    if (!nc) return
    this.nc = nc
    this.connected = true
    void (async () => {
      for await (const s of nc.status()) {
        if (s.type === 'disconnect') {
          this.connected = false
          this.ready = false
        } else if (s.type === 'reconnect') {
          this.connected = true
          void this.attach(nc)
        }
      }
    })().catch(() => {})
    this.timer = setInterval(() => this.tick(), this.o.heartbeatMs)
    await this.attach(nc)
  }

  /** Opens (or creates) the bucket, renews our entry and (re)starts the watcher; retried until it works. */
  private async attach(nc: NatsConnection): Promise<void> {
    const generation = ++this.watchGeneration
    for (let wait = 1000; this.running && this.connected && generation === this.watchGeneration; wait = Math.min(30_000, wait * 2)) {
      try {
        if (!this.kv) this.kv = await this.openBucket(nc)
        await this.heartbeat()
        await this.watch(this.kv, generation)
        return
      } catch (err) {
        // Opened again on the next attempt (a server that lost its store has no bucket any more).
        this.kv = undefined
        this.noteError('registry bucket not ready; retrying', err, { bucket: this.o.bucket, retryMs: wait })
        await this.pause.sleep(wait)
      }
    }
  }

  private async openBucket(nc: NatsConnection): Promise<KV> {
    const kvm = new Kvm(jetstream(nc))
    try {
      // bindOnly does not look the bucket up: its status does.
      const kv = await kvm.open(this.o.bucket, { bindOnly: true })
      const replicas = (await kv.status()).streamInfo.config.num_replicas
      // An existing bucket is used as it is (like an existing stream), with a word when it has fewer replicas.
      if (replicas < this.o.replicas) this.o.logger.warn('registry bucket has fewer replicas than --stream-replicas; it is used as it is', { bucket: this.o.bucket, replicas, streamReplicas: this.o.replicas })
      return kv
    } catch {
      const kv = await kvm.create(this.o.bucket, { replicas: this.o.replicas, history: 1 })
      this.o.logger.info('registry bucket created', { bucket: this.o.bucket, replicas: this.o.replicas })
      return kv
    }
  }

  private async watch(kv: KV, generation: number): Promise<void> {
    this.watcherStop?.()
    this.ready = false
    this.deviceSeen.clear()
    this.interned.clear()
    this.heartbeatsSent.length = 0
    this.selfRevisionSeen = 0
    this.viewCurrentAtMs = 0
    this.gatewaySeen.clear()
    this.watchStartedAtMs = Date.now()
    const it = await kv.watch({ key: '>', include: KvWatchInclude.LastValue })
    this.watcherStop = () => it.stop()
    let initialised = false
    const init = (): void => {
      if (initialised || generation !== this.watchGeneration) return
      initialised = true
      this.epoch++
      this.ready = true
      this.afterInit()
    }
    void (async () => {
      for await (const e of it) {
        if (generation !== this.watchGeneration) break
        this.observe(e, initialised)
        if (!initialised && (e.delta ?? 0) === 0) init()
      }
    })()
      .catch((err: unknown) => this.noteError('registry watcher ended', err))
      .finally(() => this.watcherEnded(generation))
    // An empty bucket has nothing to replay: the watcher is current at once.
    if ((await kv.status()).values === 0) init()
  }

  /** A watcher that ended by itself leaves our view stale: nothing is decided on it until a new one is current. */
  private watcherEnded(generation: number): void {
    if (generation !== this.watchGeneration || !this.running) return
    this.ready = false
    const nc = this.nc
    if (nc && this.connected) setTimeout(() => void this.attach(nc), RETRY_MS).unref()
  }

  /** Applies one entry of the bucket to our view, and acts on what it means for us. */
  private observe(e: KvEntry, isUpdate: boolean): void {
    const now = Date.now()
    if (e.key.startsWith('gateways.')) {
      const id = e.key.slice('gateways.'.length)
      if (e.operation !== 'PUT') {
        this.gatewaySeen.delete(id)
        // Declared dead by the fleet (e.g. after a long outage here): register again, and our devices.
        if (id === this.o.gatewayId && isUpdate && this.running) {
          this.o.logger.warn('registry: this gateway\'s entry was removed by another gateway; registering again')
          void this.heartbeat().then(() => this.reclaimAll(), () => {})
        }
        return
      }
      const g = parseGatewayEntry(e.value)
      if (!g) return
      if (id === this.o.gatewayId && g.boot !== this.boot && isUpdate) this.idConflict(g)
      if (id === this.o.gatewayId && g.boot === this.boot) {
        this.selfRevisionSeen = Math.max(this.selfRevisionSeen, e.revision)
        this.advanceView()
      }
      this.gatewaySeen.set(id, { revision: e.revision, entry: g, heartbeatMs: g.heartbeatMs, changedAtMs: now })
      return
    }
    if (!e.key.startsWith('devices.')) return
    const entry = e.operation === 'PUT' ? parseDeviceEntry(e.value) : undefined
    if (entry) this.deviceSeen.set(e.key, { revision: e.revision, gateway: this.intern(entry.gateway), boot: this.intern(entry.boot), seenAtMs: now })
    else this.deviceSeen.delete(e.key)
    if (!entry) {
      // Our entry of a device still connected here was removed by another gateway (we were taken for
      // dead, or a process with our id cleaned up): write it again.
      const clientId = e.operation === 'PUT' ? undefined : clientIdOfToken(e.key.slice('devices.'.length))
      const local = clientId === undefined ? undefined : this.locals.get(clientId)
      if (clientId !== undefined && local && isUpdate && !local.yielded && local.ourRevision !== undefined && e.revision > local.ourRevision && !this.pending(clientId)) {
        local.seenRevision = e.revision
        local.epoch = this.epoch
        local.retried = true
        local.ourRevision = undefined
        this.enqueue(clientId, { kind: 'put', local })
      }
      return
    }
    const local = this.locals.get(entry.device)
    if (local && mustYield(this.holder(local), { revision: e.revision, gateway: entry.gateway, boot: entry.boot })) this.yieldTo(local, entry.gateway)
  }

  /** Once the watcher is current: our leftovers from an earlier run go, our devices are written. */
  private afterInit(): void {
    const kv = this.kv
    if (!kv) return
    for (const [key, seen] of this.deviceSeen) {
      if (seen.gateway === this.o.gatewayId && seen.boot !== this.boot) void this.removeStale(kv, key, seen.revision, 'leftover of an earlier run')
    }
    this.reclaimAll()
  }

  /** Every device connected here whose key is not ours at our revision is written again. */
  private reclaimAll(): void {
    for (const [clientId, local] of this.locals) {
      if (local.yielded) continue
      const seen = this.deviceSeen.get(deviceKey(clientId))
      const ours = seen?.gateway === this.o.gatewayId && seen.boot === this.boot && seen.revision === local.ourRevision
      if (ours) continue
      if (seen && mustYield(this.holder(local), seen)) {
        this.yieldTo(local, seen.gateway)
        continue
      }
      if (!this.pending(clientId) && !this.inflight.has(clientId)) {
        const again: Local = { ...local, seenRevision: seen?.revision ?? 0, epoch: -1 }
        this.locals.set(clientId, again)
        // The same session: keep the DeviceInfo object so that its offline event still matches.
        this.enqueue(clientId, { kind: 'put', local: again })
      }
    }
    this.pump()
  }

  private async removeStale(kv: KV, key: string, revision: number, why: string): Promise<boolean> {
    try {
      await kv.delete(key, { previousSeq: revision })
      this.o.metrics.fleetRegistryUpdates.inc(1, { op: 'delete', result: 'ok' })
      this.o.metrics.fleetStaleRemoved.inc()
      this.o.logger.debug('registry: stale entry removed', { key, why })
      return true
    } catch (err) {
      if (isCasConflict(err)) return false
      this.o.metrics.fleetRegistryUpdates.inc(1, { op: 'delete', result: 'error' })
      this.noteError('registry: removing a stale entry failed', err, { key })
      return false
    }
  }

  private idConflict(other: GatewayEntry): void {
    this.o.metrics.fleetIdConflicts.inc()
    const now = Date.now()
    if (now - this.conflictLoggedAt < 60_000) return
    this.conflictLoggedAt = now
    this.o.logger.error('another running gateway uses this --gateway-id: message ids and the registry entries of both collide; give each gateway its own --gateway-id', {
      gatewayId: this.o.gatewayId,
      boot: this.boot,
      otherBoot: other.boot,
      otherStartedAt: new Date(other.startedAt).toISOString(),
    })
  }

  private intern(s: string): string {
    const known = this.interned.get(s)
    if (known !== undefined) return known
    this.interned.set(s, s)
    return s
  }

  // ---- heartbeat and the dead-gateway sweep ----

  private async heartbeat(): Promise<void> {
    const kv = this.kv
    if (!kv) return
    const value: GatewayEntry = { gateway: this.o.gatewayId, boot: this.boot, startedAt: this.startedAt, heartbeatMs: this.o.heartbeatMs, version: this.o.version }
    try {
      const sentAtMs = Date.now()
      const revision = await kv.put(gatewayKey(this.o.gatewayId), encode(value))
      this.o.metrics.fleetRegistryUpdates.inc(1, { op: 'put', result: 'ok' })
      // (Dropping the oldest only makes the view's moment older: a later heartbeat seen covers it.)
      this.heartbeatRevision = Math.max(this.heartbeatRevision ?? 0, revision)
      if (this.heartbeatsSent.push({ revision, sentAtMs }) > 64) this.heartbeatsSent.shift()
      this.advanceView()
    } catch (err) {
      this.o.metrics.fleetRegistryUpdates.inc(1, { op: 'put', result: 'error' })
      throw err
    }
  }

  /** Moves viewCurrentAtMs to the send time of the newest heartbeat of ours the watcher has shown. */
  private advanceView(): void {
    while (this.heartbeatsSent.length > 0 && this.heartbeatsSent[0]!.revision <= this.selfRevisionSeen) {
      this.viewCurrentAtMs = Math.max(this.viewCurrentAtMs, this.heartbeatsSent.shift()!.sentAtMs)
    }
  }

  private tick(): void {
    if (!this.connected || !this.kv) return
    this.heartbeat().catch((err: unknown) => this.noteError('registry heartbeat failed', err))
    if (!this.ready) return
    // Our heartbeats are written but do not come back: the watcher is stalled (its consumer was on a
    // JetStream node that died: nats.js notices only after missing its 30 s idle heartbeats), and
    // takeovers are missed meanwhile. Watch again (the view is rebuilt from the bucket).
    const oldest = this.heartbeatsSent[0]
    const nc = this.nc
    if (oldest && nc && Date.now() - oldest.sentAtMs > STALLED_AFTER_HEARTBEATS * this.o.heartbeatMs) {
      this.noteError('registry watcher stalled (our own heartbeats do not come back through it); watching again', undefined, { silentMs: Date.now() - oldest.sentAtMs })
      this.ready = false
      void this.attach(nc)
      return
    }
    void this.sweep()
  }

  /** Live: not silent for 6 of its heartbeats up to the moment our view is known current (viewCurrentAtMs). */
  private gatewayLive(id: string): boolean {
    if (id === this.o.gatewayId) return true
    const g = this.gatewaySeen.get(id)
    return g !== undefined && isLive(g, this.viewCurrentAtMs)
  }

  /** Live gateways seen, this one included, sorted. */
  private liveGateways(): string[] {
    const ids = new Set([this.o.gatewayId])
    for (const id of this.gatewaySeen.keys()) if (this.gatewayLive(id)) ids.add(id)
    return [...ids].sort()
  }

  /** The live gateway with the lowest id removes the entries of dead ones, devices first. */
  private async sweep(): Promise<void> {
    const kv = this.kv
    if (!kv || this.sweeping || sweeper(this.liveGateways()) !== this.o.gatewayId) return
    // Our own heartbeats come back through the watcher: when they stop coming, our view is stale and
    // every other gateway would look dead. Nothing is swept on a stale view.
    const self = this.gatewaySeen.get(this.o.gatewayId)
    if (!self || self.entry.boot !== this.boot || Date.now() - self.changedAtMs > 3 * this.o.heartbeatMs) return
    this.sweeping = true
    try {
      // Silences are measured up to the moment our view is known to be current (see viewCurrentAtMs).
      const now = this.viewCurrentAtMs
      const dead = new Map<string, GatewaySeenEntry | undefined>()
      for (const [id, g] of this.gatewaySeen) if (id !== this.o.gatewayId && !isLive(g, now)) dead.set(id, g)
      // Device entries of a gateway with no liveness entry at all (its sweep was cut short), once we
      // have watched for as long as a dead gateway is given.
      const orphanAfterMs = DEAD_AFTER_HEARTBEATS * this.o.heartbeatMs
      for (const seen of this.deviceSeen.values()) {
        const gw = seen.gateway
        if (gw !== this.o.gatewayId && !this.gatewaySeen.has(gw) && now - Math.max(seen.seenAtMs, this.watchStartedAtMs) >= orphanAfterMs) dead.set(gw, undefined)
      }
      // Each dead gateway's entries, collected in one pass over the bucket's view.
      const entries = new Map<string, [string, number][]>()
      for (const [key, seen] of this.deviceSeen) {
        if (!dead.has(seen.gateway)) continue
        const list = entries.get(seen.gateway) ?? []
        list.push([key, seen.revision])
        entries.set(seen.gateway, list)
      }
      for (const [id, g] of dead) {
        let removed = 0
        let cut = false
        for (const [key, revision] of entries.get(id) ?? []) {
          // Asked again before every delete (they go one by one, and the watcher runs meanwhile): a
          // gateway whose heartbeat is back, or a view that stopped being current, ends the sweep.
          if (!this.stillDead(kv, id, g)) {
            cut = true
            break
          }
          if (this.deviceSeen.get(key)?.revision !== revision) continue
          if (await this.removeStale(kv, key, revision, `gateway ${id} is dead`)) removed++
        }
        if (g && !cut && this.stillDead(kv, id, g)) await this.removeStale(kv, gatewayKey(id), g.revision, 'dead gateway')
        this.o.logger.info(cut ? 'registry: stopped removing the entries of a gateway: it is live again' : 'registry: removed the entries of a dead gateway', { gateway: id, devices: removed, silentMs: g ? now - g.changedAtMs : undefined })
      }
    } finally {
      this.sweeping = false
    }
  }

  /** Whether gateway `id` (seen as `g`; undefined: it had no liveness entry) is still to be swept. */
  private stillDead(kv: KV, id: string, g: GatewaySeenEntry | undefined): boolean {
    if (!this.running || !this.ready || this.kv !== kv) return false
    const cur = this.gatewaySeen.get(id)
    if (g === undefined) return cur === undefined
    return cur === undefined || (cur.revision === g.revision && !isLive(cur, this.viewCurrentAtMs))
  }

  // ---- status and lifecycle ----

  /** Records the error for /status.json and logs it, each message at most every 10 s (with how many were not logged). */
  private noteError(msg: string, err: unknown, fields: Record<string, unknown> = {}): void {
    const now = Date.now()
    this.lastError = { at: now, message: err instanceof Error ? err.message : msg }
    const last = this.logged.get(msg)
    if (last && now - last.at < ERROR_LOG_INTERVAL_MS) {
      last.suppressed++
      return
    }
    this.logged.set(msg, { at: now, suppressed: 0 })
    this.o.logger.warn(msg, { ...fields, ...(err !== undefined ? { error: err } : {}), ...(last?.suppressed ? { notLogged: last.suppressed } : {}) })
  }

  get status(): FleetStatus {
    let devices = 0
    let here = 0
    for (const s of this.deviceSeen.values()) {
      devices++
      if (s.gateway === this.o.gatewayId) here++
    }
    return {
      enabled: true,
      bucket: this.o.bucket,
      boot: this.boot,
      connected: this.connected,
      ready: this.ready,
      gateways: this.liveGateways(),
      devices,
      devicesHere: here,
      queued: this.queue.size + this.retrying.size,
      ...(this.lastError ? { lastError: this.lastError } : {}),
    }
  }

  /**
   * Stops: the device entries of devices still connected stay (the gateway stop that follows
   * disconnects them, and their deletes are written while time is left), then the connection drains.
   */
  close(deadline: Deadline): Promise<void> {
    this.closing ??= this.shutdown(deadline)
    return this.closing
  }

  closed(): Promise<Error | undefined> {
    return this.stopped.promise
  }

  private async shutdown(deadline: Deadline): Promise<void> {
    // A small share of the stop's time: the log and the forwarder close after us. A stalled server
    // must not hold the stop (every wait below is bounded).
    const budget = (): number => Math.min(500, remainingMs(deadline) / 4)
    const until = Date.now() + budget()
    // Let the deletes of the devices the stop disconnected go out.
    while ((this.queue.size > 0 || this.inflight.size > 0) && this.connected && this.ready && Date.now() < until) await new Promise((r) => setTimeout(r, 20))
    this.running = false
    clearInterval(this.timer)
    clearTimeout(this.retryTimer)
    this.watchGeneration++
    this.watcherStop?.()
    this.pause.wake()
    // Our liveness entry goes too: the fleet need not wait 6 heartbeats to know we stopped. Only if it
    // is still ours (compare-and-delete): a newer process with our id may have renewed it.
    const kv = this.kv
    const revision = this.heartbeatRevision
    if (kv && this.connected && revision !== undefined) await within(kv.delete(gatewayKey(this.o.gatewayId), { previousSeq: revision }).catch(() => {}), budget())
    await within(this.loop, budget())
    if (this.nc) await drainWithin(this.nc, budget())
    this.stopped.resolve()
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close(Date.now() + 5000)
  }
}
