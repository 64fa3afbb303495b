// The HTTP endpoint: /metrics in Prometheus text format, /healthz for liveness, /readyz for
// readiness (see src/health/), and JSON routes the gateway adds (/devices).
//
// Bounded like every listener: at most `maxConnections` sockets (more are closed at once, so idle
// HTTP connections cannot use up the process's file descriptors), a request must arrive whole
// within REQUEST_TIMEOUT_MS and an idle socket is closed after IDLE_TIMEOUT_MS. The Host header must
// name this endpoint: `localhost`, an IP address (a DNS-rebinding page always uses a name), the
// --http-listen host, or a name in `allowedHosts`; anything else is answered 421.
import http from 'node:http'
import { isIP } from 'node:net'
import type { AddressInfo } from 'node:net'
import { FerryError } from '../errors.js'
import { ClosedSignal } from '../lifecycle.js'
import type { Component, Deadline } from '../lifecycle.js'
import type { Logger } from '../logger.js'
import type { Registry } from './registry.js'

export interface MetricsServerOptions {
  readonly host: string
  /** 0 picks a free port. */
  readonly port: number
  readonly registry: Registry
  readonly logger: Logger
  /** More GET routes answering JSON, by path. */
  readonly json?: Readonly<Record<string, () => unknown>>
  /** Most open connections; more are closed at once. Default {@link DEFAULT_HTTP_MAX_CONNECTIONS}. */
  readonly maxConnections?: number
  /** Host header names accepted besides localhost, IP addresses and `host` (lower case, no port). */
  readonly allowedHosts?: readonly string[]
  /** Serve the status page on `/`. */
  readonly statusPage?: string
  /** /readyz: HTTP 503 when `status` is "failing", else 200; the body is the JSON of the whole value. */
  readonly readiness?: () => { status: string }
}

/** Default cap on open HTTP connections. */
export const DEFAULT_HTTP_MAX_CONNECTIONS = 32
/** A request's headers and body must arrive within this long, milliseconds. */
const REQUEST_TIMEOUT_MS = 10_000
/** A socket without traffic (before a request, or kept alive after one) is closed after this long, milliseconds. */
const IDLE_TIMEOUT_MS = 10_000

/** The host name of a Host header value, lower case, without port and IPv6 brackets; '' when there is none. */
export function hostName(header: string | undefined): string {
  if (!header) return ''
  const h = header.trim().toLowerCase()
  if (h.startsWith('[')) return h.slice(1, h.indexOf(']') < 0 ? undefined : h.indexOf(']'))
  const colon = h.indexOf(':')
  return colon >= 0 && h.indexOf(':', colon + 1) < 0 ? h.slice(0, colon) : h
}

/** Whether a request with this Host header is for this endpoint (see the file header). A missing header (HTTP/1.0) passes. */
export function hostAllowed(header: string | undefined, bindHost: string, allowed: readonly string[]): boolean {
  const name = hostName(header)
  if (header === undefined) return true
  return name === 'localhost' || isIP(name) !== 0 || name === bindHost.toLowerCase() || allowed.includes(name)
}

/** A small HTTP server; `close()` is idempotent. */
export class MetricsServer implements Component {
  private closing: Promise<void> | undefined
  private readonly stopped = new ClosedSignal()

  private constructor(private readonly server: http.Server) {}

  static async start(opts: MetricsServerOptions): Promise<MetricsServer> {
    const allowed = (opts.allowedHosts ?? []).map((h) => h.trim().toLowerCase()).filter((h) => h !== '')
    let refusedHost = false
    const server = http.createServer({ requestTimeout: REQUEST_TIMEOUT_MS, headersTimeout: REQUEST_TIMEOUT_MS, connectionsCheckingInterval: 1000 }, (req, res) => {
      const url = (req.url ?? '/').split('?')[0] ?? '/'
      if (!hostAllowed(req.headers.host, opts.host, allowed)) {
        if (!refusedHost) {
          refusedHost = true // once: a rebinding page may ask many times
          opts.logger.warn('HTTP request for another host refused (421); add the name to --http-allowed-hosts if it is this gateway', { host: String(req.headers.host).slice(0, 100) })
        }
        res.writeHead(421, { 'content-type': 'text/plain', connection: 'close' }).end('misdirected request: unknown Host\n')
      } else if (req.method !== 'GET' && req.method !== 'HEAD') {
        res.writeHead(405, { allow: 'GET, HEAD' }).end()
      } else if (url === '/metrics') {
        res.writeHead(200, { 'content-type': 'text/plain; version=0.0.4; charset=utf-8' }).end(opts.registry.render())
      } else if (url === '/healthz') {
        res.writeHead(200, { 'content-type': 'text/plain' }).end('ok\n')
      } else if (url === '/' && opts.statusPage) {
        res.writeHead(200, { 'content-type': 'text/html; charset=utf-8', 'cache-control': 'no-store' }).end(opts.statusPage)
      } else if (url === '/readyz' && opts.readiness) {
        const r = opts.readiness()
        res.writeHead(r.status === 'failing' ? 503 : 200, { 'content-type': 'application/json' }).end(JSON.stringify(r, null, 2) + '\n')
      } else if (opts.json && Object.hasOwn(opts.json, url)) {
        res.writeHead(200, { 'content-type': 'application/json' }).end(JSON.stringify(opts.json[url]!()) + '\n')
      } else {
        res.writeHead(404, { 'content-type': 'text/plain' }).end(`not found: try ${['/metrics', '/healthz', ...(opts.readiness ? ['/readyz'] : []), ...Object.keys(opts.json ?? {})].join(', ')}\n`)
      }
    })
    server.keepAliveTimeout = 5000
    server.maxConnections = opts.maxConnections ?? DEFAULT_HTTP_MAX_CONNECTIONS
    server.timeout = IDLE_TIMEOUT_MS // idle sockets, also those that never send a request
    await new Promise<void>((resolve, reject) => {
      server.once('error', (err) =>
        reject(new FerryError('FERRY_ERR_HTTP_LISTEN', `cannot listen for HTTP on ${opts.host}:${opts.port}: ${err.message}`, { cause: err })),
      )
      server.listen(opts.port, opts.host, () => resolve())
    })
    server.on('error', (err) => opts.logger.error('HTTP listener error', { error: err }))
    return new MetricsServer(server)
  }

  get address(): { host: string; port: number } {
    const a = this.server.address() as AddressInfo
    return { host: a.address, port: a.port }
  }

  /**
   * Stops listening and closes every connection at once (a scrape in progress is cut: nothing is
   * lost), so the deadline is not needed. Idempotent.
   */
  close(_deadline?: Deadline): Promise<void> {
    this.closing ??= (async () => {
      this.server.closeAllConnections()
      await new Promise<void>((resolve) => this.server.close(() => resolve()))
      this.stopped.resolve()
    })()
    return this.closing
  }

  /** Settles after close(); an error on the listening socket is logged and does not stop it. */
  closed(): Promise<Error | undefined> {
    return this.stopped.promise
  }
}
