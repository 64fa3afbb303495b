// Starts a private 3-node (or n-node) nats-server JetStream cluster on 127.0.0.1: client and route ports
// chosen at random, one store dir per node, for one test file (or one bench run). Nodes can be killed
// with SIGKILL, stopped and started again on the same ports and store, one at a time or all in turn.
import { spawn } from 'node:child_process'
import type { ChildProcess } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import { tempDir } from './log.js'
import { freePort, natsServerPath, waitForPort } from './nats.js'
import { reapAtExit } from './reap.js'

export interface ClusterNode {
  /** server_name, `n1` … `n<size>` (the name JetStream reports as a stream's leader). */
  readonly name: string
  readonly port: number
  readonly url: string
  readonly storeDir: string
  /** The PID of the running process (undefined while stopped). */
  readonly pid: number | undefined
  readonly running: boolean
  /** Ends the process with `sig` (default SIGKILL: a crash) and waits for it to exit. */
  kill(sig?: NodeJS.Signals): Promise<void>
  /** Graceful stop (SIGTERM; SIGKILL after 10 s). */
  stop(): Promise<void>
  /** Starts it again on the same ports and store; resolves when it says "Server is ready". */
  start(): Promise<void>
  /** Sends a signal to the running process (e.g. SIGSTOP/SIGCONT). */
  signal(sig: NodeJS.Signals): void
}

export interface NatsCluster {
  readonly nodes: readonly ClusterNode[]
  /** Every node's URL. */
  readonly urls: readonly string[]
  /** The node named `name`. */
  node(name: string): ClusterNode
  /**
   * Resolves once JetStream answers through every running node (a meta leader is elected and the
   * nodes see each other), or throws after `timeoutMs` (default 30 s).
   */
  waitReady(timeoutMs?: number): Promise<void>
  /** The server name of `stream`'s leader, asked through any running node; undefined while none is elected. */
  streamLeader(stream: string): Promise<string | undefined>
  /**
   * Waits until `stream` has a leader and every replica is current (or `timeoutMs`, default 30 s):
   * after a node came back, before the next one may go.
   */
  waitStreamHealthy(stream: string, timeoutMs?: number): Promise<void>
  /** Restarts every node in turn (graceful stop, start, wait until `streams` are healthy), one at a time. */
  rollingRestart(streams: readonly string[], opts?: { readonly pauseMs?: number }): Promise<void>
  [Symbol.asyncDispose](): Promise<void>
}

export interface ClusterOptions {
  /** Nodes (default 3). */
  readonly size?: number
  /** Appended to node i's config file (0-based), e.g. an `mqtt { port: … }` block. */
  readonly extraConfig?: (i: number) => string
}

/** Starts the cluster and waits until JetStream answers through every node. */
export async function startCluster(opts: ClusterOptions = {}): Promise<NatsCluster> {
  const bin = natsServerPath()
  if (!bin) throw new Error('nats-server is not installed: apt-get update && apt-get install -y nats-server')
  const size = opts.size ?? 3
  const dir = tempDir('ferry-cluster-')
  const ports = await Promise.all(Array.from({ length: size }, () => freePort()))
  const routePorts = await Promise.all(Array.from({ length: size }, () => freePort()))
  const nodes: Node[] = []
  for (let i = 0; i < size; i++) {
    const name = `n${i + 1}`
    const nodeDir = path.join(dir, name)
    fs.mkdirSync(nodeDir, { recursive: true })
    const storeDir = path.join(nodeDir, 'js')
    const routes = routePorts.filter((_, j) => j !== i).map((p) => `nats-route://127.0.0.1:${p}`)
    const conf = path.join(nodeDir, 'nats.conf')
    fs.writeFileSync(
      conf,
      [
        `server_name: ${name}`,
        `listen: 127.0.0.1:${ports[i]}`,
        `jetstream { store_dir: "${storeDir}" }`,
        `cluster { name: ferry-test, listen: 127.0.0.1:${routePorts[i]}, routes: [${routes.join(', ')}] }`,
        opts.extraConfig?.(i) ?? '',
        '',
      ].join('\n'),
    )
    nodes.push(new Node(bin, name, ports[i]!, storeDir, conf))
  }
  const urls = nodes.map((n) => n.url)
  const cluster: NatsCluster = {
    nodes,
    urls,
    node(name) {
      const n = nodes.find((x) => x.name === name)
      if (!n) throw new Error(`no node ${name}`)
      return n
    },
    async waitReady(timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs
      for (const n of nodes.filter((x) => x.running)) {
        for (;;) {
          const ok = await jsAnswers(n.url, n.name).catch(() => false)
          if (ok) break
          if (Date.now() > until) throw new Error(`JetStream does not answer through ${n.name} within ${timeoutMs} ms`)
          await sleep(200)
        }
      }
    },
    async streamLeader(stream) {
      for (const n of nodes.filter((x) => x.running)) {
        const info = await streamInfo(n.url, stream).catch(() => undefined)
        if (info) return info.cluster?.leader || undefined
      }
      return undefined
    },
    async waitStreamHealthy(stream, timeoutMs = 30_000) {
      const until = Date.now() + timeoutMs
      for (;;) {
        for (const n of nodes.filter((x) => x.running)) {
          const info = await streamInfo(n.url, stream).catch(() => undefined)
          const c = info?.cluster
          if (c?.leader && (c.replicas ?? []).every((r) => r.current && !r.offline)) return
          if (info && !info.cluster) return // R1 on a single server: nothing to wait for
        }
        if (Date.now() > until) throw new Error(`stream ${stream} not healthy within ${timeoutMs} ms`)
        await sleep(200)
      }
    },
    async rollingRestart(streams, o = {}) {
      for (const n of nodes) {
        await n.stop()
        if (o.pauseMs) await sleep(o.pauseMs)
        await n.start()
        await cluster.waitReady()
        for (const s of streams) await cluster.waitStreamHealthy(s)
      }
    },
    async [Symbol.asyncDispose]() {
      await Promise.all(nodes.map((n) => n.kill('SIGKILL')))
      fs.rmSync(dir, { recursive: true, force: true })
    },
  }
  try {
    await Promise.all(nodes.map((n) => n.start()))
    await cluster.waitReady()
  } catch (err) {
    await cluster[Symbol.asyncDispose]()
    throw err
  }
  return cluster
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms))

interface StreamClusterInfo {
  readonly cluster?: { readonly leader?: string; readonly replicas?: readonly { readonly name: string; readonly current: boolean; readonly offline?: boolean }[] }
}

async function streamInfo(url: string, stream: string): Promise<StreamClusterInfo> {
  const nc = await connect({ servers: url, reconnect: false, timeout: 2000 })
  try {
    const jsm = await jetstreamManager(nc, { timeout: 2000 })
    return await jsm.streams.info(stream)
  } finally {
    await nc.close()
  }
}

/** JetStream's account API answers through this node, and the node's cluster has a meta leader. */
async function jsAnswers(url: string, _name: string): Promise<boolean> {
  const nc = await connect({ servers: url, reconnect: false, timeout: 2000 })
  try {
    const jsm = await jetstreamManager(nc, { timeout: 2000 })
    await jsm.getAccountInfo()
    return true
  } finally {
    await nc.close()
  }
}

class Node implements ClusterNode {
  private child: ChildProcess | undefined
  readonly url: string

  constructor(
    private readonly bin: string,
    readonly name: string,
    readonly port: number,
    readonly storeDir: string,
    private readonly conf: string,
  ) {
    this.url = `nats://127.0.0.1:${port}`
  }

  get pid(): number | undefined {
    return this.running ? this.child?.pid : undefined
  }

  get running(): boolean {
    return this.child !== undefined && this.child.exitCode === null && this.child.signalCode === null
  }

  async start(): Promise<void> {
    if (this.running) return
    const c = reapAtExit(spawn(this.bin, ['-c', this.conf], { stdio: ['ignore', 'ignore', 'pipe'] }))
    let err = ''
    c.stderr?.on('data', (d: Buffer) => {
      if (err.length < 20_000) err += d.toString()
    })
    this.child = c
    try {
      await waitForPort(this.port, 15_000)
      const until = Date.now() + 15_000
      while (!err.includes('Server is ready')) {
        if (c.exitCode !== null || c.signalCode !== null) throw new Error(`nats-server ${this.name} exited (${c.exitCode ?? c.signalCode})`)
        if (Date.now() > until) throw new Error(`nats-server ${this.name} did not say "Server is ready" within 15 s`)
        await sleep(20)
      }
    } catch (e) {
      c.kill('SIGKILL')
      throw new Error(`${(e as Error).message}\n${err}`)
    }
  }

  async kill(sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    const c = this.child
    if (!c || !this.running) return
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()))
    c.kill('SIGCONT')
    c.kill(sig)
    await exited
  }

  async stop(): Promise<void> {
    const c = this.child
    if (!c || !this.running) return
    const exited = new Promise<void>((resolve) => c.once('exit', () => resolve()))
    c.kill('SIGCONT')
    c.kill('SIGTERM')
    const t = setTimeout(() => c.kill('SIGKILL'), 10_000)
    await exited
    clearTimeout(t)
  }

  signal(sig: NodeJS.Signals): void {
    if (this.running) this.child?.kill(sig)
  }
}
