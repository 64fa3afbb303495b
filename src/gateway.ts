// Composition root: builds the stages from the config, owns the start order and the close order.
import { existsSync } from 'node:fs'
import path from 'node:path'
import { Admission, serverTlsOptions } from './auth/index.js'
import { EVENT_TOPIC_PREFIX, PayloadPolicy, decodeEntry, entryExpiresAtMs } from './codec/index.js'
import { PRIORITY_CLASSES } from './config/index.js'
import type { Config, PriorityClass } from './config/index.js'
import type { Entry } from './codec/index.js'
import { DeadLetters, DrainPacer, Forwarder, PriorityGate, upstreamOptions } from './forward/index.js'
import { FleetRegistry, fleetRegistryBucket } from './fleet/index.js'
import { Commands, Downlink, Requests, Rpc, parseRequestTemplate } from './downlink/index.js'
import { DeviceShares, Ingress, LagClock, PubackGate, RetransmitIndex, TopicPolicy, appendDeviceEvent, recordPresence, retransmitHash } from './ingress/index.js'
import { DIR_RESERVE_BYTES } from './log/format.js'
import { LogGroup, LogReader } from './log/index.js'
import type { LogMetrics, LogRecord, RingLog } from './log/index.js'
import { ClosedSignal, StartedComponents, deadlineIn } from './lifecycle.js'
import type { Component, Deadline } from './lifecycle.js'
import type { Logger } from './logger.js'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { Health, statusDocument } from './health/index.js'
import { createMetrics, exportClassDrops, MetricsServer, STATUS_PAGE } from './metrics/index.js'
import { VERSION } from './version.js'
import type { Metrics } from './metrics/index.js'

/** Entries the retransmit index remembers (and reads back from the log at start). */
const RETRANSMIT_MEMORY = 65_536
/** A resend without DUP on a new connection within this time counts as a retransmission (see ingress/retransmits.ts). */
const RETRANSMIT_WINDOW_MS = 300_000
/** Backlog (records) from which the forwarder opens its live lane. */
const LIVE_LANE_MIN_BACKLOG = 10_000
/** Bytes appended and not yet written above which QoS 0 publishes wait for the log too. */
const MAX_PENDING_BYTES = 16 * 1024 * 1024

/** The stages of a start, in order (the names `failAfter` takes). */
export const STAGES = ['log', 'ingress', 'health', 'http', 'forwarder', 'downlink', 'fleet'] as const
export type Stage = (typeof STAGES)[number]

export interface GatewayStartOptions {
  /** Called after each segment recovery looked at (progress of a long start). */
  readonly onRecoveryProgress?: (done: number, total: number) => void
  /**
   * Test seam, never set by Ferry itself: the start fails with {@link InjectedStartFailure} right
   * after this stage started, as if its next step had thrown, so that a test can check that a
   * failed start leaves nothing running (test/integration/lifecycle.test.ts).
   */
  readonly failAfter?: Stage
}

/** The failure `failAfter` injects (tests only). */
export class InjectedStartFailure extends Error {
  constructor(readonly stage: Stage) {
    super(`start failure injected after the ${stage} stage (test seam)`)
    this.name = 'InjectedStartFailure'
  }
}

/** The components a gateway runs, by name. */
interface Components {
  readonly monitors: Component
  readonly log: LogGroup
  readonly ingress: Component
  readonly health: Health
  readonly http: MetricsServer
  readonly forwarder: Component
  readonly downlink: Component
  /** The fleet registry (absent with --fleet-registry off). */
  readonly fleet: Component | undefined
}

export class Gateway {
  private closing: Promise<void> | undefined
  private readonly stopped = new ClosedSignal()
  private stoppedBy: { readonly component: string; readonly error: Error } | undefined

  private constructor(
    readonly config: Config,
    readonly metrics: Metrics,
    /** The log of class normal (the whole log without --priority). */
    readonly log: RingLog,
    /** One log per priority class in use (just normal without --priority). */
    readonly logs: LogGroup,
    readonly ingress: Ingress,
    /** The forwarder of class normal. */
    readonly forwarder: Forwarder,
    /** One forwarder per priority class in use, most important first. */
    readonly forwarders: readonly Forwarder[],
    private readonly logger: Logger,
    readonly http: MetricsServer,
    readonly admission: Admission,
    private readonly components: Components,
    started: StartedComponents,
  ) {
    for (const { name, component } of started.list) {
      void component.closed().then((err) => {
        if (!err || this.stoppedBy) return
        this.stoppedBy = { component: name, error: err }
        this.stopped.resolve(err)
      })
    }
  }

  /**
   * Starts the gateway, one component after the other: recover the log, then listen for MQTT, then
   * serve HTTP, then forward and take commands. When a step fails, the components already started
   * are closed in reverse order before the error is thrown: a failed start leaves no socket, lock
   * or timer behind. Upstream being down does not stop the start: the log buffers until NATS is
   * reachable.
   */
  static async start(config: Config, logger: Logger, opts: GatewayStartOptions = {}): Promise<Gateway> {
    // A request topic template that cannot work stops the start before anything opens.
    parseRequestTemplate(config.downlink.requestTopic)
    const metrics = createMetrics()
    // Credentials, ACL and certificates first: a bad file stops the start before the log is touched.
    const admission = Admission.load({
      authFile: config.auth.file,
      aclFile: config.auth.aclFile,
      allowAnonymous: config.auth.allowAnonymous,
      requireClientCert: config.tls.requireClientCert,
      logger: logger.child('auth'),
      metrics,
    })
    const connectOptions = upstreamOptions(config.nats)
    const tlsListener = config.mqtts ? { ...config.mqtts, options: serverTlsOptions(config.tls) } : undefined
    if (config.auth.allowAnonymous) {
      logger.warn('--allow-anonymous: devices may connect without credentials', { listeners: [config.mqtt, config.mqtts].filter(Boolean) })
    }
    const reached = (stage: Stage): void => {
      if (opts.failAfter === stage) throw new InjectedStartFailure(stage)
    }
    const started = new StartedComponents()
    try {
      const monitors = started.add('monitors', eventLoopMonitor(metrics))
      const t0 = performance.now()
      const classes = classesInUse(config)
      // Record drops carry a class label only with --priority: without it every series stays as it was.
      const labelled = classes.length > 1
      const logs = started.add(
        'log',
        await LogGroup.open({
          members: classes.map((name) => ({ name, dir: name === 'normal' ? config.log.dataDir : path.join(config.log.dataDir, name) })),
          segmentBytes: config.log.segmentBytes,
          maxBytes: config.log.maxBytes,
          discard: config.log.discard,
          fsync: config.log.fsync,
          fsyncIntervalMs: config.log.fsyncIntervalMs,
          maxRecordBytes: config.log.maxRecordBytes,
          checkpointIntervalMs: config.log.checkpointIntervalMs,
          // Segments whose records all expired (or were forwarded) are reclaimed, also while upstream is down.
          expiryOf: entryExpiresAtMs,
          ...(opts.onRecoveryProgress ? { onRecoveryProgress: opts.onRecoveryProgress } : {}),
          metricsFor: (name) => (labelled ? classMetrics(metrics, name) : metrics),
          loggerFor: (name) => (labelled ? logger.child(`log.${name}`) : logger.child('log')),
        }),
      )
      const log = logs.get('normal')
      observeLogs(metrics, logs)
      for (const { name, log: l } of logs.members) {
        logger.info('ring log recovered', {
          ...(labelled ? { class: name } : {}),
          dir: path.resolve(l === log ? config.log.dataDir : path.join(config.log.dataDir, name)),
          ms: Math.round(performance.now() - t0),
          segments: l.recovery.segments,
          scannedSegments: l.recovery.scannedSegments,
          backlog: l.durableSeq - l.acked,
          nextSeq: l.next,
          epoch: l.epoch,
        })
      }
      reached('log')
      const payloads = new PayloadPolicy(config.codec.cbor, config.codec.rawTopics)
      // Before listening: a device's first publish after our crash may be a retransmission.
      const retransmits = await readRetransmits(logs, payloads)
      // Issue 16: each publish goes to its class's log with its --ttl; fair shares seeded from the
      // logs (before the gate: nothing to undo when reading them fails).
      const policy = new TopicPolicy(config.log.priority, config.log.ttl)
      const shares = config.limits.deviceMaxBytes > 0 ? await seedShares(logs, config.limits.deviceMaxBytes) : undefined
      // --max-forward-lag: the forwarder starts after ingress, so health reads it through a reference.
      let forwardersRef: readonly Forwarder[] = []
      const gate = slowdownGate(config, metrics, logs, () => (forwardersRef.length > 0 ? combinedHealth(forwardersRef) : undefined))
      // Ingress closes the gate when it stops; a failed start closes it here.
      const ingress = await Ingress.start({
        host: config.mqtt.host,
        port: config.mqtt.port,
        ...(tlsListener ? { tls: tlsListener } : {}),
        admission,
        limits: config.limits,
        payloads,
        maxEntryBytes: config.log.maxRecordBytes,
        retransmits,
        maxPendingBytes: MAX_PENDING_BYTES,
        logger: logger.child('ingress'),
        metrics,
        log,
        route: policy.router((cls) => logs.get(cls)),
        classLabels: labelled,
        ...(shares ? { shares } : {}),
        deviceMaxRate: config.limits.deviceMaxRate,
        deviceHardRate: config.limits.deviceHardRate,
        gate,
      }).catch((err: unknown) => {
        gate.close()
        throw err
      })
      started.add('ingress', ingress)
      reached('ingress')
      // The fleet registry follows devices from the first connection; it writes once its own NATS connection is up.
      const fleet = config.fleet.registry
        ? new FleetRegistry({
            servers: config.nats.url,
            connectOptions,
            bucket: config.fleet.registryBucket || fleetRegistryBucket(config.nats.subjectPrefix),
            replicas: config.nats.streamReplicas,
            gatewayId: config.gatewayId,
            heartbeatMs: config.fleet.heartbeatMs,
            version: VERSION,
            devices: ingress.devices,
            logger: logger.child('fleet'),
            metrics,
          })
        : undefined
      if (fleet) started.add('fleet', fleet)
      if (config.presence) recordPresence(ingress.devices, log, labelled ? classMetrics(metrics, 'normal') : metrics, logger.child('presence'), config.gatewayId, fleet)
      const deadLetters = new DeadLetters(config.log.dataDir)
      // Several forwarders (one per class) report into one gauge each: in flight adds up; connected only when all are.
      const inflight = new CombinedGauge(metrics.forwardInflight, (xs) => xs.reduce((a, b) => a + b, 0))
      const connected = new CombinedGauge(metrics.forwardConnected, (xs) => (xs.every((x) => x > 0) ? 1 : 0))
      // Strict priority between the class forwarders (priority.ts), one --drain-max-rate bucket for all (pacer.ts).
      const priorityGate = labelled ? new PriorityGate() : undefined
      const drainRate = config.forward.drainMaxRate
      const pacer = drainRate.messagesPerSecond > 0 || drainRate.bytesPerSecond > 0 ? new DrainPacer(drainRate) : undefined
      const forwarders = logs.members.map(({ name, log: l }, rank) => {
        const fm = labelled ? classMetrics(metrics, name) : metrics
        return new Forwarder({
          servers: config.nats.url,
          connectOptions,
          stream: config.nats.stream,
          subjectPrefix: config.nats.subjectPrefix,
          gatewayId: config.gatewayId,
          payloads,
          maxInflight: config.nats.maxInflight,
          maxInflightBytes: config.nats.maxInflightBytes,
          ackTimeoutMs: config.nats.ackTimeoutMs,
          maxAttempts: config.nats.maxAttempts,
          logger: labelled ? logger.child(`forward.${name}`) : logger.child('forward'),
          metrics: { ...fm, forwardInflight: inflight.member(rank), forwardConnected: connected.member(rank) },
          log: l,
          reader: new LogReader(l, l.acked + 1, (records, atSeq) => {
            fm.drops.inc(records, { reason: 'corrupt' })
            logger.child('log').warn('skipped damaged records in the log', { ...(labelled ? { class: name } : {}), records, atSeq })
          }),
          deadLetters,
          liveLaneMinBacklog: config.nats.liveLane ? LIVE_LANE_MIN_BACKLOG : 0,
          openReader: (fromSeq) => new LogReader(l, fromSeq),
          uplinkHeaders: config.forward.uplinkHeaders,
          partitions: config.nats.partitions,
          streamReplicas: config.nats.streamReplicas,
          dedupWindowMs: config.nats.dedupWindowMs,
          ...(priorityGate ? { className: name, priority: priorityGate.member(rank) } : {}),
          ...(pacer ? { pacer, paced: name !== 'high' } : {}),
          // With several classes: when one connects, the others try at once instead of waiting out their backoff.
          ...(labelled ? { onConnected: () => forwarders.forEach((f, i) => i !== rank && f.upstreamBack()) } : {}),
        })
      })
      const forwarder = forwarders[classes.indexOf('normal')]!
      forwardersRef = forwarders
      let downlinkRef: Downlink | undefined
      const health = started.add(
        'health',
        new Health({
          // Each class's log with its own forwarder (same order: most important first).
          logs: logs.members.map(({ name, log: l }, i) => ({ name, log: l, openReader: (fromSeq: number) => new LogReader(l, fromSeq), upstream: () => forwarders[i]!.health })),
          dataDir: config.log.dataDir,
          segmentBytes: config.log.segmentBytes,
          mqttListening: () => ingress.listening,
          upstream: () => combinedHealth(forwarders),
          metrics,
          stallMs: config.readyStallMs,
          // A byte cap counts payload bytes: at the payload per message sent so far (the log's record size until then).
          ...(pacer ? { drainCap: (avgBytes: number) => pacer.capMessagesPerSecond(pacer.averagePayloadBytes || avgBytes) } : {}),
          // The downlink starts after the HTTP endpoint: until then, not connected.
          downlink: () => downlinkRef?.health ?? { connected: false, subscribed: false, commandsProblem: 'not started' },
        }),
      )
      reached('health')
      const http = started.add(
        'http',
        await MetricsServer.start({
          host: config.http.host,
          port: config.http.port,
          maxConnections: config.http.maxConnections,
          allowedHosts: config.http.allowedHosts.split(','),
          registry: metrics.registry,
          logger: logger.child('http'),
          statusPage: STATUS_PAGE,
          json: {
            '/devices': () => ({ devices: ingress.devices.list() }),
            '/status.json': () => ({ ...statusDocument({ gatewayId: config.gatewayId, version: VERSION, health, metrics, slowdown: () => gate.state }), fleet: fleet?.status ?? { enabled: false } }),
          },
          readiness: () => health.readiness,
        }),
      )
      reached('http')
      for (const f of forwarders) f.start()
      // The dead-letter file closes after the forwarders, which may still write to it while they stop.
      const forwarderComponent = started.add('forwarder', {
        close: async (deadline: Deadline) => {
          try {
            await Promise.all(forwarders.map((f) => f.close(deadline)))
          } finally {
            deadLetters.close()
          }
        },
        closed: () => Promise.race(forwarders.map((f) => f.closed())),
      })
      reached('forwarder')
      // Cloud → device: durable commands and request-reply, on a NATS connection of their own.
      const devLog = logger.child('downlink')
      const commands = new Commands({
        stream: config.downlink.cmdStream,
        replicas: config.nats.streamReplicas,
        subjectPrefix: config.nats.subjectPrefix,
        gatewayId: config.gatewayId,
        topicTemplate: config.downlink.cmdTopic,
        ackTimeoutMs: config.downlink.cmdAckTimeoutMs,
        maxDeliver: config.downlink.cmdMaxDeliver,
        defaultTtlMs: config.downlink.cmdTtlMs,
        maxInflight: config.downlink.cmdMaxInflight,
        devices: ingress.devices,
        event: (clientId, event, body) => appendDeviceEvent(log, metrics, devLog, clientId, event, body, config.gatewayId),
        logger: devLog,
        metrics,
      })
      const rpc = new Rpc({
        subjectPrefix: config.nats.subjectPrefix,
        timeoutMs: config.downlink.rpcTimeoutMs,
        maxPending: config.downlink.rpcMaxPending,
        devices: ingress.devices,
        payloads,
        logger: devLog,
        metrics,
      })
      const requests = new Requests({
        subjectPrefix: config.nats.subjectPrefix,
        topicTemplate: config.downlink.requestTopic,
        timeoutMs: config.downlink.requestTimeoutMs,
        maxPending: config.downlink.requestMaxPending,
        maxPendingPerDevice: config.downlink.requestMaxPendingPerDevice,
        // Answers to MQTT 5 devices carry properties once the core's deliver takes them (aedes 2).
        deliver: ingress.devices.deliver.bind(ingress.devices),
        mayReceive: (client, topic) => admission.mayReceive(client, topic),
        identityOf: (client) => admission.identityOf(client),
        logger: devLog,
        metrics,
      })
      ingress.intercept = (client, topic, payload, properties) => rpc.intercept(client.id, topic, payload) ?? requests.intercept(client, topic, payload, properties)
      const downlink = new Downlink(config.nats.url, connectOptions, `ferry-${config.gatewayId}-downlink`, commands, rpc, devLog, requests)
      downlinkRef = downlink
      const downlinkComponent = started.add('downlink', downlink)
      reached('downlink')
      reached('fleet')
      const a = ingress.address
      logger.info('HTTP listening', { address: `${http.address.host}:${http.address.port}` })
      logger.info('MQTT listening', { address: `${a.host}:${a.port}`, ...(ingress.tlsAddress ? { tls: `${ingress.tlsAddress.host}:${ingress.tlsAddress.port}` } : {}), auth: admission.summary })
      const components: Components = { monitors, log: logs, ingress, health, http, forwarder: forwarderComponent, downlink: downlinkComponent, fleet }
      return new Gateway(config, metrics, log, logs, ingress, forwarder, forwarders, logger, http, admission, components, started)
    } catch (err) {
      logger.debug('start failed; closing what started, in reverse order', { started: started.list.map((c) => c.name), error: err })
      await started.closeAll(deadlineIn(config.shutdownTimeoutMs), (component, error) => logger.error('error while closing after a failed start', { component, error }))
      throw err
    }
  }

  /**
   * Settles once the gateway stopped: with the error of the first component that stopped on its
   * own failure (see {@link failure}; the others are still running, the caller closes or exits),
   * or with undefined after close(). Never rejects.
   */
  closed(): Promise<Error | undefined> {
    return this.stopped.promise
  }

  /** The component that stopped on its own failure, and its error; undefined while none did. */
  get failure(): { readonly component: string; readonly error: Error } | undefined {
    return this.stoppedBy
  }

  /** Graceful stop within `timeoutMs` (default: the configured shutdown timeout); see {@link closeBy}. */
  close(timeoutMs = this.config.shutdownTimeoutMs): Promise<void> {
    return this.closeBy(deadlineIn(timeoutMs))
  }

  /**
   * Graceful stop, each step bounded by the deadline: stop taking commands → stop accepting MQTT →
   * wait for in-flight PubAcks → flush, seal and checkpoint the log → close the HTTP endpoint and
   * the monitors. Not the reverse of the start order: the data path drains front to back (no
   * publish is accepted once the forwarder stops), and /metrics and /readyz answer until the log
   * is sealed. Idempotent.
   */
  closeBy(deadline: Deadline): Promise<void> {
    this.closing ??= (async () => {
      const c = this.components
      // Each step runs even when one before it failed: a forwarder left open would keep its
      // connection and the dead-letter file.
      const step = async (name: string, close: () => Promise<void>): Promise<void> => {
        try {
          await close()
        } catch (err) {
          this.logger.error('error while stopping; closing the log anyway', { component: name, error: err })
        }
      }
      try {
        await step('downlink', () => c.downlink.close(deadline))
        await step('ingress', () => c.ingress.close(deadline))
        // After ingress: the disconnects of the stop are written to the registry while time is left.
        if (c.fleet) await step('fleet', () => c.fleet!.close(deadline))
        await step('log', () => this.logs.drain())
        await step('forwarder', () => c.forwarder.close(deadline))
      } finally {
        // Whatever happened upstream, the log is sealed and checkpointed.
        await this.logs.close(deadline)
        await c.http.close(deadline)
        await c.health.close(deadline)
        await c.monitors.close(deadline)
      }
      this.logger.info('stopped', { acked: this.log.acked, lastSeq: this.log.durableSeq })
      this.stopped.resolve(this.stoppedBy?.error)
    })()
    return this.closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/** The event loop delay histogram behind ferry_process_event_loop_delay_p99_seconds, as a component. */
function eventLoopMonitor(metrics: Metrics): Component {
  const eld = monitorEventLoopDelay({ resolution: 10 })
  eld.enable()
  metrics.eventLoopDelay.collect(() => eld.percentile(99) / 1e9)
  const stopped = new ClosedSignal()
  return {
    close: () => {
      eld.disable()
      stopped.resolve()
      return Promise.resolve()
    },
    closed: () => stopped.promise,
  }
}

/**
 * The --max-forward-lag slow-down: the lag from the log's positions (LagClock), the upstream's
 * health as the forwarder reports it, and the forwarded count. Healthy = connected, the stream
 * usable, and no record waiting --ack-timeout-ms without a PubAck (what keeps /readyz's upstream
 * check "ok"); otherwise nothing is held and the log absorbs, as during an outage.
 */
function slowdownGate(config: Config, metrics: Metrics, logs: LogGroup, upstream: () => Forwarder['health'] | undefined): PubackGate {
  // One lag over every class: the clock counts records (last appended, last acknowledged) summed over the logs.
  const sum = (f: (l: RingLog) => number): number => logs.members.reduce((a, m) => a + f(m.log), 0)
  const lag = new LagClock(
    () => sum((l) => l.next - 1),
    () => sum((l) => l.acked),
  )
  let waitingSince = 0
  const healthy = (): boolean => {
    const up = upstream()
    if (!up || !up.connected || up.streamProblem) return false
    const now = Date.now()
    if (logs.members.every(({ log }) => log.durableSeq <= log.acked)) {
      waitingSince = 0
      return true
    }
    if (waitingSince === 0) waitingSince = now
    return now - Math.max(waitingSince, up.lastAckAtMs) < up.ackTimeoutMs
  }
  return new PubackGate({
    maxLagMs: config.forward.maxLag,
    lagMs: () => lag.lagMs(),
    healthy,
    forwarded: () => metrics.forwarded.get(),
    metrics,
  })
}

/**
 * Exports the logs' state as gauges, read at each scrape: sums over the classes, and the backlog of each
 * class (the oldest ages come from health). With --priority, the record drops of each class from 0.
 */
function observeLogs(metrics: Metrics, logs: LogGroup): void {
  const sum = (f: (l: RingLog) => number): number => logs.members.reduce((a, m) => a + f(m.log), 0)
  const backlog = (l: RingLog): number => Math.max(0, l.durableSeq - l.acked)
  metrics.logBytes.collect(() => sum((l) => l.sizeBytes))
  metrics.logSegments.collect(() => sum((l) => l.segmentCount))
  metrics.logBacklog.collect(() => sum(backlog))
  metrics.logBacklogBytes.collect(() => sum((l) => l.backlogBytesEstimate()))
  metrics.logRecords.collect(() => sum((l) => Math.max(0, l.durableSeq - l.headSeq + 1)))
  for (const { name, log } of logs.members) {
    metrics.logClassBacklog.collect({ class: name }, () => backlog(log))
    metrics.logClassBacklogBytes.collect({ class: name }, () => log.backlogBytesEstimate())
  }
  if (logs.members.length > 1) exportClassDrops(metrics.drops, logs.members.map((m) => m.name))
}

/**
 * The priority classes with a log, most important first: normal, those --priority names, and those
 * whose log is on disk from an earlier configuration (<data-dir>/high, <data-dir>/low), so that a
 * backlog stored under another --priority is still forwarded, never left behind.
 */
export function classesInUse(config: Config): PriorityClass[] {
  const named = new Set<PriorityClass>(['normal', ...config.log.priority.map((r) => r.class)])
  for (const c of PRIORITY_CLASSES) {
    if (c !== 'normal' && existsSync(path.join(config.log.dataDir, c, 'segments'))) named.add(c)
  }
  return PRIORITY_CLASSES.filter((c) => named.has(c))
}

/**
 * Why the bound cannot hold the class logs that will be opened (classesInUse: those --priority names
 * and those left on disk), or undefined when it can: one segment per class and one more, and the
 * data directory's reserve. The config check sees only the classes --priority names.
 */
export function classBoundProblem(config: Config): string | undefined {
  const classes = classesInUse(config)
  const least = (classes.length + 1) * config.log.segmentBytes + DIR_RESERVE_BYTES
  if (classes.length < 2 || config.log.maxBytes >= least) return undefined
  const leftover = classes.filter((c) => c !== 'normal' && !config.log.priority.some((r) => r.class === c))
  return `'log.maxBytes' (${config.log.maxBytes}) must hold ${classes.length + 1} segments of 'log.segmentBytes' (${config.log.segmentBytes}) + ${DIR_RESERVE_BYTES} for the class logs ${classes.join(', ')}${leftover.length ? ` (${leftover.map((c) => path.join(config.log.dataDir, c)).join(', ')} left on disk by an earlier --priority: forward its backlog with a larger bound, then remove it)` : ''}: raise --log-max-bytes to at least ${least} or lower --log-segment-bytes`
}

/** The gateway's metrics with every ferry_drops_total increment labelled with `cls`. */
function classMetrics(metrics: Metrics, cls: string): Metrics & LogMetrics {
  return { ...metrics, drops: { inc: (n: number, labels: { reason: string }) => metrics.drops.inc(n, { ...labels, class: cls }) } } as unknown as Metrics & LogMetrics
}

/** One gauge fed by several members (each calls collect once), combined at scrape time. */
class CombinedGauge {
  private readonly reads: Array<() => number> = []
  constructor(gauge: { collect(fn: () => number): void }, combine: (values: number[]) => number) {
    gauge.collect(() => combine(this.reads.map((r) => r())))
  }
  member(_rank: number): { collect(fn: () => number): void } {
    return { collect: (fn) => void this.reads.push(fn) }
  }
}

/** The upstream health of several forwarders as one: connected when all are, the latest PubAck, the first problem. */
function combinedHealth(forwarders: readonly Forwarder[]): Forwarder['health'] {
  const hs = forwarders.map((f) => f.health)
  const first = hs[0]!
  if (hs.length === 1) return first
  return {
    connected: hs.every((h) => h.connected),
    lastAckAtMs: Math.max(...hs.map((h) => h.lastAckAtMs)),
    problem: hs.find((h) => h.problem)?.problem ?? '',
    streamProblem: hs.find((h) => h.streamProblem)?.streamProblem ?? '',
    ackTimeoutMs: first.ackTimeoutMs,
  }
}

/**
 * The fair shares at start: every device record of every class log not yet acknowledged, charged
 * to its device (device events are not charged, as ingress does not charge them).
 */
async function seedShares(logs: LogGroup, maxBytes: number): Promise<DeviceShares> {
  const shares = new DeviceShares(maxBytes)
  for (const { name, log } of logs.members) {
    shares.track(name, log)
    await forEachEntry(log, Math.max(log.headSeq, log.acked + 1), (e, r) => {
      if (!e.topic.startsWith(EVENT_TOPIC_PREFIX)) shares.add(name, r.seq, e.clientId, r.body.length)
    })
  }
  return shares
}

/** Reads `log` from `from` to its durable end, handing each decodable entry to `fn` (an undecodable one is the forwarder's to dead-letter). */
async function forEachEntry(log: RingLog, from: number, fn: (e: Entry, r: LogRecord) => void): Promise<void> {
  if (from > log.durableSeq) return
  const reader = new LogReader(log, from)
  try {
    for (;;) {
      const recs = await reader.read(4096, 4 * 1024 * 1024)
      if (recs.length === 0) break
      for (const r of recs) {
        let e: Entry
        try {
          e = decodeEntry(r.body)
        } catch {
          continue
        }
        fn(e, r)
      }
    }
  } finally {
    await reader.close()
  }
}

/** Reads the newest records back so retransmissions of messages stored before a crash are recognised. */
async function readRetransmits(logs: LogGroup, payloads: PayloadPolicy): Promise<RetransmitIndex> {
  const index = new RetransmitIndex(RETRANSMIT_MEMORY, RETRANSMIT_WINDOW_MS)
  for (const { log } of logs.members) await readRetransmitsOf(log, payloads, index)
  return index
}

async function readRetransmitsOf(log: RingLog, payloads: PayloadPolicy, index: RetransmitIndex): Promise<void> {
  await forEachEntry(log, Math.max(log.headSeq, log.durableSeq - RETRANSMIT_MEMORY + 1), (e, r) => {
    // Ingress hashes the payload as stored; version 1 entries hold the device's bytes.
    if (e.qos > 0 && e.packetId > 0) index.add(e.clientId, e.packetId, retransmitHash(e.topic, e.encoding ? e.payload : payloads.encode(e.topic, e.payload).data), 0, r.ts)
  })
}
