// The HTTP endpoint: /metrics in Prometheus text format, /healthz for liveness, /readyz for
// readiness (see health.ts), and JSON routes the gateway adds (/devices).
import http from 'node:http'
import type { AddressInfo } from 'node:net'
import { FerryError } from '../errors.js'
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
  /** Serve the status page on `/`. */
  readonly statusPage?: string
  /** /readyz: HTTP 503 when `status` is "failing", else 200; the body is the JSON of the whole value. */
  readonly readiness?: () => { status: string }
}

/** A small HTTP server; `close()` is idempotent. */
export class MetricsServer {
  private closed = false

  private constructor(private readonly server: http.Server) {}

  static async start(opts: MetricsServerOptions): Promise<MetricsServer> {
    const server = http.createServer((req, res) => {
      const url = (req.url ?? '/').split('?')[0] ?? '/'
      if (req.method !== 'GET' && req.method !== 'HEAD') {
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

  async close(): Promise<void> {
    if (this.closed) return
    this.closed = true
    this.server.closeAllConnections()
    await new Promise<void>((resolve) => this.server.close(() => resolve()))
  }
}
