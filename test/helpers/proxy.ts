// A TCP proxy on 127.0.0.1 in front of a server (nats-server), for fault tests: cut every
// connection, add latency, black-hole and heal. Point Ferry at `proxy.url` with --nats-url.
//
// - cut(): destroys both sockets of every open connection at once; new connections are accepted as
//   before. What was still queued in the proxy under latency is dropped, as packets in a router's
//   queue are when its link fails: the client sent it, the server never sees it. Each direction is
//   a FIFO, so what reached the server from a cut connection is a prefix of what was sent on it.
//   `cut({ inflight: 'deliver' })` instead closes the client side at once and lets the queued tail
//   reach the server on schedule before closing that side too.
// - cutWhen(pred): the same, the moment a chunk from a client satisfies `pred`: a cut placed by the
//   traffic rather than by the clock (say, in the middle of a client's catch-up burst).
// - setLatency(maxMs): every chunk read from either side waits a random 0..maxMs ms before it is
//   written on; order within a connection and direction is kept (a chunk never overtakes the one
//   before it), so this delays but never reorders.
// - blackhole(): the proxy stops reading from both sides of every connection (open and new ones;
//   new ones are accepted but not yet connected upstream). Nothing is lost: the kernel buffers fill
//   and the senders see TCP backpressure, as on a path that silently stops delivering. heal()
//   resumes reading and delivers what was held, in order.
import net from 'node:net'

export interface CutOptions {
  /** What happens to client data still queued under latency: dropped (default) or delivered to the server on schedule. */
  readonly inflight?: 'drop' | 'deliver'
  /** cutWhen() only: cut anyway after this long. Default 10 s. */
  readonly timeoutMs?: number
}

/** A connection as cutWhen() predicates see it. */
export interface ConnectionInfo {
  /** 1 for the first connection accepted, then 2, … */
  readonly id: number
  /** Bytes received from the client so far, this chunk included. */
  readonly bytesUp: number
}

export interface TcpProxy {
  /** The port the proxy listens on (chosen by the kernel). */
  readonly port: number
  /** `nats://127.0.0.1:<port>`. */
  readonly url: string
  /** Number of cut() calls that found at least one connection to cut. */
  cuts(): number
  /** Connections destroyed by cut(), in total. */
  connectionsCut(): number
  /** Connections accepted so far. */
  accepted(): number
  /** Connections open now (not counting cut ones still delivering their tail to the server). */
  open(): number
  /** Destroys both sides of every open connection; returns how many were cut. */
  cut(opts?: CutOptions): number
  /**
   * Cuts (as cut()) the moment a chunk from a client satisfies `pred` (or after `opts.timeoutMs`);
   * resolves with the number of connections cut. One cutWhen() at a time.
   */
  cutWhen(pred: (chunk: Buffer, conn: ConnectionInfo) => boolean, opts?: CutOptions): Promise<number>
  /** Random 0..maxMs ms per chunk from now on (0 = none). */
  setLatency(maxMs: number): void
  /** Stops forwarding in both directions, holding the data (see the file header). */
  blackhole(): void
  /** Forwards again, held data first. */
  heal(): void
  /** Stops listening and destroys every connection. Idempotent. */
  close(): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

interface Queue {
  readonly items: { at: number; chunk: Buffer }[]
  timer: NodeJS.Timeout | undefined
  /** Delivery time of the last chunk queued: the next one is never due before it. */
  lastAt: number
}

interface Pipe {
  readonly client: net.Socket
  upstream: net.Socket | undefined
  /** Chunks waiting for their delivery time, one queue per direction. */
  readonly toUpstream: Queue
  readonly toClient: Queue
  /** open; draining: cut, the client side gone, the tail still going to the server; dead. */
  state: 'open' | 'draining' | 'dead'
  readonly id: number
  /** Bytes received from the client so far. */
  bytesUp: number
}

const newQueue = (): Queue => ({ items: [], timer: undefined, lastAt: 0 })

function clear(q: Queue): void {
  if (q.timer) clearTimeout(q.timer)
  q.timer = undefined
  q.items.length = 0
}

/** Starts a proxy to `targetPort` on 127.0.0.1 (e.g. a nats-server's). */
export async function startProxy(targetPort: number, targetHost = '127.0.0.1'): Promise<TcpProxy> {
  /** Every pipe not yet dead (open and draining). */
  const pipes = new Set<Pipe>()
  let latencyMs = 0
  let holding = false
  let cuts = 0
  let connectionsCut = 0
  let accepted = 0
  let closed = false
  /** Set by cutWhen(): checked on every client chunk; true when it fired. */
  let armed: ((chunk: Buffer, p: Pipe) => boolean) | undefined

  const kill = (p: Pipe): void => {
    if (p.state === 'dead') return
    p.state = 'dead'
    pipes.delete(p)
    clear(p.toUpstream)
    clear(p.toClient)
    p.client.destroy()
    p.upstream?.destroy()
  }

  const upstreamOf = (p: Pipe): net.Socket | undefined => (p.upstream?.connecting === false ? p.upstream : undefined)

  /** Writes the chunks that are due, in order, and schedules the next. */
  const pump = (p: Pipe, q: Queue, to: () => net.Socket | undefined): void => {
    if (q.timer || p.state === 'dead' || holding) return
    const now = Date.now()
    while (q.items.length > 0 && q.items[0]!.at <= now) {
      const sock = to()
      if (!sock) return
      sock.write(q.items.shift()!.chunk)
    }
    const head = q.items[0]
    if (head) {
      q.timer = setTimeout(() => {
        q.timer = undefined
        pump(p, q, to)
      }, head.at - now)
    } else if (p.state === 'draining' && q === p.toUpstream) {
      kill(p) // the cut connection's tail reached the server
    }
  }

  const enqueue = (p: Pipe, q: Queue, chunk: Buffer, to: () => net.Socket | undefined): void => {
    if (p.state !== 'open') return
    const at = Math.max(q.lastAt, Date.now() + (latencyMs > 0 ? Math.floor(Math.random() * (latencyMs + 1)) : 0))
    q.lastAt = at
    q.items.push({ at, chunk })
    pump(p, q, to)
  }

  const connectUpstream = (p: Pipe): void => {
    const up = net.connect(targetPort, targetHost)
    p.upstream = up
    up.setNoDelay(true)
    up.on('error', () => kill(p))
    up.on('close', () => kill(p))
    up.on('data', (chunk: Buffer) => enqueue(p, p.toClient, chunk, () => p.client))
    up.on('connect', () => pump(p, p.toUpstream, () => upstreamOf(p)))
    if (holding) up.pause()
  }

  const cutOne = (p: Pipe, opts: CutOptions): void => {
    if (opts.inflight !== 'deliver' || p.toUpstream.items.length === 0 || !upstreamOf(p)) {
      kill(p)
      return
    }
    // The client goes now; the server gets the tail on schedule, then the close (pump kills it).
    p.state = 'draining'
    clear(p.toClient)
    p.client.destroy()
  }

  const server = net.createServer((client) => {
    accepted++
    client.setNoDelay(true)
    const p: Pipe = { client, upstream: undefined, toUpstream: newQueue(), toClient: newQueue(), state: 'open', id: accepted, bytesUp: 0 }
    pipes.add(p)
    client.on('error', () => (p.state === 'open' ? kill(p) : undefined))
    client.on('close', () => (p.state === 'open' ? kill(p) : undefined))
    client.on('data', (chunk: Buffer) => {
      p.bytesUp += chunk.length
      enqueue(p, p.toUpstream, chunk, () => upstreamOf(p))
      if (armed?.(chunk, p)) armed = undefined
    })
    if (holding) client.pause()
    else connectUpstream(p)
  })
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject)
    server.listen(0, '127.0.0.1', () => resolve())
  })
  const port = (server.address() as net.AddressInfo).port
  const openPipes = (): Pipe[] => [...pipes].filter((p) => p.state === 'open')

  const close = async (): Promise<void> => {
    if (closed) return
    closed = true
    armed = undefined
    for (const p of [...pipes]) kill(p)
    await new Promise<void>((resolve) => server.close(() => resolve()))
  }

  const cut = (opts: CutOptions = {}): number => {
    const open = openPipes()
    for (const p of open) cutOne(p, opts)
    if (open.length > 0) cuts++
    connectionsCut += open.length
    return open.length
  }

  return {
    port,
    url: `nats://127.0.0.1:${port}`,
    cuts: () => cuts,
    connectionsCut: () => connectionsCut,
    accepted: () => accepted,
    open: () => openPipes().length,
    cut,
    cutWhen(pred, opts = {}) {
      return new Promise<number>((resolve) => {
        const timer = setTimeout(() => {
          armed = undefined
          resolve(cut(opts))
        }, opts.timeoutMs ?? 10_000)
        armed = (chunk, p) => {
          if (p.state !== 'open' || !pred(chunk, { id: p.id, bytesUp: p.bytesUp })) return false
          clearTimeout(timer)
          resolve(cut(opts))
          return true
        }
      })
    },
    setLatency(maxMs) {
      latencyMs = Math.max(0, maxMs)
    },
    blackhole() {
      holding = true
      for (const p of pipes) {
        p.client.pause()
        p.upstream?.pause()
        for (const q of [p.toUpstream, p.toClient]) {
          if (q.timer) clearTimeout(q.timer)
          q.timer = undefined
        }
      }
    },
    heal() {
      if (!holding) return
      holding = false
      for (const p of [...pipes]) {
        if (!p.upstream) connectUpstream(p)
        else pump(p, p.toUpstream, () => upstreamOf(p))
        pump(p, p.toClient, () => p.client)
        p.client.resume()
        p.upstream?.resume()
      }
    },
    close,
    [Symbol.asyncDispose]: close,
  }
}
