// The forwarder: reads the ring log, publishes to JetStream with a bounded window, acks the log on PubAck.
//
// Publish pattern: plain `nc.publish(subject, data, { reply: <inbox>.<seq>, headers })` with one
// wildcard subscription on `<inbox>.*` receiving every PubAck (what Go's PublishAsync does). This
// pipelines up to `maxInflight` messages instead of awaiting each `js.publish()`.
//
// Delivery rules:
// - every message carries `Nats-Msg-Id: <gatewayId>:<epoch>:<seq>`; a resend (timeout, reconnect,
//   crash) reuses it, so JetStream's duplicate window drops the copy (PubAck duplicate: true); a
//   resend of a record first sent longer than --dedup-window (or the stream's shorter window) ago may be stored twice: each such
//   resend is counted (ferry_forward_resends_outside_dedup_window_total) and logged with its seqs;
// - one connection per session to any of the --nats-url servers (a cluster's nodes): when it
//   closes, or when the server stops answering PINGs after a failed stream check (a hung node),
//   the next session resends everything unacknowledged, same ids, in seq order (recovery below);
// - the log's ack cursor advances only over a contiguous run of PubAcks (ack-window.ts, the only
//   caller of the log's ack);
// - a PubAck counts only when it names the configured stream (every publish carries
//   `Nats-Expected-Stream`, except under --uplink-headers compact); anything else is a non-permanent refusal that also re-checks the
//   stream (puback.ts), so a forged or misrouted reply never drops a record from the backlog;
// - a message JetStream rejects with a 4xx error `maxAttempts` times (e.g. larger than the stream
//   allows) goes to the dead-letter file, is counted and logged, and stops blocking the cursor.
//
// No overtaking: after a refusal, a PubAck timeout or a reconnect, the forwarder recovers before it
// sends anything new. Every unacknowledged record is rewound (to be sent again), the earliest one
// goes alone (the probe, after the backoff) until JetStream stores it, then the rest are sent again
// in seq order, then new records flow. So a record is never sent ahead of an earlier one that was
// refused or lost. What remains: JetStream itself may refuse (or lose) a record and store a later one
// that was already in flight (e.g. a stream that starts accepting again mid-window); the forwarder
// sees this when the earlier record is stored on its resend while a later record of its topic or
// device was stored first, and counts it (ferry_forward_reordered_total) and logs it.
// A rejection that answers an older send of a record that was sent again since is ignored (the reply
// subject names the attempt, reply-subject.ts).
//
// Message expiry (MQTT 5): a record whose absolute expiry (entry version 3) has passed when it would
// be sent (first send or resend) is not sent: it completes at once, so the ack cursor passes it,
// counted in ferry_drops_total{reason="expired"} and logged with its seq ranges (SeqRanges, one
// line per second at most). Wall clock (Date.now()), as the expiry is a wall-clock time.
//
// Live lane: while a large backlog drains, new records of topics and devices without backlog go
// ahead of it on a second reader. What goes by the lane and when is decided by live-lane.ts (with
// LaneHold, lane-hold.ts); what the lane sent waits in the ack window (ack-window.ts) until the main
// reader reaches it, so the ack cursor still only moves over a contiguous run.
//
// Priority classes (--priority): one forwarder per class log, each with its own connection, window
// and live lane. `className` names the class in message ids (codec/headers.ts msgIdSource), dead
// letters and log lines; `priority` (priority.ts) holds back new records and resends while a more
// important class has records it has not taken; `pacer` (pacer.ts, --drain-max-rate) makes the main
// reader and the resends of a paced forwarder wait for tokens (the probe, the live lane and unpaced
// forwarders only debit it). Without them (no --priority, no --drain-max-rate) nothing changes.
//
// Parts: the NATS connection (src/upstream), the mapping of a log entry to a NATS message
// (codec/nats-message.ts), the ack window, the lane policy; this file is the publish mechanics and
// the recovery state machine.
import { createInbox } from '@nats-io/transport-node'
import type { ConnectionOptions, Msg, MsgHdrs, NatsConnection, PublishOptions, Subscription } from '@nats-io/transport-node'
import { UplinkHeaderEncoder, UplinkSubjects, decodeEntry, isEventTopic, uplinkMessage } from '../codec/index.js'
import type { PayloadPolicy, UplinkContext, UplinkHeaderMode } from '../codec/index.js'
import { LogIoError } from '../errors.js'
import { ClosedSignal, deadlineIn, remainingMs } from '../lifecycle.js'
import type { Component, Deadline } from '../lifecycle.js'
import type { LogReader, RingLog } from '../log/index.js'
import type { LogFields, Logger } from '../logger.js'
import { Backoff, Pause, connectWithBackoff, drainWithin } from '../upstream/index.js'
import { AckWindow } from './ack-window.js'
import type { DeadLetters } from './dead-letter.js'
import { LaneHold } from './lane-hold.js'
import { LIVE_LANE_MAX_TOPICS, LIVE_LANE_RETRY_MS, LaneSchedule, laneRoom, laneWanted, liveLaneMaxAgeMs, mainLaneCap } from './live-lane.js'
import type { LaneWindow } from './live-lane.js'
import type { ForwardMetrics } from './metrics.js'
import type { DrainPacer } from './pacer.js'
import type { PriorityMember } from './priority.js'
import { classifyPubAck, expectStream } from './puback.js'
import type { ExpectedStream } from './puback.js'
import { parseReplySubject, replySeq, replySubject } from './reply-subject.js'
import { SeqRanges } from './seq-ranges.js'
import { serversAvoiding } from './server-order.js'
import { ensureStream } from './stream.js'

/** Options of the forwarder. Times in milliseconds. */
export interface ForwarderOptions {
  /** NATS server URLs. */
  readonly servers: readonly string[]
  /** Authentication and TLS (see upstream-auth.ts). */
  readonly connectOptions?: Partial<ConnectionOptions>
  readonly stream: string
  readonly subjectPrefix: string
  readonly gatewayId: string
  /** Encodes the payloads of version 1 log entries (newer entries are encoded at ingest). */
  readonly payloads: PayloadPolicy
  /** Most messages published and not yet acknowledged. */
  readonly maxInflight: number
  /** Most payload bytes published and not yet acknowledged. */
  readonly maxInflightBytes: number
  /** A message without PubAck after this long is published again. */
  readonly ackTimeoutMs: number
  /** 4xx rejections of one message before it is dead-lettered. */
  readonly maxAttempts: number
  readonly logger: Logger
  readonly metrics: ForwardMetrics
  readonly log: RingLog
  readonly reader: LogReader
  readonly deadLetters: DeadLetters
  /**
   * Live lane: while a backlog of at least `liveLaneMinBacklog` records drains, records newer than
   * the backlog whose topic has nothing in the backlog are forwarded at once (see README). 0 = off.
   */
  readonly liveLaneMinBacklog: number
  /** Opens a second reader on the log (the live lane's). */
  readonly openReader: (fromSeq: number) => LogReader
  /** Which headers uplink messages carry (--uplink-headers, codec/headers.ts); default full. */
  readonly uplinkHeaders?: UplinkHeaderMode
  /** Partition tokens in uplink and event subjects (--partitions, codec/subject.ts); 0 or absent = none. */
  readonly partitions?: number
  /** Replicas of the stream when Ferry creates it (--stream-replicas). Default 1. */
  readonly streamReplicas?: number
  /**
   * The duplicate window of the stream when Ferry creates it (--dedup-window), ms. Default 2 minutes.
   * A resend of a record first sent longer ago (or longer than an existing stream's shorter window)
   * may be stored twice: counted and logged.
   */
  readonly dedupWindowMs?: number
  /** Called each time this forwarder connects to NATS (the gateway tells the other classes' forwarders, upstreamBack). */
  readonly onConnected?: () => void
  /**
   * The priority class of this forwarder's log (--priority): undefined or 'normal' = message ids as
   * without classes; any other class is named in message ids (`<gatewayId>.<class>:<epoch>:<seq>`).
   * When set, log lines and dead letters name the class.
   */
  readonly className?: string
  /** This forwarder's seat at the PriorityGate shared by the forwarders of all classes (priority.ts); absent = never held. */
  readonly priority?: PriorityMember
  /** The --drain-max-rate bucket shared by the forwarders of all classes (pacer.ts); absent = no cap. */
  readonly pacer?: DrainPacer
  /**
   * Whether the main reader (and the resends) wait for the pacer's tokens. Default true; the gateway
   * passes false for class high, whose sends only debit the bucket.
   */
  readonly paced?: boolean
}

/** `logger` with a `class` field on every line (several forwarders, one per class, share one log output). */
function withClass(logger: Logger, className: string): Logger {
  const add = (f?: LogFields): LogFields => ({ class: className, ...f })
  return {
    debug: (m, f) => logger.debug(m, add(f)),
    info: (m, f) => logger.info(m, add(f)),
    warn: (m, f) => logger.warn(m, add(f)),
    error: (m, f) => logger.error(m, add(f)),
    child: (c) => withClass(logger.child(c), className),
  }
}

interface Inflight {
  readonly seq: number
  readonly epoch: number
  readonly ts: number
  /** Cleared once acknowledged (a live-lane entry may wait long for the main reader). */
  body: Buffer
  readonly subject: string
  data: Uint8Array
  /** The encoded header block (codec/headers.ts). */
  readonly headers: Uint8Array
  /** performance.now() of the last send; 0 = to be sent. */
  sentAt: number
  /** performance.now() of the first send by this process; 0 = not sent yet. */
  firstSentAt: number
  /** Sends so far (names the reply subject of each). */
  attempts: number
  /** Permanent (4xx) rejections so far: `maxAttempts` of them dead-letter the record. */
  rejections: number
  /** Set by the ack window (ack-window.ts) once stored, dead-lettered or dropped. */
  done: boolean
  /** Done because JetStream stored it (not dead-lettered or dropped). */
  stored: boolean
  /** Being written to the dead-letter file: not sent again meanwhile. */
  parked: boolean
  lastError: string
  /** The log entry cannot be decoded: it can only be dead-lettered. */
  undecodable: boolean
  /** MQTT topic ('' for events and undecodable entries) and client id: the keys of order. */
  readonly topic: string
  readonly clientId: string
  /** Absolute expiry, ms since the epoch (Infinity: none): not sent once passed. */
  readonly expiresAtMs: number
}

/** Resolves true when `p` settles (either way) within `ms`, false otherwise. */
async function settlesWithin(p: Promise<unknown>, ms: number): Promise<boolean> {
  let timer: NodeJS.Timeout | undefined
  const timeout = new Promise<boolean>((resolve) => (timer = setTimeout(() => resolve(false), ms)))
  const settled = p.then(
    () => true,
    () => true,
  )
  const r = await Promise.race([settled, timeout])
  clearTimeout(timer)
  return r
}

/**
 * The headers of the publish under way, already encoded by codec/headers.ts. nats.js only calls
 * `encode()` on the headers of a publish, synchronously inside publish() (protocol.js), and keeps the
 * bytes, never the object: so one slot (and one options object) serves every publish, set just before
 * it. Building MsgHdrsImpl and three set() calls per message cost ~1 µs more (measured), and its set()
 * refuses client ids with CR/LF. The integration tests read the headers back, so a nats.js change here
 * cannot pass unnoticed.
 */
class HeaderSlot {
  bytes: Uint8Array = EMPTY
  encode(): Uint8Array {
    return this.bytes
  }
}
const EMPTY = Buffer.alloc(0)

/**
 * Records read and published per step. Each record costs ~10 µs of synchronous work; between steps
 * the loop yields (setImmediate), so MQTT traffic waits at most about this many records' worth.
 */
const READ_CHUNK_RECORDS = 64
/** Expired records are logged at most this often, as seq ranges. */
const EXPIRED_LOG_MS = 1000
/** Resends outside the duplicate window are logged at most this often, as seq ranges. */
const LATE_RESEND_LOG_MS = 10_000
const DEFAULT_DEDUP_WINDOW_MS = 120_000
/** Longest wait for each JetStream API answer of the stream check (unless the link is measured slower). */
const STREAM_CHECK_TIMEOUT_MS = 5000
/**
 * How long the PING after a failed stream check may take before the server counts as hung: the
 * connect timeout, as a new connection must complete its own PING in that time.
 */
const HUNG_PING_TIMEOUT_MS = 5000
/** Longest wait for a stream check answer on a link measured slow. */
const SLOW_LINK_CHECK_TIMEOUT_MS = 20_000
interface LiveLane {
  readonly reader: LogReader
  /** What the lane sends and when (live-lane.ts). */
  readonly schedule: LaneSchedule
}

/** How long a forwarder that stopped on its own failure waits for in-flight PubAcks before it closes. */
const FAIL_CLOSE_MS = 5000
const BACKOFF_MIN_MS = 100
const BACKOFF_MAX_MS = 5000
/**
 * Longest wait for the priority gate before the loop looks again (the gate wakes it on a more
 * important class's notice; this only bounds a wait whose notice was missed).
 */
const GATE_RECHECK_MS = 5000
/** Longest slice of a wait for --drain-max-rate tokens while a live lane is open (the lane is served in between). */
const LIVE_LANE_PACE_SLICE_MS = 20

export class Forwarder implements Component {
  private nc: NatsConnection | undefined
  private sub: Subscription | undefined
  private readonly inbox = createInbox('_FERRY')
  /** The stream every PubAck must name (puback.ts). */
  private readonly expected: ExpectedStream
  /** Both lanes' in-flight records and the contiguous ack: the only caller of the log's ack. */
  private readonly window: AckWindow<Inflight>
  private readonly bySeq = new Map<number, Inflight>()
  private inflightBytes = 0
  private running = false
  private connected = false
  private streamReady = false
  /** Date.now() of the last PubAck (0: none yet). */
  private lastAckAtMs = 0
  /** Why the last publish or stream check failed, for /readyz (cleared by a PubAck). */
  private lastProblem = ''
  /** Why the last stream check failed ('' once one succeeds), for /readyz. */
  private streamProblem = ''
  /** False when the stream does not capture `<prefix>.events.>`: event entries are then dropped (counted). */
  private eventsCaptured = true
  private loop: Promise<void> | undefined
  private timer: NodeJS.Timeout | undefined
  /** One backoff for every failure (connect, stream check, publish): reset by progress. */
  private readonly backoff = new Backoff({ minMs: BACKOFF_MIN_MS, maxMs: BACKOFF_MAX_MS, jitter: true })
  private readonly pause = new Pause()
  /** performance.now() before which nothing is sent (backoff). Timers here are monotonic: a step of the wall clock must not stall forwarding. */
  private resumeAt = 0
  /** The close under way or done (close() is idempotent and every call waits for the same one). */
  private closing: Promise<void> | undefined
  /** Why forwarding stopped on its own (the ring log failed), for closed(). */
  private failure: Error | undefined
  private readonly stopped = new ClosedSignal()
  /** Subjects memoised per topic and client (codec UplinkSubjects). */
  private readonly subjects: UplinkSubjects
  /** Published and not yet acknowledged (both lanes). */
  private unacked = 0
  private live: LiveLane | undefined
  private liveScan: Promise<void> | undefined
  private liveRetryAt = 0
  /** Recovering from a refusal, timeout or reconnect: nothing new is sent (see the header). */
  private recovering = false
  /** The record sent alone while recovering, until JetStream stores it. */
  private probe: Inflight | undefined
  /**
   * After the probe was stored: the rewound records still to be sent again, in order (paced, a chunk
   * per step); nothing new is taken until they are all sent. Undefined when not resending.
   */
  private resendQueue: Inflight[] | undefined
  private resendAt = 0
  private resent = 0
  /** Log lines, with the class when there are classes. */
  private readonly logger: Logger
  /** Waits for the pacer's tokens (a pacer is given and this forwarder is paced). */
  private readonly paced: boolean
  private reorderWarnAt = 0
  /** Records dropped as expired since the last log line about them. */
  private readonly expired = new SeqRanges()
  private expiredLogAt = 0
  /** Records resent when their first send was longer than the duplicate window ago, since the last log line about them. */
  private readonly lateResends = new SeqRanges()
  private lateResendLogAt = 0
  /** Stream setting warnings already logged (stream.ts): once per process, not per reconnect. */
  private readonly streamWarned = new Set<string>()
  /** --dedup-window: the duplicate window of a stream Ferry creates. */
  private readonly dedupWindowMs: number
  /**
   * The window resends are measured against: --dedup-window, or the stream's own when it is shorter
   * (an existing stream Ferry did not create; warned at the stream check).
   */
  private resendWindowMs: number
  /** `host:port` of the server left for not answering a PING: the next connection tries it last. */
  private hungServer: string | undefined
  /** performance.now() of the last answer (PubAck or error) on this connection: a server still answering is not hung. */
  private lastReplyAt = 0
  /** The last PING's round trip on this connection, ms (0 = not measured): a slow link gets longer stream checks. */
  private linkRttMs = 0

  /** The window the live lane shares with the main lane (live-lane.ts). */
  private readonly laneWindow: LaneWindow
  /** How a log entry becomes a NATS message (codec/nats-message.ts). */
  private readonly uplink: UplinkContext
  /** The headers and options of the publish under way (see HeaderSlot). */
  private readonly headerSlot = new HeaderSlot()
  private readonly publishOptions: Partial<PublishOptions> & { reply: string; headers: MsgHdrs } = { reply: '', headers: this.headerSlot as unknown as MsgHdrs }

  constructor(private readonly opts: ForwarderOptions) {
    this.expected = expectStream(opts.stream)
    this.dedupWindowMs = opts.dedupWindowMs ?? DEFAULT_DEDUP_WINDOW_MS
    this.resendWindowMs = this.dedupWindowMs
    this.window = new AckWindow<Inflight>(opts.log)
    this.laneWindow = { maxInflight: opts.maxInflight, minBacklog: opts.liveLaneMinBacklog }
    const headerMode = opts.uplinkHeaders ?? 'full'
    this.subjects = new UplinkSubjects(opts.subjectPrefix, opts.partitions ?? 0)
    this.logger = opts.className === undefined ? opts.logger : withClass(opts.logger, opts.className)
    this.paced = opts.pacer !== undefined && (opts.paced ?? true)
    this.uplink = {
      className: opts.className,
      gatewayId: opts.gatewayId,
      stream: opts.stream,
      subjectPrefix: opts.subjectPrefix,
      payloads: opts.payloads,
      partitions: opts.partitions ?? 0,
      subjectOf: (topic, clientId) => this.subjectOf(topic, clientId),
      headerMode,
      headerEncoder: new UplinkHeaderEncoder(opts.gatewayId, opts.stream, headerMode, opts.className),
    }
    opts.metrics.forwardInflight.collect(() => this.unacked)
    opts.metrics.forwardConnected.collect(() => (this.connected ? 1 : 0))
    opts.priority?.attach({
      pending: () => this.hasUntaken(),
      takenUpTo: () => this.opts.reader.position - 1,
      settledUpTo: () => this.opts.log.acked,
    })
  }

  /**
   * For the priority gate: records this forwarder has not taken yet, i.e. durable records beyond
   * its main reader, or rewound records still to be sent again. False once stopped.
   */
  private hasUntaken(): boolean {
    if (!this.running || this.closing) return false
    return this.opts.log.durableSeq >= this.opts.reader.position || this.recovering || this.resendQueue !== undefined
  }

  /** Starts connecting (forever, with backoff) and forwarding. Returns at once: the gateway buffers meanwhile. */
  start(): void {
    if (this.running || this.closing) return
    this.running = true
    this.timer = setInterval(() => this.tick(), 250)
    this.timer.unref()
    this.loop = this.runForever()
  }

  /** run(), started again after an unexpected error (a bug must not stop forwarding for good). */
  private async runForever(): Promise<void> {
    while (this.running) {
      try {
        await this.run()
        // run() returns while running only when the ring log failed: forwarding stops for good.
        if (this.running) this.fail(this.opts.log.failure ?? new LogIoError('the ring log failed'))
        return
      } catch (err) {
        this.logger.error('forwarding failed on an unexpected error; starting again (messages stay in the log)', { error: err })
        this.connected = false
        const nc = this.nc
        this.nc = undefined
        if (nc && !nc.isClosed()) await nc.close().catch(() => {})
        await this.sleep(this.nextBackoff())
      }
    }
  }

  /**
   * Connects, forwards until the connection closes, and connects again, for as long as it runs.
   * The connection is made with nats.js's own reconnection off: a publish made while the socket
   * was already dead would sit in nats.js's buffer and go out on the next connection ahead of the
   * older records lost with the old one. With a connection per session, such a publish fails (or
   * dies with its connection) and the recovery resends everything unacknowledged in seq order.
   */
  private async run(): Promise<void> {
    const logger = this.logger
    let sessions = 0
    while (this.running) {
      const nc = await this.connectOnce()
      if (!nc) return
      if (sessions++ > 0) {
        this.opts.metrics.forwardReconnects.inc()
        logger.info('reconnected to NATS', { server: nc.getServer() })
      } else {
        logger.info('connected to NATS', { server: nc.getServer() })
      }
      this.nc = nc
      this.connected = true
      // The other classes' forwarders (same servers) stop waiting out their backoff: upstream is back.
      this.opts.onConnected?.()
      this.streamReady = false
      this.resumeAt = 0
      this.linkRttMs = 0
      // Anything in flight may have been lost with the last connection: resend it (same msg ids),
      // in order, before anything new.
      if (this.unacked > 0) this.enterRecovery('reconnect')
      let open = true
      const closed = nc.closed().then((err) => {
        open = false
        this.connected = false
        if (this.running) logger.warn('disconnected from NATS; buffering in the log', err ? { error: err } : {})
        this.wake()
      })
      this.sub = nc.subscribe(`${this.inbox}.*`, { callback: (err, msg) => (err ? undefined : this.onReply(msg)) })
      while (this.running && open) {
        if (this.opts.log.failure) {
          logger.error('ring log failed; forwarding stops')
          return
        }
        try {
          await this.step(nc)
        } catch (err) {
          // A read error (EIO, EMFILE, ...) must not end forwarding: log, back off, try again.
          logger.error('forwarding step failed; retrying', { error: err })
          await this.sleep(this.nextBackoff())
        }
      }
      if (!this.running) return // close() drains or closes the connection
      await closed
      this.sub = undefined
      await this.sleep(this.nextBackoff())
    }
  }

  /** One connection attempt after another (with backoff) until one succeeds or the forwarder stops. */
  private connectOnce(): Promise<NatsConnection | undefined> {
    // After leaving a server that stopped answering: the others first (in random order), it last.
    const order = this.hungServer === undefined ? undefined : serversAvoiding(this.opts.servers, this.hungServer)
    this.hungServer = undefined
    return connectWithBackoff({
      servers: order ?? this.opts.servers,
      options: { ...this.opts.connectOptions, name: this.opts.className === undefined ? `ferry-${this.opts.gatewayId}` : `ferry-${this.opts.gatewayId}.${this.opts.className}`, reconnect: false, pingInterval: 10_000, maxPingOut: 3, timeout: 5000, ...(order ? { noRandomize: true } : {}) },
      backoff: this.backoff,
      pause: this.pause,
      running: () => this.running,
      onError: (err, backoff) => {
        if (backoff.current === 0 || backoff.atMax) {
          this.logger.warn('NATS not reachable; buffering in the log and retrying', { servers: this.opts.servers, error: err })
        }
      },
    })
  }

  /**
   * Timeout of each request of the stream check: the PubAck timeout, within [1 s, 5 s], or three
   * round trips of this connection's last PING when that is longer (a slow link, at most 20 s).
   */
  private get checkTimeoutMs(): number {
    const base = Math.max(1000, Math.min(STREAM_CHECK_TIMEOUT_MS, this.opts.ackTimeoutMs))
    return Math.max(base, Math.min(SLOW_LINK_CHECK_TIMEOUT_MS, 3 * this.linkRttMs))
  }

  /**
   * After a failed stream check that began at `since`: true when the server answers a PING within
   * HUNG_PING_TIMEOUT_MS (its round trip sets linkRttMs) or answered anything since `since` (a PING
   * may wait behind megabytes still on their way over a slow link).
   */
  private async answersPing(nc: NatsConnection, since: number): Promise<boolean> {
    if (nc.isClosed()) return false
    let rtt: number | undefined
    const answered = await settlesWithin(
      nc.rtt().then((ms) => (rtt = ms)),
      HUNG_PING_TIMEOUT_MS,
    )
    if (answered && rtt !== undefined) {
      this.linkRttMs = rtt
      return true
    }
    return !nc.isClosed() && this.lastReplyAt >= since
  }

  /** One pass of the forwarding loop: wait for what blocks progress, or publish the next records. */
  private async step(nc: NatsConnection): Promise<void> {
    const logger = this.logger
    if (!this.connected) {
      await this.sleep(200)
      return
    }
    if (!this.streamReady) {
      const checkStart = performance.now()
      try {
        const settings = { replicas: this.opts.streamReplicas ?? 1, dedupWindowMs: this.dedupWindowMs }
        // No longer than a PubAck may take (at least 1 s; longer on a link measured slow): after a stream leader died, the API
        // answers once a new one is elected, and a short timeout asks again sooner.
        const timeoutMs = this.checkTimeoutMs
        const check = await ensureStream(nc, this.opts.stream, this.opts.subjectPrefix, logger, { settings, warned: this.streamWarned, timeoutMs, partitions: this.opts.partitions ?? 0 })
        this.eventsCaptured = check.eventsCaptured
        this.resendWindowMs = Math.min(this.dedupWindowMs, check.dedupWindowMs)
        this.streamReady = true
        this.streamProblem = ''
        this.backoff.reset()
      } catch (err) {
        this.lastProblem = `stream not ready: ${(err as Error).message}`
        // No answer in time (a frozen server, a stream leader being elected) says nothing about the
        // stream: /readyz judges that by the stall rule (degraded, failing after --ready-stall-ms).
        // An answer that refuses (missing JetStream, a stream that cannot be used) fails it at once.
        this.streamProblem = (err as Error).name === 'TimeoutError' ? '' : `stream "${this.opts.stream}" not ready: ${(err as Error).message}`
        logger.error('JetStream stream not ready; buffering in the log and retrying', { stream: this.opts.stream, error: err })
        // A server that hangs (stopped process, a link that silently stopped delivering) keeps the
        // socket open: nats.js would notice only after its pings go unanswered (30 s). A PING
        // unanswered within 5 s, with nothing else answered since the check began, ends this
        // connection now, and the next one goes to any --nats-url that answers (a cluster's other
        // nodes). JetStream busy electing a leader answers PINGs, and a slow link answers late
        // (its round trip then lengthens the next check): those connections are kept.
        if (!(await this.answersPing(nc, checkStart))) {
          logger.warn('NATS server does not answer a PING; closing the connection to connect to another server', { server: nc.getServer(), timeoutMs: HUNG_PING_TIMEOUT_MS })
          this.hungServer = nc.getServer()
          await nc.close().catch(() => {})
          return
        }
        await this.sleep(this.nextBackoff())
        return
      }
    }
    if (performance.now() < this.resumeAt) {
      await this.sleep(this.resumeAt - performance.now())
      return
    }
    // A more important class has records it has not taken: take nothing new, resend nothing (priority.ts).
    const gate = this.opts.priority
    if (gate && !gate.mayTake()) {
      await Promise.race([gate.whenMayTake(), this.sleep(GATE_RECHECK_MS)])
      this.wake() // clears the timer when the gate opened first
      return
    }
    if (this.recovering) {
      await this.stepRecovery()
      return
    }
    if (this.resendQueue) {
      await this.stepResend()
      return
    }
    this.maybeStartLiveLane()
    if (this.live) await this.stepLiveLane()
    // The main lane leaves a share of the window to the live lane while one is open.
    const cap = mainLaneCap(this.laneWindow, this.live !== undefined)
    const room = cap - this.unacked
    if (room <= 0 || this.inflightBytes >= this.opts.maxInflightBytes) {
      await this.sleep(this.live ? 5 : 1000)
      return
    }
    let maxRecords = Math.min(room, READ_CHUNK_RECORDS)
    let maxBytes = this.opts.maxInflightBytes - this.inflightBytes
    if (this.paced && this.opts.log.durableSeq >= this.opts.reader.position) {
      // Backlog to send: only as much as the --drain-max-rate bucket holds (pacer.ts).
      const a = this.opts.pacer!.allowance()
      if (a.messages === 0) {
        await this.paceWait()
        return
      }
      maxRecords = Math.min(maxRecords, a.messages)
      maxBytes = Math.min(maxBytes, a.bytes)
    }
    // maxBytes counts record bytes (at least the payload's): the bucket is debited with payload bytes below.
    let recs = await this.opts.reader.read(maxRecords, maxBytes)
    // A segment evicted or reclaimed since the reader returned was counted by the log from the read
    // position it knew: its records are not taken (the reader drops those it saw go; this closes the rest).
    const head = this.opts.log.headSeq
    if (recs.length > 0 && recs[0]!.seq < head) recs = recs.filter((r) => r.seq >= head)
    this.opts.log.noteReadPosition(this.opts.reader.position)
    // Read up to the durable end: the less important classes may take records again.
    this.opts.priority?.notify()
    if (recs.length === 0) {
      this.absorbLive(this.opts.reader.position)
      // Nothing in flight: the cursor passes the records the reader skipped (evicted, damaged).
      if (this.window.readerAt(this.opts.reader.position)) this.opts.priority?.notify()
      // Yield to I/O first, so that even a wait that resolves at once cannot starve the process.
      await new Promise((r) => setImmediate(r))
      await Promise.race([this.opts.log.waitForData(this.opts.reader.position - 1), this.sleep(1000)])
      this.wake() // clears the 1 s timer when data came first (no timer left behind per empty read)
      return
    }
    const evictedUpTo = this.opts.log.acked
    let sentRecords = 0
    let sentBytes = 0
    for (const r of recs) {
      // A record at or below the ack position was not forwarded: its segment was evicted (discard
      // "old") while this read was under way, and the eviction counted it as dropped. So it is.
      if (r.seq <= evictedUpTo) continue
      // Entries the live lane sent up to here join the window in seq order; this one too, if sent.
      if (this.live && this.absorbLive(r.seq + 1) === r.seq) continue
      // A failure while this chunk goes out: the rest joins the window unsent, to follow the
      // recovery in order.
      const sent = this.publishNew(r.seq, r.epoch, r.ts, r.body, false, !this.recovering)
      if (sent >= 0) {
        sentRecords++
        sentBytes += sent
      }
    }
    this.opts.pacer?.debit(sentRecords, sentBytes, this.paced)
    this.absorbLive(this.opts.reader.position)
    if (performance.now() >= this.expiredLogAt) this.logExpired()
    if (this.live && this.opts.reader.position >= this.live.reader.position) await this.closeLiveLane()
    // Let ingress (PUBACKs) and PubAcks in between chunks.
    await new Promise((r) => setImmediate(r))
  }

  /** Waits for the pacer's tokens (counted in ferry_forward_drain_paced_seconds_total), or until woken. */
  private async paceWait(): Promise<void> {
    const start = performance.now()
    // An open live lane is served between slices of the wait: live records never wait for the pacer.
    const ms = this.opts.pacer!.waitMs()
    await this.sleep(this.live ? Math.min(ms, LIVE_LANE_PACE_SLICE_MS) : ms)
    this.opts.metrics.forwardDrainPaced?.inc((performance.now() - start) / 1000)
  }

  /**
   * Enters recovery after a refusal, a PubAck timeout or a reconnect: every unacknowledged record
   * is rewound, so that it is sent again in order after the probe (see the header).
   */
  private enterRecovery(cause: 'refused' | 'timeout' | 'reconnect'): void {
    if (!this.recovering) {
      this.recovering = true
      this.opts.metrics.forwardRecoveries.inc(1, { cause })
    }
    for (const f of this.pendingEntries()) if (!f.parked) f.sentAt = 0
    this.probe = undefined
    this.resendQueue = undefined // resent after the next probe, from the first rewound record
    this.wake()
  }

  /** One step of recovery: send the probe alone, wait for it, then resend the rest in order and resume. */
  private async stepRecovery(): Promise<void> {
    const probe = this.probe
    if (probe?.done) {
      // Stored (or dead-lettered): the rest goes again in seq order (stepResend), then new records follow.
      this.probe = undefined
      this.recovering = false
      this.resendQueue = [...this.pendingEntries()]
      this.resendAt = 0
      this.resent = 0
      await this.stepResend()
      return
    }
    if (probe?.parked) {
      await this.sleep(50) // being dead-lettered: done once the file has it
      return
    }
    if (!probe || probe.sentAt === 0) {
      // A probe that expired instead of being sent proves nothing about upstream: the next
      // unacknowledged record is the probe (send() completes an expired record at once).
      for (;;) {
        const head = this.pendingEntries().next()
        if (head.done) {
          this.probe = undefined
          this.recovering = false // everything was acknowledged (or expired) meanwhile
          return
        }
        this.probe = head.value
        if (head.value.parked) return
        // The probe is never paced (it tells whether upstream is back), but counts towards the cap.
        this.opts.pacer?.debit(1, head.value.data.length)
        this.send(head.value)
        if (!head.value.done) break
      }
      this.opts.metrics.forwardRetries.inc()
    }
    const p = this.probe
    if (!p || p.done || p.sentAt === 0) return // answered at once (dead-lettered, or refused: after the backoff)
    const waited = performance.now() - p.sentAt
    if (waited >= this.opts.ackTimeoutMs) {
      // No answer at all: the stream may be gone while something else listens on its subjects
      // (no "no responders" then). Check it through the JetStream API before the next probe.
      this.streamReady = false
      this.lastProblem = `no PubAck within ${this.opts.ackTimeoutMs} ms`
      p.sentAt = 0
      this.resumeAt = performance.now() + this.nextBackoff()
      return
    }
    await this.sleep(Math.min(this.opts.ackTimeoutMs - waited, 250))
  }

  /**
   * Sends again, in seq order, the records rewound by the recovery, after its probe was stored: all
   * at once, or when paced (--drain-max-rate: they are backlog) as many as the bucket holds per step.
   */
  private async stepResend(): Promise<void> {
    const q = this.resendQueue!
    const pacer = this.opts.pacer
    let most = Infinity
    let mostBytes = Infinity
    if (this.paced) {
      const a = pacer!.allowance()
      if (a.messages === 0) {
        await this.paceWait()
        return
      }
      most = a.messages
      mostBytes = a.bytes
    }
    let n = 0
    let bytes = 0
    while (this.resendAt < q.length && n < most && (n === 0 || bytes < mostBytes)) {
      const f = q[this.resendAt++]!
      if (f.sentAt !== 0 || f.parked || f.done) continue
      const size = f.data.length
      this.send(f)
      if (this.recovering) break // the connection went, or a refusal came back at once: recover again (enterRecovery cleared the queue)
      if (f.sentAt !== 0) {
        n++
        bytes += size
      }
    }
    if (n > 0) {
      this.opts.metrics.forwardRetries.inc(n)
      pacer?.debit(n, bytes, this.paced)
      this.resent += n
    }
    if (this.recovering) return
    if (this.resendAt < q.length) {
      await new Promise((r) => setImmediate(r))
      return
    }
    this.resendQueue = undefined
    this.logger.info('forwarding resumed: the earliest unacknowledged record was stored, the rest sent again in order', { resent: this.resent })
    this.opts.priority?.notify()
  }

  /** Starts collecting the backlog's topics when the main reader is far behind (runs beside the main lane). */
  private maybeStartLiveLane(): void {
    if (this.live || this.liveScan || performance.now() < this.liveRetryAt) return
    const from = this.opts.reader.position
    const split = this.opts.log.durableSeq
    if (!laneWanted(this.laneWindow, from, split)) return
    this.liveScan = this.scanBacklog(from, split)
      .then((hold) => {
        if (!hold || !this.running || this.opts.reader.position > split) {
          this.liveRetryAt = Math.max(this.liveRetryAt, performance.now() + LIVE_LANE_RETRY_MS.stale)
          return
        }
        // Records the main lane read meanwhile (or before the scan) and has not got stored yet:
        // they may be sent again after a failure, so nothing of theirs may overtake them either.
        for (const f of this.window.queued()) if (!f.done && !f.undecodable) hold.hold(f.topic, f.clientId, f.topic === '')
        this.live = { reader: this.opts.openReader(split + 1), schedule: new LaneSchedule(hold, liveLaneMaxAgeMs(this.resendWindowMs)) }
        this.logger.info('live lane open: new messages on topics without backlog are forwarded ahead of the backlog', {
          backlog: split - this.opts.reader.position + 1,
          backlogTopics: hold.size,
          split,
        })
      })
      .catch((err: unknown) => {
        this.liveRetryAt = performance.now() + LIVE_LANE_RETRY_MS.scanFailed
        this.logger.warn('live lane scan failed; the backlog drains in order', { error: err })
      })
      .finally(() => (this.liveScan = undefined))
  }

  /** The topics and devices of records in (from .. split], or undefined when there are too many. */
  private async scanBacklog(from: number, split: number): Promise<LaneHold | undefined> {
    const reader = this.opts.openReader(from)
    const topics = new LaneHold()
    try {
      while (this.running && reader.position <= split) {
        const recs = await reader.read(READ_CHUNK_RECORDS * 4, 1024 * 1024)
        if (recs.length === 0) break
        for (const r of recs) {
          if (r.seq > split) break
          try {
            const e = decodeEntry(r.body)
            topics.hold(e.topic, e.clientId, isEventTopic(e.topic))
          } catch {
            // undecodable: the main lane dead-letters it
          }
        }
        if (topics.size > LIVE_LANE_MAX_TOPICS) {
          this.liveRetryAt = performance.now() + LIVE_LANE_RETRY_MS.tooManyTopics
          return undefined
        }
        await new Promise((r) => setImmediate(r))
      }
      return topics
    } finally {
      await reader.close()
    }
  }

  /** Forwards what the live lane may send now: new records whose topic has no backlog. */
  private async stepLiveLane(): Promise<void> {
    const live = this.live!
    // The lane's own share of the window, never the main lane's.
    let laneUnacked = 0
    for (const f of this.window.laneEntries()) if (!f.done) laneUnacked++
    const room = laneRoom(this.laneWindow, laneUnacked, this.unacked)
    const oldest = this.window.laneEntries().next()
    if (room <= 0 || this.inflightBytes >= this.opts.maxInflightBytes || !live.schedule.mayRead(this.window.laneSize, oldest.done ? undefined : oldest.value.ts, Date.now())) return
    const recs = await live.reader.read(Math.min(room, READ_CHUNK_RECORDS), this.opts.maxInflightBytes - this.inflightBytes)
    if (!live.schedule.noteRead(recs.length)) {
      // Every new record belongs to a backlog topic: the lane only costs reads. Try again later.
      this.liveRetryAt = performance.now() + LIVE_LANE_RETRY_MS.idle
      await this.closeLiveLane()
      return
    }
    for (const r of recs) {
      if (r.seq < this.opts.reader.position) continue // the main lane has it already
      let e: { topic: string; clientId: string }
      try {
        e = decodeEntry(r.body)
      } catch {
        continue // the main lane dead-letters it
      }
      // A record left to the main reader holds its topic and device from now on (LaneHold).
      const decision = live.schedule.decide(e.topic, e.clientId, isEventTopic(e.topic))
      if (decision === 'leave') continue
      if (decision === 'overflow') {
        this.liveRetryAt = performance.now() + LIVE_LANE_RETRY_MS.tooManyTopics
        await this.closeLiveLane()
        return
      }
      // Recovery may have begun during the read: then it waits unsent, and the resume sends it in order.
      const sent = this.publishNew(r.seq, r.epoch, r.ts, r.body, true, !this.recovering)
      // Live traffic never waits for --drain-max-rate, but counts towards it (the backlog yields).
      if (sent >= 0) this.opts.pacer?.debit(1, sent)
    }
  }

  /**
   * Moves live-lane entries with seq < `upTo` into the main window, in seq order (ack-window.ts).
   * Returns the seq of the last entry moved, or -1.
   */
  private absorbLive(upTo: number): number {
    const before = this.window.acked
    const last = this.window.absorb(upTo)
    if (this.window.acked !== before) {
      this.backoff.reset()
      this.opts.priority?.notify()
    }
    return last
  }

  private async closeLiveLane(): Promise<void> {
    const live = this.live
    if (!live) return
    // Entries may join the window only in seq order, i.e. once the main reader is past them.
    this.absorbLive(this.opts.reader.position)
    if (this.window.laneSize > 0) return
    this.live = undefined
    await live.reader.close()
    this.logger.info('live lane closed', { published: live.schedule.published, read: live.schedule.read })
  }

  /**
   * Takes record `seq` into the window (main lane, or the live lane ahead of it) and sends it unless
   * `sendNow` is false. Returns the payload bytes published, or -1 when it was not published now.
   */
  private publishNew(seq: number, epoch: number, ts: number, body: Buffer, lane: boolean, sendNow: boolean): number {
    let subject = ''
    let data: Uint8Array = body
    let undecodable = ''
    let headers: Uint8Array = EMPTY
    let dropEvent = false
    let topic = ''
    let clientId = ''
    let expiresAtMs = Infinity
    try {
      const e = decodeEntry(body)
      const m = uplinkMessage(e, epoch, seq, this.uplink)
      if (m.omittedProperties > 0) this.opts.metrics.forwardPropertiesOmitted.inc(m.omittedProperties)
      expiresAtMs = e.properties?.expiresAtMs ?? Infinity
      clientId = e.clientId
      if (!m.isEvent) topic = e.topic
      dropEvent = m.isEvent && !this.eventsCaptured
      subject = m.subject
      data = m.data
      headers = m.headers
    } catch (err) {
      undecodable = `undecodable log entry: ${(err as Error).message}`
    }
    const f: Inflight = { seq, epoch, ts, body, subject, data, headers, sentAt: 0, firstSentAt: 0, attempts: 0, rejections: 0, done: false, stored: false, parked: false, lastError: undecodable, undecodable: undecodable !== '', topic, clientId, expiresAtMs }
    if (lane) this.window.addLane(f)
    else this.window.add(f)
    this.bySeq.set(seq, f)
    this.inflightBytes += data.length
    this.unacked++
    if (dropEvent) {
      this.opts.metrics.drops.inc(1, { reason: 'events_not_captured' })
      this.complete(f)
    } else if (sendNow) {
      const bytes = f.data.length
      this.send(f)
      if (f.sentAt !== 0) return bytes
    }
    return -1
  }

  /** The subject of `topic` from `clientId`, memoised per topic and, with partitions, per client (bounded). */
  private subjectOf(topic: string, clientId: string): string {
    return this.subjects.of(topic, clientId)
  }

  private send(f: Inflight): void {
    if (f.expiresAtMs !== Infinity && f.expiresAtMs <= Date.now()) {
      this.expire(f)
      return
    }
    f.sentAt = performance.now()
    f.attempts++
    if (f.undecodable) {
      f.rejections = this.opts.maxAttempts - 1
      this.reject(f, f.lastError || 'undecodable log entry', true)
      return
    }
    const nc = this.nc
    if (!nc || nc.isClosed()) {
      // The connection is gone: the next one resends it, in order (recovery).
      f.sentAt = 0
      if (!this.recovering) this.enterRecovery('reconnect')
      return
    }
    try {
      // The reply subject names the attempt, so an answer to an older send can be told apart.
      const o = this.publishOptions
      o.reply = replySubject(this.inbox, f.seq, f.attempts)
      this.headerSlot.bytes = f.headers
      nc.publish(f.subject, f.data, o)
      this.headerSlot.bytes = EMPTY
      // The duplicate window counts from when JetStream stored an earlier send, at or after the first one.
      if (f.firstSentAt === 0) f.firstSentAt = f.sentAt
      else if (f.sentAt - f.firstSentAt > this.resendWindowMs) this.noteLateResend(f)
    } catch (err) {
      if ((err as Error).name !== 'InvalidArgumentError') {
        // Not about the message (closed, draining, ...): it goes again after the recovery, in order.
        f.sentAt = 0
        if (!this.recovering) this.enterRecovery(nc.isClosed() ? 'reconnect' : 'refused')
        return
      }
      // Refused for the message itself (larger than the server's max_payload): never succeeds.
      f.rejections = this.opts.maxAttempts - 1
      this.reject(f, `publish refused: ${(err as Error).message}`, true)
    }
  }

  /** Upstream state for /readyz: connected, last PubAck time (ms, 0 = none), last problem ('' = none), failed stream check, the PubAck timeout. */
  get health(): { connected: boolean; lastAckAtMs: number; problem: string; streamProblem: string; ackTimeoutMs: number } {
    return { connected: this.connected, lastAckAtMs: this.lastAckAtMs, problem: this.lastProblem, streamProblem: this.streamProblem, ackTimeoutMs: this.opts.ackTimeoutMs }
  }

  private onReply(msg: Msg): void {
    this.lastReplyAt = performance.now()
    const subject = msg.subject
    const f = this.bySeq.get(replySeq(this.inbox, subject))
    if (!f || f.done) return
    const data = msg.data
    const status = msg.headers?.code ?? 0
    if (status >= 400 || data.length === 0) {
      if (parseReplySubject(this.inbox, subject).attempt !== f.attempts) return // answers an older send; the newer one is under way
      // 503: no responders (no stream captures the subject, or JetStream unavailable).
      this.streamReady = status !== 503
      this.reject(f, `status ${status} ${msg.headers?.description ?? ''}`.trim(), false)
      return
    }
    const ack = classifyPubAck(data, this.expected)
    if (ack.kind === 'error') {
      if (parseReplySubject(this.inbox, subject).attempt !== f.attempts) return
      // Not stored in our stream: check it through the JetStream API (gone? replaced?) before the next probe.
      if (ack.wrongStream) this.streamReady = false
      this.reject(f, ack.reason, ack.permanent)
      return
    }
    if (ack.kind === 'duplicate') this.opts.metrics.forwardDuplicates.inc()
    else if (f.attempts > 1) this.checkOvertaken(f)
    this.lastAckAtMs = Date.now()
    this.lastProblem = ''
    // A late answer to an older send of a record rewound since (sentAt 0) has no send time to measure.
    if (f.sentAt > 0) this.opts.metrics.forwardAckLatency.observe((performance.now() - f.sentAt) / 1000)
    this.opts.metrics.forwarded.inc()
    f.stored = true
    this.complete(f)
  }

  /**
   * A record stored only on a resend: if a later record of its topic or device was stored already,
   * JetStream holds them out of order (it refused or lost this one and stored the later one, which
   * was in flight). Counted and logged; it cannot be undone.
   */
  private checkOvertaken(f: Inflight): void {
    // Usually nothing after the head is stored yet: no scan (the window may hold 65,536 entries).
    if (this.window.doneAhead === 0 || this.window.inLane(f)) return
    let after = false
    let overtaken: Inflight | undefined
    for (const g of this.window.queued()) {
      if (g === f) {
        after = true
        continue
      }
      if (after && g.stored && (g.clientId === f.clientId || (f.topic !== '' && g.topic === f.topic))) {
        overtaken = g
        break
      }
    }
    if (!overtaken) return
    this.opts.metrics.forwardReordered.inc()
    const now = performance.now()
    if (now >= this.reorderWarnAt) {
      this.reorderWarnAt = now + 10_000
      this.logger.warn('JetStream stored a record after a later one of its topic or device (it refused or lost the earlier one while storing the later one in flight)', {
        seq: f.seq,
        storedBefore: overtaken.seq,
        clientId: f.clientId,
        reason: f.lastError,
      })
    }
  }

  /** A failed publish: permanent rejections count towards dead-lettering; everything is retried with backoff. */
  private reject(f: Inflight, reason: string, permanent: boolean): void {
    f.lastError = reason
    this.lastProblem = reason
    if (permanent && ++f.rejections >= this.opts.maxAttempts) {
      this.deadLetter(f, reason)
      return
    }
    f.sentAt = 0 // sent again by the recovery, in order
    if (!this.recovering) this.enterRecovery('refused')
    else if (f === this.probe) this.probe = undefined // probe again after the backoff
    // One backoff step per failure episode, not per rejected message of the window.
    if (performance.now() < this.resumeAt) return
    const delay = this.nextBackoff()
    this.resumeAt = performance.now() + delay
    if (this.backoff.current === BACKOFF_MIN_MS * 2 || this.backoff.atMax) {
      this.logger.warn('JetStream publish failed; retrying with backoff', { seq: f.seq, reason, backoffMs: Math.round(delay) })
    }
  }

  /**
   * Writes a dead letter (off the event loop) and completes the entry once the file has it. When
   * the file cannot be written (e.g. ENOSPC) the message stays in line and is tried again.
   */
  private deadLetter(f: Inflight, reason: string): void {
    f.parked = true
    this.opts.deadLetters.write({ seq: f.seq, epoch: f.epoch, ts: f.ts, body: f.body, reason, ...(this.opts.className === undefined ? {} : { className: this.opts.className }) }).then(
      () => {
        f.parked = false
        if (f.done) return // an older send was stored meanwhile: not a drop
        this.opts.metrics.drops.inc(1, { reason: 'dead_letter' })
        this.logger.error('message dead-lettered: JetStream rejects it permanently', { seq: f.seq, reason })
        this.complete(f)
      },
      (err: unknown) => {
        f.parked = false
        this.logger.error('cannot write the dead-letter file; the message stays in the log and is retried', { seq: f.seq, error: err })
        f.sentAt = 0
        if (!this.recovering) this.enterRecovery('refused')
        else if (f === this.probe) this.probe = undefined
        if (performance.now() >= this.resumeAt) this.resumeAt = performance.now() + this.nextBackoff()
      },
    )
  }

  /** A record whose expiry passed before it was sent: dropped, counted, logged with its seq (ranges). */
  private expire(f: Inflight): void {
    this.opts.metrics.drops.inc(1, { reason: 'expired' })
    this.expired.add(f.seq)
    this.complete(f) // logged after the chunk (step) or by the timer (tick): one line for many
  }

  /**
   * A resend (same Nats-Msg-Id) of a record first sent longer than the duplicate window ago: if an
   * earlier send was stored and only its PubAck was lost, JetStream no longer remembers the id and
   * stores it again. Counted per resend (an upper bound of such duplicates) and logged as seq ranges.
   */
  private noteLateResend(f: Inflight): void {
    this.opts.metrics.forwardResendsOutsideDedupWindow.inc()
    this.lateResends.add(f.seq)
    if (performance.now() >= this.lateResendLogAt) this.logLateResends()
  }

  private logLateResends(): void {
    if (this.lateResends.empty) return
    this.lateResendLogAt = performance.now() + LATE_RESEND_LOG_MS
    const { records, seqs } = this.lateResends.take()
    this.logger.warn('messages resent after the stream\'s duplicate window (--dedup-window) since their first send: JetStream may store them twice if an earlier send was stored', {
      records,
      seqs,
      dedupWindowMs: this.resendWindowMs,
    })
  }

  private logExpired(): void {
    if (this.expired.empty) return
    this.expiredLogAt = performance.now() + EXPIRED_LOG_MS
    const { records, seqs } = this.expired.take()
    this.logger.warn('messages expired before they were forwarded; dropped (MQTT 5 Message Expiry Interval or --ttl)', { records, seqs })
  }

  private complete(f: Inflight): void {
    if (f.done) return
    this.bySeq.delete(f.seq)
    this.inflightBytes -= f.data.length
    this.unacked--
    // Done entries are never sent again: drop the payload (its view would pin a 1 MiB read chunk).
    f.body = EMPTY
    f.data = EMPTY
    // Marks it done; a contiguous run of done records at the head acks the log.
    if (this.window.complete(f)) {
      this.backoff.reset()
      // Less important classes waiting for this one's records to settle (priority.ts).
      this.opts.priority?.notify()
    }
    if (this.unacked < this.opts.maxInflight) this.wake()
  }

  /** Every unacknowledged entry of both lanes, main window first (seq order within each). */
  private pendingEntries(): Generator<Inflight> {
    return this.window.pending()
  }

  /** Notices records without PubAck for `ackTimeoutMs`: recovery resends them, in order. */
  private tick(): void {
    if (performance.now() >= this.expiredLogAt) this.logExpired()
    if (performance.now() >= this.lateResendLogAt) this.logLateResends()
    if (!this.connected || !this.nc || this.recovering) return
    const now = performance.now()
    for (const f of this.pendingEntries()) {
      if (f.sentAt !== 0 && !f.parked && now - f.sentAt >= this.opts.ackTimeoutMs) {
        this.lastProblem = `no PubAck within ${this.opts.ackTimeoutMs} ms`
        // The stream may be gone while something else listens on its subjects (no "no
        // responders" then): check it through the JetStream API before the probe.
        this.streamReady = false
        this.logger.warn('JetStream did not acknowledge in time; resending from the earliest unacknowledged record', { seq: f.seq, ackTimeoutMs: this.opts.ackTimeoutMs })
        this.enterRecovery('timeout')
        return
      }
    }
  }

  private nextBackoff(): number {
    return this.backoff.next()
  }

  private sleep(ms: number): Promise<void> {
    return this.pause.sleep(ms)
  }

  private wake(): void {
    this.pause.wake()
  }

  /**
   * Another forwarder of this gateway just connected to the same servers: while not connected, end
   * the backoff wait now and try again (a class does not wait out its own backoff after an outage).
   */
  upstreamBack(): void {
    if (!this.connected && this.running) this.wake()
  }

  /** Messages published and not yet acknowledged. */
  get inflight(): number {
    return this.unacked
  }

  get isConnected(): boolean {
    return this.connected
  }

  /** Forwarding stopped on its own: closes (the loop has returned) and reports `err` through closed(). */
  private fail(err: Error): void {
    this.failure = err
    void this.close(deadlineIn(FAIL_CLOSE_MS))
  }

  /**
   * Stops reading the log, waits until `deadline` for in-flight PubAcks (acking the log as they
   * come), then drains the NATS connection. Idempotent: every call resolves when the first is done.
   */
  close(deadline: Deadline): Promise<void> {
    this.closing ??= this.shutdown(deadline)
    return this.closing
  }

  /** Settles once the forwarder stopped: undefined after close(), the error when the ring log failed under it. */
  closed(): Promise<Error | undefined> {
    return this.stopped.promise
  }

  private async shutdown(deadline: Deadline): Promise<void> {
    this.running = false
    // Stopped: holds no less important class back any more (priority.ts).
    this.opts.priority?.detach()
    this.wake()
    // Records waiting for the recovery are not sent now (that could put them ahead of a refused
    // one): the next start sends them, in order.
    while (this.unacked > 0 && this.connected && performance.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20))
    }
    if (this.unacked > 0) {
      this.logger.warn('closing with messages still unacknowledged; they are resent at next start', { messages: this.unacked })
      // Records of a segment evicted under discard "old" were kept in the window (not counted as
      // dropped then); those still unacknowledged are gone with this process: count them now.
      // A segment reclaimed because all its records expired is the same case, counted as expired.
      const dropped = { discard_old: 0, expired: 0 }
      for (const f of this.pendingEntries()) {
        const why = f.seq <= this.opts.log.acked ? this.opts.log.uncountedDropReason(f.seq) : undefined
        if (why) dropped[why]++
      }
      for (const reason of ['discard_old', 'expired'] as const) {
        if (dropped[reason] === 0) continue
        this.opts.metrics.drops.inc(dropped[reason], { reason })
        this.logger.warn(`records of ${reason === 'expired' ? 'an expired' : 'an evicted'} segment were not acknowledged before the stop; counted as dropped (${reason === 'expired' ? 'expired' : 'discard "old"'})`, { records: dropped[reason] })
      }
    }
    if (this.timer) clearInterval(this.timer)
    this.logExpired()
    this.logLateResends()
    // Never wait past the deadline: the loop may be in a first connect() to a server that does not
    // answer, or in a stream check; drain() may hang on a stalled server.
    const loopDone = await settlesWithin(this.loop ?? Promise.resolve(), remainingMs(deadline))
    const nc = this.nc
    if (nc && !nc.isClosed()) {
      this.sub?.unsubscribe()
      await drainWithin(nc, Math.min(remainingMs(deadline), 2000))
    }
    if (loopDone) {
      await this.opts.reader.close()
      await this.live?.reader.close()
    }
    this.stopped.resolve(this.failure)
  }

  async [Symbol.asyncDispose](): Promise<void> {
    await this.close(deadlineIn(5000))
  }
}
