// Requests from devices to cloud services: a device publish on the request topic
// (`requests/{device}/{service}/{method}` by default, --request-topic) becomes a core NATS request on
// `<prefix>.svc.<service>.<method>` with a `Ferry-Device` header (the authenticated identity; Ferry-Client: the client id), and
// the answer goes back to the device at QoS 1. Nothing of it is stored: not in the ring log, not in
// a session beyond the answer's own delivery.
//
// - MQTT 5 device: publishes with Response Topic and Correlation Data; the answer goes to the
//   Response Topic with the same Correlation Data and a User Property `Ferry-Status`.
// - MQTT 3.1.1 device: adds a correlation id as the last topic level; the answer goes to
//   `devices/<id>/requests/reply/<correlationId>/<status code>` (3 digits).
// In both, the payload is the service's answer for a 2xx status, else the status line
// (`503 no responders`) in UTF-8. See README "Requests from devices".
//
// Invariant: every request accepted here is answered exactly once (or, when its answer cannot be
// addressed, counted and logged); its pending slot is held from acceptance to the NATS answer.
import type { Msg, NatsConnection } from '@nats-io/transport-node'
import { errors as natsErrors, headers as natsHeaders } from '@nats-io/transport-node'
import { escapeHeaderValue } from '../codec/index.js'
import { ConfigError } from '../errors.js'
import type { MqttClientRef } from '../ingress/index.js'
import type { DeliveryProperties, DeviceDelivery } from './delivery.js'
import type { Logger } from '../logger.js'

/** Where a 3.1.1 device gets its answers: `devices/<id>/requests/reply/<correlationId>/<status code>`. */
export function replyTopic(clientId: string, correlationId: string, code: number): string {
  return `devices/${clientId}/requests/reply/${correlationId}/${code}`
}

/** What requests read of a PUBLISH's MQTT 5 properties (a structural subset of the seam's PublishProperties). */
export interface RequestProperties {
  readonly responseTopic?: string
  readonly correlationData?: Buffer
  readonly contentType?: string
}

/** The metrics requests update (satisfied by the gateway's catalogue). */
export interface RequestMetrics {
  /** ferry_device_requests_total, by result */
  readonly requests: { inc(n: number, labels: Readonly<Record<'result', string>>): void }
  /** ferry_device_requests_pending */
  readonly requestsPending: { collect(fn: () => number): void }
}

export interface RequestOptions {
  readonly subjectPrefix: string
  /** Request topic template with `{device}`, `{service}` and `{method}` as whole levels, after a literal first level. */
  readonly topicTemplate: string
  /** How long Ferry waits for the service, ms. */
  readonly timeoutMs: number
  /** Requests waiting for services at once, all devices together. */
  readonly maxPending: number
  /** Requests one device may have waiting at once. */
  readonly maxPendingPerDevice: number
  readonly deliver: DeviceDelivery
  /**
   * The identity the client proved at CONNECT (--auth-file username, client certificate name);
   * undefined for an anonymous client, whose client id is then all Ferry knows of it.
   */
  readonly identityOf?: (client: MqttClientRef) => string | undefined
  /** The ACL: may this client receive on this topic. */
  readonly mayReceive: (client: MqttClientRef, topic: string) => boolean
  readonly logger: Logger
  readonly metrics: RequestMetrics
}

/** A service or method level: one NATS subject token Ferry writes as it is. */
const TOKEN = /^[A-Za-z0-9_-]+$/
/** How long the answer's delivery waits for the device's PUBACK, ms (the answer is then withdrawn). */
const ANSWER_DELIVERY_MS = 30_000
/** At most one log line per this long about requests that cannot be answered. */
const UNANSWERABLE_LOG_INTERVAL_MS = 10_000

interface ParsedTemplate {
  /** The levels before `{device}` with their slash (`requests/`). */
  readonly prefix: string
  /** The template levels after `{device}`: '{service}', '{method}' or literals. */
  readonly after: readonly string[]
}

/** Checks and splits a request topic template; throws a ConfigError with the reason when it cannot be used. */
export function parseRequestTemplate(template: string): ParsedTemplate {
  const levels = template.split('/')
  const at = levels.indexOf('{device}')
  for (const p of ['{device}', '{service}', '{method}']) {
    if (levels.filter((l) => l === p).length !== 1) throw new ConfigError([`'downlink.requestTopic' (--request-topic) must hold ${p} once as a whole level, got ${JSON.stringify(template)}`])
  }
  if (at < 1 || levels.slice(0, at).some((l) => l === '' || l.includes('{') || l === '+' || l === '#')) {
    throw new ConfigError([`'downlink.requestTopic' (--request-topic) must start with literal levels before {device}, got ${JSON.stringify(template)}`])
  }
  const after = levels.slice(at + 1)
  if (after.some((l) => l === '' || l === '+' || l === '#' || (l.includes('{') && l !== '{service}' && l !== '{method}'))) {
    throw new ConfigError([`'downlink.requestTopic' (--request-topic) levels after {device} must be {service}, {method} or literal, got ${JSON.stringify(template)}`])
  }
  return { prefix: levels.slice(0, at).join('/') + '/', after }
}

/** A request topic split: the device it names, service, method, and the 3.1.1 correlation id. */
export interface RequestTopic {
  readonly device: string
  readonly service: string
  readonly method: string
  readonly correlationId?: string
}

/**
 * Reads `topic` against the template. `withCorrelation`: a last level holds the correlation id
 * (3.1.1). The device is whatever stands between the prefix and the levels after it, `/` included.
 * Undefined when the topic is not a request: not under the template's prefix, or, for a template
 * with literal levels after {device} (`devices/{device}/req/{service}/{method}`), not holding them,
 * so that a device's other publishes under the same prefix stay data. 'malformed' when it is a
 * request that does not fit: under a prefix of requests only (no literal after {device}), or a
 * 3.1.1 request without its correlation id level.
 */
export function parseRequestTopic(t: ParsedTemplate, topic: string, withCorrelation: boolean): RequestTopic | 'malformed' | undefined {
  if (!topic.startsWith(t.prefix)) return undefined
  const levels = topic.slice(t.prefix.length).split('/')
  const fitted = fit(t, levels, withCorrelation)
  if (fitted !== undefined) return fitted
  const literalAfterDevice = t.after.some((l) => l !== '{service}' && l !== '{method}')
  if (!literalAfterDevice) return 'malformed'
  return withCorrelation && fit(t, levels, false) !== undefined ? 'malformed' : undefined
}

/** The request `levels` (after the prefix) name, 'malformed' for an empty device or correlation id; undefined when they do not have the template's shape. */
function fit(t: ParsedTemplate, levels: readonly string[], withCorrelation: boolean): RequestTopic | 'malformed' | undefined {
  const tail = t.after.length + (withCorrelation ? 1 : 0)
  if (levels.length < tail + 1) return undefined
  const device = levels.slice(0, levels.length - tail).join('/')
  const rest = levels.slice(levels.length - tail)
  let service = ''
  let method = ''
  for (const [i, l] of t.after.entries()) {
    const v = rest[i]!
    if (l === '{service}') service = v
    else if (l === '{method}') method = v
    else if (l !== v) return undefined
  }
  const correlationId = withCorrelation ? rest[rest.length - 1] : undefined
  if (device === '' || correlationId === '') return 'malformed'
  return { device, service, method, ...(correlationId !== undefined ? { correlationId } : {}) }
}

/** Where and how a request is answered. */
interface Answer {
  readonly clientId: string
  /** v5: the Response Topic; 3.1.1: undefined (replyTopic with the status code). */
  readonly responseTopic?: string
  readonly correlationData?: Buffer
  readonly correlationId?: string
}

export class Requests {
  private readonly template: ParsedTemplate
  private nc: NatsConnection | undefined
  /** Set by the downlink from its connection's state. */
  upstreamUp = false
  private pendingTotal = 0
  private readonly pendingByDevice = new Map<string, number>()
  /** Answers being delivered (sent, not yet acknowledged nor given up), by device. */
  private readonly answering = new Map<string, number>()
  private closed = false
  private unanswerableLoggedAt = -Infinity
  private unanswerableSince = 0

  constructor(private readonly opts: RequestOptions) {
    this.template = parseRequestTemplate(opts.topicTemplate)
    opts.metrics.requestsPending.collect(() => this.pendingTotal)
  }

  /** Uses this connection for requests (the downlink's). */
  attach(nc: NatsConnection): void {
    this.nc = nc
    this.upstreamUp = true
  }

  /** Requests waiting for services now. */
  get pending(): number {
    return this.pendingTotal
  }

  /**
   * Takes a device publish if it is on the request topic (see Ingress.intercept): the request is
   * made and the publish acknowledged at once, not stored. Undefined for any other topic.
   * `properties` are the PUBLISH's MQTT 5 properties (absent for 3.1.1).
   */
  intercept(client: MqttClientRef, topic: string, payload: Buffer, properties?: RequestProperties): Promise<void> | undefined {
    const v5 = properties?.responseTopic !== undefined
    const parsed = parseRequestTopic(this.template, topic, !v5)
    if (parsed === undefined) return undefined
    const { metrics } = this.opts
    // Every accepted request is answered, and an answer is held up to ANSWER_DELIVERY_MS until the
    // device acknowledges it: a device that does not acknowledge its answers gets no more (the
    // answers in flight, with their packet identifiers, stay bounded).
    const answerLimit = 2 * this.opts.maxPendingPerDevice
    if ((this.answering.get(client.id) ?? 0) >= answerLimit) {
      metrics.requests.inc(1, { result: 'busy' })
      this.unanswerable(client.id, topic, `${answerLimit} answers to the device are not yet acknowledged`)
      return Promise.resolve()
    }
    if (parsed === 'malformed') {
      metrics.requests.inc(1, { result: 'bad_request' })
      this.unanswerable(client.id, topic, v5 ? 'the topic does not fit --request-topic' : 'the topic does not fit --request-topic with a correlation id as its last level')
      return Promise.resolve()
    }
    const answer: Answer = v5
      ? { clientId: client.id, responseTopic: properties.responseTopic, ...(properties.correlationData ? { correlationData: properties.correlationData } : {}) }
      : { clientId: client.id, correlationId: parsed.correlationId! }
    // The answer must be addressable and allowed before anything is asked.
    const target = answer.responseTopic ?? replyTopic(client.id, parsed.correlationId!, 200)
    if (/[+#]/.test(target) || target.startsWith('$') || target === '') {
      metrics.requests.inc(1, { result: 'bad_request' })
      this.unanswerable(client.id, topic, `response topic ${JSON.stringify(target)} is not a topic Ferry publishes on`)
      return Promise.resolve()
    }
    if (!this.opts.mayReceive(client, target)) {
      metrics.requests.inc(1, { result: 'acl' })
      this.unanswerable(client.id, topic, `the ACL does not let the device receive on ${JSON.stringify(target)}`)
      return Promise.resolve()
    }
    const refuse = (result: string, status: string): Promise<void> => {
      metrics.requests.inc(1, { result })
      this.answer(answer, status)
      return Promise.resolve()
    }
    // The identity is the authenticated client id, never what the topic says.
    if (parsed.device !== client.id) return refuse('forbidden', '403 forbidden: the topic names another device')
    if (!TOKEN.test(parsed.service) || !TOKEN.test(parsed.method)) return refuse('bad_request', '400 bad request: service and method must be letters, digits, "-" or "_"')
    if (this.closed) return refuse('stopping', '503 gateway stopping')
    const nc = this.nc
    if (!nc || !this.upstreamUp || nc.isClosed()) return refuse('upstream_down', '503 upstream unavailable')
    const mine = this.pendingByDevice.get(client.id) ?? 0
    if (mine >= this.opts.maxPendingPerDevice || this.pendingTotal >= this.opts.maxPending) return refuse('busy', '429 too many pending requests')
    this.pendingTotal++
    this.pendingByDevice.set(client.id, mine + 1)
    const h = natsHeaders()
    // Ferry-Device is who the device proved to be, not the client id it chose: a device logged in as
    // alice under the client id "bob" asks as alice. The client id goes beside it, as on the uplink.
    h.set('Ferry-Device', escapeHeaderValue(this.opts.identityOf?.(client) ?? client.id))
    h.set('Ferry-Client', escapeHeaderValue(client.id))
    if (properties?.contentType) h.set('Content-Type', escapeHeaderValue(properties.contentType))
    const subject = `${this.opts.subjectPrefix}.svc.${parsed.service}.${parsed.method}`
    let asked: Promise<Msg>
    try {
      asked = nc.request(subject, payload, { timeout: this.opts.timeoutMs, headers: h })
    } catch (err) {
      // Thrown before anything was sent: a payload over max_payload, a connection closing.
      asked = Promise.reject(err instanceof Error ? err : new Error(String(err)))
    }
    asked.then(
      (m) => this.answered(answer, m),
      (err: unknown) => this.failed(answer, subject, err),
    ).finally(() => this.release(client.id))
    return Promise.resolve()
  }

  private release(clientId: string): void {
    this.pendingTotal--
    const n = (this.pendingByDevice.get(clientId) ?? 1) - 1
    if (n > 0) this.pendingByDevice.set(clientId, n)
    else this.pendingByDevice.delete(clientId)
  }

  private answered(a: Answer, m: Msg): void {
    // A service may set its own status (`404 no such device config`); else 200 OK.
    const own = m.headers?.get('Ferry-Status')
    const status = own && /^[1-5][0-9]{2}( |$)/.test(own) ? own : '200 OK'
    this.opts.metrics.requests.inc(1, { result: 'ok' })
    this.answer(a, status, m.data, m.headers?.get('Content-Type') || undefined)
  }

  private failed(a: Answer, subject: string, err: unknown): void {
    const { metrics, logger } = this.opts
    if (err instanceof natsErrors.RequestError && err.isNoResponders()) {
      metrics.requests.inc(1, { result: 'no_responders' })
      return this.answer(a, '503 no responders')
    }
    if (err instanceof natsErrors.TimeoutError || (err instanceof Error && err.cause instanceof natsErrors.TimeoutError)) {
      metrics.requests.inc(1, { result: 'timeout' })
      return this.answer(a, '504 service did not answer')
    }
    metrics.requests.inc(1, { result: 'upstream_error' })
    logger.info('device request failed upstream', { clientId: a.clientId, subject, error: err })
    this.answer(a, this.closed ? '503 gateway stopping' : '502 upstream error')
  }

  /** Delivers the answer at QoS 1; never throws. */
  private answer(a: Answer, status: string, data?: Uint8Array, contentType?: string): void {
    const code = Number(status.slice(0, 3))
    const ok = code >= 200 && code < 300
    // A copy: the delivery outlives this call, and the NATS message's bytes are a view of its read buffer.
    const payload = ok && data ? Buffer.from(data) : Buffer.from(ok ? '' : status)
    let topic: string
    let props: DeliveryProperties | undefined
    if (a.responseTopic !== undefined) {
      topic = a.responseTopic
      props = {
        ...(a.correlationData ? { correlationData: a.correlationData } : {}),
        ...(ok && contentType ? { contentType } : {}),
        userProperties: { 'Ferry-Status': status },
      }
    } else {
      topic = replyTopic(a.clientId, a.correlationId!, code)
    }
    this.answering.set(a.clientId, (this.answering.get(a.clientId) ?? 0) + 1)
    const done = (): void => {
      const n = (this.answering.get(a.clientId) ?? 1) - 1
      if (n > 0) this.answering.set(a.clientId, n)
      else this.answering.delete(a.clientId)
    }
    this.opts.deliver(a.clientId, topic, payload, ANSWER_DELIVERY_MS, undefined, props).then(
      (r) => {
        done()
        // An answer larger than the device accepts (MQTT 5 Maximum Packet Size): the status alone instead.
        if (r === 'too_large' && ok) return this.answer(a, '413 answer larger than the device accepts (its MQTT 5 Maximum Packet Size)')
        if (r !== 'acked') this.opts.logger.debug('device request answer not acknowledged', { clientId: a.clientId, topic, status, result: r })
      },
      (err: unknown) => {
        done()
        this.opts.logger.info('device request answer not sent', { clientId: a.clientId, topic, status, error: err })
      },
    )
  }

  /** A request that cannot be answered (no usable reply address): logged at most once per interval. */
  private unanswerable(clientId: string, topic: string, reason: string): void {
    this.unanswerableSince++
    const now = performance.now()
    if (now - this.unanswerableLoggedAt < UNANSWERABLE_LOG_INTERVAL_MS) return
    this.opts.logger.info('device request refused without an answer', { clientId, topic, reason, dropped: this.unanswerableSince, intervalMs: UNANSWERABLE_LOG_INTERVAL_MS })
    this.unanswerableLoggedAt = now
    this.unanswerableSince = 0
  }

  /** New requests are answered `503 gateway stopping`; requests in flight end with the connection. */
  close(): void {
    this.closed = true
  }
}
