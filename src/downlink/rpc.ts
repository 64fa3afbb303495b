// Request-reply with devices: a NATS request on `<prefix>.rpc.<device>.<method>` becomes an MQTT
// publish to `devices/<device>/rpc/request/<correlationId>`; the device's publish on
// `devices/<device>/rpc/response/<correlationId>` becomes the reply.
//
// Routing (a fleet shares one subject prefix): a gateway subscribes `<prefix>.rpc.<deviceToken(id)>.>`
// for each device while that device is connected to it, and unsubscribes when it leaves. So only the
// gateway holding the device answers, and a request to a device connected nowhere (or to a token not
// in canonical form, which names no device) gets NATS's own no-responders status (503) from the
// server at once. One subscription per connected device: their number is bounded by
// --max-connections and shown as ferry_downlink_rpc_subscriptions. A device replaced by a new
// connection of the same id (a takeover here) is subscribed again: aedes ends the old connection
// before the new one's CONNACK, so for that moment its requests get no responders, as between any
// two connections (the unsubscribe waits a microtask and is skipped when Devices reports the new
// connection in the same tick). nats.js sends every open subscription again after a reconnect.
//
// An MQTT 5 device also gets the request with Response Topic (that same response topic) and the
// correlation id as Correlation Data, and may answer as MQTT 5 request/response does.
//
// The device receives an envelope `{"method": ..., "params": ...}`: CBOR by default; JSON when it
// subscribed to `devices/<device>/rpc/request/+/json`, and then requests come on
// `devices/<device>/rpc/request/<correlationId>/json`. `params` is the request payload decoded by
// its Content-Type (CBOR, JSON; other bytes as a byte string, or base64 in JSON; empty as null).
// The device's reply is encoded for the cloud like telemetry (JSON to CBOR) with its Content-Type.
// Every reply carries a `Ferry-Status` header: `200 OK`, `503 device offline` (it left while the
// request was on its way or pending), `503 device moved to gateway <id>` (another gateway of the
// fleet took it over while the request was pending here: answered only at the request's timeout, so
// that the new holder's answer, when the request reached it too, comes first), `429 too many pending requests`, `504 device did not answer`,
// `400 bad request`, `502 response too large` (a response the NATS server's max_payload cannot
// carry). Replies are not stored.
//
// Each request is handled in isolation: whatever goes wrong with one (a malformed subject, params
// that cannot be encoded for the device) answers that request `400 bad request: <reason>` and never
// reaches the NATS client's reader loop, which an exception in a subscription callback would end
// (and with it every RPC and command of every device). The device token must be canonical
// (deviceToken(id)); `%64ev1` does not reach dev1. A request ends with
// its reply: its MQTT delivery is withdrawn then, so a persistent session never gets it later.
import crypto from 'node:crypto'
import { headers as natsHeaders } from '@nats-io/transport-node'
import type { Msg, MsgHdrs, NatsConnection, Subscription } from '@nats-io/transport-node'
import { CONTENT_TYPE_CBOR, CONTENT_TYPE_JSON, canonicalDevice, decodeCbor, deviceToken, encodeCbor, topicMatches } from '../codec/index.js'
import type { PayloadPolicy } from '../codec/index.js'
import type { Devices } from '../ingress/index.js'
import type { Logger } from '../logger.js'
import type { DeviceDelivery } from './delivery.js'
import type { RpcMetrics } from './metrics.js'

export interface RpcOptions {
  readonly subjectPrefix: string
  /** Default and largest time a request waits for the device, ms. */
  readonly timeoutMs: number
  readonly maxPending: number
  readonly devices: Devices
  readonly payloads: PayloadPolicy
  readonly logger: Logger
  readonly metrics: RpcMetrics
}

interface Pending {
  readonly clientId: string
  readonly reply: string
  readonly started: number
  readonly timer: NodeJS.Timeout
  /** Withdraws the request's MQTT delivery once the request has its reply. */
  readonly delivery: AbortController
  /** The gateway that took the device over (cross-gateway takeover): answered only at the timeout. */
  movedTo?: string
}

/** At most one log line per this long about responses for no pending request; the metric counts each. */
const UNKNOWN_LOG_INTERVAL_MS = 10_000
/** At most one log line per this long about device subscriptions the server ended (e.g. a permission). */
const SUB_ERROR_LOG_INTERVAL_MS = 10_000

const RESPONSE_PREFIX = 'devices/'
const RESPONSE_INFIX = '/rpc/response/'

/**
 * The correlation id in `topic` when it is `clientId`'s response topic,
 * `devices/<clientId>/rpc/response/<correlationId>` (further levels ignored); else undefined. The
 * topic is matched against the whole client id, which may hold `/`.
 */
export function responseCorrelation(clientId: string, topic: string): string | undefined {
  // Every device publish passes here: rule out telemetry without allocating.
  const at = RESPONSE_PREFIX.length + clientId.length + RESPONSE_INFIX.length
  if (!topic.startsWith(RESPONSE_PREFIX) || !topic.startsWith(clientId, RESPONSE_PREFIX.length) || !topic.startsWith(RESPONSE_INFIX, at - RESPONSE_INFIX.length)) return undefined
  const end = topic.indexOf('/', at)
  const correlationId = end < 0 ? topic.slice(at) : topic.slice(at, end)
  return correlationId || undefined
}

/**
 * Why Ferry will not publish a reply on `reply`, or undefined: a `$` subject (JetStream, KV and
 * system APIs), Ferry's PubAck inbox `_FERRY.` or its own `<prefix>.` subjects (telemetry, events,
 * commands). Replies go to inboxes; nats.js and the other clients use `_INBOX.` by default.
 */
export function replySubjectProblem(reply: string, subjectPrefix: string): string | undefined {
  if (reply.startsWith('$')) return `reply subject ${JSON.stringify(reply)} is a system or JetStream API subject`
  if (reply === '_FERRY' || reply.startsWith('_FERRY.')) return `reply subject ${JSON.stringify(reply)} is Ferry's PubAck inbox`
  if (reply.startsWith(`${subjectPrefix}.`)) return `reply subject ${JSON.stringify(reply)} is under Ferry's subject prefix`
  return undefined
}

/** Bytes of a NATS header block as nats.js writes it: `NATS/1.0\r\n`, `Key: value\r\n` each, `\r\n`. */
function headerBytes(h: Iterable<[string, string[]]>): number {
  let n = 12
  for (const [k, vs] of h) for (const v of vs) n += Buffer.byteLength(k) + Buffer.byteLength(v) + 4
  return n
}

function decodeParams(data: Uint8Array, contentType: string | undefined): unknown {
  if (data.length === 0) return null
  if (contentType === CONTENT_TYPE_CBOR) return decodeCbor(data)
  if (contentType === CONTENT_TYPE_JSON || contentType === undefined) {
    try {
      return JSON.parse(Buffer.from(data).toString('utf8'))
    } catch {
      if (contentType === CONTENT_TYPE_JSON) throw new Error('payload is not JSON')
    }
  }
  return Buffer.from(data)
}

export class Rpc {
  private nc: NatsConnection | undefined
  private closed = false
  /** The request subscription of each device connected here, by client id. */
  private readonly subs = new Map<string, Subscription>()
  /** Devices whose subscription the server ended with an error (a permission): their requests go unanswered. */
  private readonly refused = new Set<string>()
  /** One PING/PONG at a time after new subscriptions; `flushAgain`: more came while it was out. */
  private flushing = false
  private flushAgain = false
  private readonly pending = new Map<string, Pending>()
  private counter = 0
  private readonly salt = crypto.randomBytes(3).toString('hex')
  /** When the last line about unknown correlation ids was logged, and how many were dropped since. */
  private unknownLoggedAt = -Infinity
  private unknownSince = 0
  /** The same for subscription errors. */
  private subErrorLoggedAt = -Infinity
  private subErrorsSince = 0
  /** Devices.deliver, typed with the MQTT 5 properties a core that speaks v5 takes. */
  private readonly deliver: DeviceDelivery

  constructor(private readonly opts: RpcOptions) {
    this.deliver = opts.devices.deliver.bind(opts.devices)
    opts.metrics.rpcPending.collect(() => this.pending.size)
    opts.metrics.rpcSubscriptions.collect(() => this.subs.size - this.refused.size)
    opts.devices.on('online', (d) => this.follow(d.clientId))
    opts.devices.on('offline', (d) => {
      // Another gateway of the fleet took the device over (the registry's takeover sets takenOverBy).
      const movedTo = d.takenOverBy
      for (const [id, p] of this.pending) {
        if (p.clientId !== d.clientId) continue
        if (movedTo === undefined) {
          // A device that goes away answers nothing: its requests fail now, not at their timeout.
          this.finish(id, '503 device offline', 'offline')
        } else {
          // Both gateways subscribed while the device moved, so the new holder may have this request
          // too, and its answer must win (the requester takes the first reply): no reply before the
          // request's timeout. The stale session's delivery is withdrawn now.
          p.movedTo = movedTo
          p.delivery.abort()
        }
      }
      // When a new connection with the same id emits 'online' right after this 'offline' (same tick:
      // Devices found the old session still registered), it keeps the subscription. aedes usually ends
      // the old connection before the new one's CONNACK: then the device is subscribed again.
      queueMicrotask(() => {
        if (!opts.devices.isOnline(d.clientId)) this.unfollow(d.clientId)
      })
    })
  }

  /** Starts answering on `nc`: subscribes for every device already connected. */
  attach(nc: NatsConnection): void {
    this.nc = nc
    for (const d of this.opts.devices.list()) this.follow(d.clientId)
  }

  /** Subscribes to the device's requests, unless its subscription is open already. */
  private follow(clientId: string): void {
    const nc = this.nc
    if (!nc || this.closed) return
    const open = this.subs.get(clientId)
    if (open && !open.isClosed()) return
    this.refused.delete(clientId)
    // Client ids are at most 255 bytes (ingress), so the subject stays far below the server's
    // max_control_line (4 KiB), which would end the connection.
    const subject = `${this.opts.subjectPrefix}.rpc.${deviceToken(clientId)}.>`
    let sub: Subscription
    try {
      sub = nc.subscribe(subject, { callback: (err, m) => (err ? this.onSubscriptionError(clientId, sub, err) : this.onRequestIsolated(m)) })
    } catch (err) {
      // Only a closed or draining connection refuses: nothing to answer on any more.
      this.lastError = { at: Date.now(), message: `subscribe ${subject}: ${(err as Error).message}` }
      return
    }
    this.subs.set(clientId, sub)
    this.flush()
  }

  private unfollow(clientId: string): void {
    const sub = this.subs.get(clientId)
    this.subs.delete(clientId)
    this.refused.delete(clientId)
    if (sub && !sub.isClosed()) sub.unsubscribe()
  }

  /**
   * A PING after new subscriptions: once its PONG is back, the server has their interest. Coalesced:
   * a thousand devices connecting together cost a few round trips, not a thousand.
   */
  private flush(): void {
    if (this.flushing) {
      this.flushAgain = true
      return
    }
    const nc = this.nc
    if (!nc || nc.isClosed()) return
    this.flushing = true
    // Rejected when the connection drops first; after a reconnect nats.js sends every subscription again.
    nc.flush().catch(() => {}).finally(() => {
      this.flushing = false
      if (this.flushAgain && !this.closed) {
        this.flushAgain = false
        this.flush()
      }
    })
  }

  /**
   * Whether requests can reach every device connected here: attached to a connection that is not
   * closed, and no device's subscription ended with an error (false before attach and after close).
   */
  get subscribed(): boolean {
    return this.nc !== undefined && !this.nc.isClosed() && !this.closed && this.refused.size === 0
  }

  /** The last failure while handling a request or of a subscription, for health. */
  lastError: { readonly at: number; readonly message: string } | undefined

  private onSubscriptionError(clientId: string, sub: Subscription, err: Error): void {
    // nats.js ends the subscription after an error (a permission violation is terminal). Only the
    // device's current subscription counts: an older one may end late.
    if (this.subs.get(clientId) === sub) this.refused.add(clientId)
    const subject = sub.getSubject()
    this.lastError = { at: Date.now(), message: `subscription ${subject}: ${err.message}` }
    this.subErrorsSince++
    const now = performance.now()
    if (now - this.subErrorLoggedAt >= SUB_ERROR_LOG_INTERVAL_MS) {
      this.opts.logger.warn('RPC subscription error: requests to the device go unanswered', { clientId, subject, error: err, errors: this.subErrorsSince, intervalMs: SUB_ERROR_LOG_INTERVAL_MS })
      this.subErrorLoggedAt = now
      this.subErrorsSince = 0
    }
  }

  /** onRequest, with anything it throws answered 400 for that request alone. */
  private onRequestIsolated(m: Msg): void {
    // A requester chooses the reply subject, and Ferry publishes there with its own NATS rights:
    // `$JS.API.STREAM.DELETE.<stream>` would make Ferry delete its stream. Such requests get no answer.
    const refused = m.reply ? replySubjectProblem(m.reply, this.opts.subjectPrefix) : undefined
    if (refused) {
      this.lastError = { at: Date.now(), message: `request on ${m.subject} refused: ${refused}` }
      this.opts.metrics.rpc.inc(1, { result: 'bad_reply_subject' })
      this.opts.logger.debug('RPC request refused', { subject: m.subject, reason: refused })
      return
    }
    try {
      this.onRequest(m)
    } catch (err) {
      const reason = err instanceof Error ? err.message : String(err)
      this.lastError = { at: Date.now(), message: reason }
      this.opts.metrics.rpc.inc(1, { result: 'bad_request' })
      this.opts.logger.debug('RPC request refused', { subject: m.subject, reason })
      if (m.reply) this.respond(m.reply, `400 bad request: ${reason}`)
    }
  }

  private static headers(status: string, contentType?: string): MsgHdrs {
    const h = natsHeaders()
    // The status may hold device-controlled text (a client id with CR/LF): escaped, it cannot break the header block.
    h.set('Ferry-Status', status.replace(/[\x00-\x1f\x7f]/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0')))
    if (contentType) h.set('Content-Type', contentType)
    return h
  }

  /** Sends a reply; never throws (a reply lost with the connection is lost). */
  private respond(reply: string, status: string, data?: Uint8Array, contentType?: string): void {
    try {
      this.nc?.publish(reply, data ?? new Uint8Array(0), { headers: Rpc.headers(status, contentType) })
    } catch (err) {
      this.opts.logger.warn('RPC reply not sent', { status, error: err })
    }
  }

  /** The NATS server's max_payload when a reply with this body and headers would exceed it. */
  private exceeds(data: Uint8Array, status: string, contentType?: string): number | undefined {
    const max = this.nc?.info?.max_payload
    return max !== undefined && data.length + headerBytes(Rpc.headers(status, contentType)) > max ? max : undefined
  }

  private onRequest(m: Msg): void {
    const { devices, metrics } = this.opts
    if (!m.reply) {
      metrics.rpc.inc(1, { result: 'no_reply_subject' })
      return
    }
    const tokens = m.subject.split('.').slice(this.opts.subjectPrefix.split('.').length + 1)
    // Only the subscriptions `<prefix>.rpc.<canonical token>.>` deliver here: the two checks below are a backstop.
    if (tokens.length < 2) {
      metrics.rpc.inc(1, { result: 'bad_request' })
      return this.respond(m.reply, '400 bad request: the subject must be <prefix>.rpc.<device>.<method>')
    }
    const clientId = canonicalDevice(tokens[0]!)
    if (clientId === undefined) {
      metrics.rpc.inc(1, { result: 'bad_request' })
      return this.respond(m.reply, `400 bad request: the device token "${tokens[0]!}" is not in the canonical form (deviceToken of a client id)`)
    }
    const method = tokens.slice(1).join('.')
    // Routed here just before the device left (its unsubscribe had not reached the server yet).
    if (!devices.isOnline(clientId)) {
      metrics.rpc.inc(1, { result: 'offline' })
      return this.respond(m.reply, '503 device offline')
    }
    if (this.pending.size >= this.opts.maxPending) {
      metrics.rpc.inc(1, { result: 'busy' })
      return this.respond(m.reply, '429 too many pending requests')
    }
    let params: unknown
    try {
      params = decodeParams(m.data, m.headers?.get('Content-Type') || undefined)
    } catch (err) {
      metrics.rpc.inc(1, { result: 'bad_request' })
      return this.respond(m.reply, `400 bad request: ${(err as Error).message}`)
    }
    const asked = Number(m.headers?.get('Ferry-Timeout') || this.opts.timeoutMs)
    const timeoutMs = Math.min(this.opts.timeoutMs, Number.isFinite(asked) && asked > 0 ? asked : this.opts.timeoutMs)
    const correlationId = `${this.salt}${(++this.counter).toString(36)}`
    const base = `devices/${clientId}/rpc/request/${correlationId}`
    // Only to a device subscribed to its request topic: a client that took the id without the
    // right to subscribe there (ACL) never sees requests.
    const subs = devices.subscriptions(clientId)
    const json = subs.some((f) => topicMatches(f, `${base}/json`))
    const topic = json ? `${base}/json` : base
    if (!json && !subs.some((f) => topicMatches(f, base))) {
      metrics.rpc.inc(1, { result: 'not_subscribed' })
      return this.respond(m.reply, `503 device not subscribed to devices/${clientId}/rpc/request/+`)
    }
    let payload: Buffer
    try {
      payload = json
        ? Buffer.from(JSON.stringify({ method, params: Buffer.isBuffer(params) ? params.toString('base64') : params }))
        : encodeCbor({ method, params })
    } catch (err) {
      // Nesting deeper than the encoder's stack (RangeError), or a 64-bit integer from CBOR for a JSON device.
      metrics.rpc.inc(1, { result: 'bad_request' })
      return this.respond(m.reply, `400 bad request: params cannot be encoded for the device (${json ? 'JSON' : 'CBOR'}): ${(err as Error).message}`)
    }
    const timer = setTimeout(() => {
      const movedTo = this.pending.get(correlationId)?.movedTo
      if (movedTo === undefined) this.finish(correlationId, '504 device did not answer', 'timeout')
      else this.finish(correlationId, `503 device moved to gateway ${movedTo}`, 'moved')
    }, timeoutMs)
    const delivery = new AbortController()
    this.pending.set(correlationId, { clientId, reply: m.reply, started: performance.now(), timer, delivery })
    // The request goes at QoS 1; its PUBACK means nothing to the caller, the response does. A v5
    // device gets MQTT 5 request/response too: Response Topic (the same response topic, so either way
    // of answering lands here) and the correlation id as Correlation Data.
    const props = { responseTopic: `devices/${clientId}/rpc/response/${correlationId}`, correlationData: Buffer.from(correlationId) }
    this.deliver(clientId, topic, payload, timeoutMs, delivery.signal, props).then((r) => {
      if (r === 'too_large') this.finish(correlationId, '413 request larger than the device accepts (its MQTT 5 Maximum Packet Size)', 'too_large')
    }, (err: unknown) => {
      this.lastError = { at: Date.now(), message: `delivery: ${(err as Error).message}` }
      this.finish(correlationId, `400 bad request: the request could not be sent to the device: ${(err as Error).message}`, 'bad_request')
    })
  }

  private finish(correlationId: string, status: string, result: string, data?: Uint8Array, contentType?: string): void {
    const p = this.pending.get(correlationId)
    if (!p) return
    this.pending.delete(correlationId)
    clearTimeout(p.timer)
    p.delivery.abort()
    const max = data && this.exceeds(data, status, contentType)
    if (data && max) {
      // A body the server would refuse: nats.js throws, and the caller would hear nothing.
      this.opts.logger.info("RPC response larger than the NATS server's max_payload; answered 502", { clientId: p.clientId, bytes: data.length, maxPayload: max })
      this.opts.metrics.rpc.inc(1, { result: 'too_large' })
      return this.respond(p.reply, `502 response too large: ${data.length} bytes, the NATS server's max_payload is ${max}`)
    }
    this.opts.metrics.rpc.inc(1, { result })
    if (result === 'ok') this.opts.metrics.rpcLatency.observe((performance.now() - p.started) / 1000)
    this.respond(p.reply, status, data, contentType)
  }

  /**
   * Takes a device publish if it is an RPC response (see Ingress.intercept): the reply is sent and
   * the publish acknowledged, not stored. Responses for unknown or other devices' requests are
   * dropped and counted.
   */
  intercept(clientId: string, topic: string, payload: Buffer): Promise<void> | undefined {
    const correlationId = responseCorrelation(clientId, topic)
    if (correlationId === undefined) return undefined
    const p = this.pending.get(correlationId)
    if (!p || p.clientId !== clientId) {
      this.opts.metrics.rpc.inc(1, { result: 'unknown_correlation' })
      // A device can send these as fast as it can publish: one line per interval, with the count.
      this.unknownSince++
      const now = performance.now()
      if (now - this.unknownLoggedAt >= UNKNOWN_LOG_INTERVAL_MS) {
        this.opts.logger.info('RPC responses for no pending request (late, or unknown correlation id); dropped', { clientId, topic, dropped: this.unknownSince, intervalMs: UNKNOWN_LOG_INTERVAL_MS })
        this.unknownLoggedAt = now
        this.unknownSince = 0
      }
      return Promise.resolve()
    }
    const enc = this.opts.payloads.encode(topic, payload)
    this.finish(correlationId, '200 OK', 'ok', enc.data, enc.contentType)
    return Promise.resolve()
  }

  close(): void {
    this.closed = true
    for (const id of [...this.subs.keys()]) this.unfollow(id)
    for (const id of [...this.pending.keys()]) this.finish(id, '503 gateway stopping', 'stopping')
  }
}
