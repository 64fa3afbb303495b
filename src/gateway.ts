// Composition root: builds the stages from the config, owns the start order and the close order.
import path from 'node:path'
import { Admission, serverTlsOptions } from './auth/index.js'
import { PayloadPolicy, decodeEntry } from './codec/index.js'
import type { Config } from './config/index.js'
import { DeadLetters, Forwarder, upstreamOptions } from './forward/index.js'
import { Commands, Downlink, Rpc } from './downlink/index.js'
import { Ingress, RetransmitIndex, appendDeviceEvent, recordPresence, retransmitHash } from './ingress/index.js'
import { LogReader, RingLog } from './log/index.js'
import { deadlineIn } from './lifecycle.js'
import type { Logger } from './logger.js'
import { monitorEventLoopDelay } from 'node:perf_hooks'
import { createMetrics, Health, MetricsServer, STATUS_PAGE } from './metrics/index.js'
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

export class Gateway {
  private closing: Promise<void> | undefined

  private constructor(
    readonly config: Config,
    readonly metrics: Metrics,
    readonly log: RingLog,
    readonly ingress: Ingress,
    readonly forwarder: Forwarder,
    private readonly deadLetters: DeadLetters,
    private readonly logger: Logger,
    readonly http: MetricsServer,
    readonly admission: Admission,
    private readonly downlink: Downlink,
    private readonly stopMonitors: () => void,
  ) {}

  /**
   * Starts the gateway: recover the log, then listen for MQTT, then forward. Upstream being down
   * does not stop the start: the log buffers until NATS is reachable.
   */
  static async start(config: Config, logger: Logger, opts: { onRecoveryProgress?: (done: number, total: number) => void } = {}): Promise<Gateway> {
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
    const eld = monitorEventLoopDelay({ resolution: 10 })
    eld.enable()
    metrics.eventLoopDelay.collect(() => eld.percentile(99) / 1e9)
    const t0 = performance.now()
    const log = await RingLog.open({
      dir: config.log.dataDir,
      segmentBytes: config.log.segmentBytes,
      maxBytes: config.log.maxBytes,
      discard: config.log.discard,
      fsync: config.log.fsync,
      fsyncIntervalMs: config.log.fsyncIntervalMs,
      maxRecordBytes: config.log.maxRecordBytes,
      checkpointIntervalMs: config.log.checkpointIntervalMs,
      ...(opts.onRecoveryProgress ? { onRecoveryProgress: opts.onRecoveryProgress } : {}),
      logger: logger.child('log'),
      metrics,
    })
    logger.info('ring log recovered', {
      dir: path.resolve(config.log.dataDir),
      ms: Math.round(performance.now() - t0),
      segments: log.recovery.segments,
      scannedSegments: log.recovery.scannedSegments,
      backlog: log.durableSeq - log.acked,
      nextSeq: log.next,
      epoch: log.epoch,
    })
    const payloads = new PayloadPolicy(config.codec.cbor, config.codec.rawTopics)
    let ingress: Ingress
    try {
      // Before listening: a device's first publish after our crash may be a retransmission.
      const retransmits = await readRetransmits(log, payloads)
      ingress = await Ingress.start({
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
      })
    } catch (err) {
      await log.close()
      throw err
    }
    if (config.presence) recordPresence(ingress.devices, log, metrics, logger.child('presence'))
    const deadLetters = new DeadLetters(config.log.dataDir)
    const forwarder = new Forwarder({
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
      logger: logger.child('forward'),
      metrics,
      log,
      reader: new LogReader(log, log.acked + 1, (records, atSeq) => {
        metrics.drops.inc(records, { reason: 'corrupt' })
        logger.child('log').warn('skipped damaged records in the log', { records, atSeq })
      }),
      deadLetters,
      liveLaneMinBacklog: config.nats.liveLane ? LIVE_LANE_MIN_BACKLOG : 0,
      openReader: (fromSeq) => new LogReader(log, fromSeq),
    })
    let downlinkRef: Downlink | undefined
    const health = new Health({
      log,
      dataDir: config.log.dataDir,
      segmentBytes: config.log.segmentBytes,
      mqttListening: () => ingress.listening,
      upstream: () => forwarder.health,
      openReader: (fromSeq) => new LogReader(log, fromSeq),
      metrics,
      stallMs: config.readyStallMs,
      // The downlink starts after the HTTP endpoint: until then, not connected.
      downlink: () => downlinkRef?.health ?? { connected: false, subscribed: false, commandsProblem: 'not started' },
    })
    let http: MetricsServer
    try {
      http = await MetricsServer.start({
        host: config.http.host,
        port: config.http.port,
        maxConnections: config.http.maxConnections,
        allowedHosts: config.http.allowedHosts.split(','),
        registry: metrics.registry,
        logger: logger.child('http'),
        statusPage: STATUS_PAGE,
        json: {
          '/devices': () => ({ devices: ingress.devices.list() }),
          '/status.json': () => ({
            gatewayId: config.gatewayId,
            version: VERSION,
            now: Date.now(),
            readiness: health.readiness,
            clients: metrics.mqttClients.get(),
            totals: { received: metrics.mqttReceived.total(), forwarded: metrics.forwarded.get(), dropped: metrics.drops.total() },
            series: health.series,
            drops: health.recentDrops,
          }),
        },
        readiness: () => health.readiness,
      })
    } catch (err) {
      health.close()
      await ingress.close()
      await log.close()
      throw err
    }
    forwarder.start()
    // Cloud → device: durable commands and request-reply, on a NATS connection of their own.
    const devLog = logger.child('downlink')
    const commands = new Commands({
      stream: config.downlink.cmdStream,
      subjectPrefix: config.nats.subjectPrefix,
      gatewayId: config.gatewayId,
      topicTemplate: config.downlink.cmdTopic,
      ackTimeoutMs: config.downlink.cmdAckTimeoutMs,
      maxDeliver: config.downlink.cmdMaxDeliver,
      defaultTtlMs: config.downlink.cmdTtlMs,
      maxInflight: config.downlink.cmdMaxInflight,
      devices: ingress.devices,
      event: (clientId, event, body) => appendDeviceEvent(log, metrics, devLog, clientId, event, body),
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
    ingress.intercept = (client, topic, payload) => rpc.intercept(client.id, topic, payload)
    const downlink = new Downlink(config.nats.url, connectOptions, `ferry-${config.gatewayId}-downlink`, commands, rpc, devLog)
    downlinkRef = downlink
    const a = ingress.address
    logger.info('HTTP listening', { address: `${http.address.host}:${http.address.port}` })
    logger.info('MQTT listening', { address: `${a.host}:${a.port}`, ...(ingress.tlsAddress ? { tls: `${ingress.tlsAddress.host}:${ingress.tlsAddress.port}` } : {}), auth: admission.summary })
    return new Gateway(config, metrics, log, ingress, forwarder, deadLetters, logger, http, admission, downlink, () => {
      eld.disable()
      health.close()
    })
  }

  /**
   * Graceful stop, each step bounded by what is left of `timeoutMs`: stop accepting MQTT → wait for
   * in-flight PubAcks → flush, seal and checkpoint the log → close. Idempotent.
   */
  close(timeoutMs = this.config.shutdownTimeoutMs): Promise<void> {
    this.closing ??= (async () => {
      const deadline = Date.now() + timeoutMs
      try {
        await this.downlink.close(deadlineIn(Math.max(0, deadline - Date.now())))
        await this.ingress.close()
        await this.log.drain()
        await this.forwarder.close(deadlineIn(Math.max(0, deadline - Date.now())))
      } catch (err) {
        this.logger.error('error while stopping; closing the log anyway', { error: err })
      } finally {
        // Whatever happened upstream, the log is sealed and checkpointed.
        await this.log.close()
        this.deadLetters.close()
        await this.http.close()
        this.stopMonitors()
      }
      this.logger.info('stopped', { acked: this.log.acked, lastSeq: this.log.durableSeq })
    })()
    return this.closing
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close()
  }
}

/** Reads the newest records back so retransmissions of messages stored before a crash are recognised. */
async function readRetransmits(log: RingLog, payloads: PayloadPolicy): Promise<RetransmitIndex> {
  const index = new RetransmitIndex(RETRANSMIT_MEMORY, RETRANSMIT_WINDOW_MS)
  const from = Math.max(log.headSeq, log.durableSeq - RETRANSMIT_MEMORY + 1)
  if (from > log.durableSeq) return index
  const reader = new LogReader(log, from)
  try {
    for (;;) {
      const recs = await reader.read(4096, 4 * 1024 * 1024)
      if (recs.length === 0) break
      for (const r of recs) {
        try {
          const e = decodeEntry(r.body)
          // Ingress hashes the payload as stored; version 1 entries hold the device's bytes.
          if (e.qos > 0 && e.packetId > 0) index.add(e.clientId, e.packetId, retransmitHash(e.topic, e.encoding ? e.payload : payloads.encode(e.topic, e.payload).data), 0, r.ts)
        } catch {
          // an undecodable entry is dealt with (dead-lettered) by the forwarder
        }
      }
    }
  } finally {
    await reader.close()
  }
  return index
}
