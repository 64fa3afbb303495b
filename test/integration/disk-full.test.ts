// Disk full (issue 10, test 1): on a small tmpfs, Ferry refuses publishes while the disk is full, keeps
// forwarding, acknowledges again by itself once space returns, never exits, and loses nothing it acknowledged.
//
// The data directory is a tmpfs far smaller than --log-max-bytes, so the disk fills before the log's
// bound. Devices publish QoS 1 one message at a time (window 1) and keep a ledger: a publish counts as
// acknowledged only when its PUBACK arrives; a refused one (connection closed while it waits) is not
// stored, so the ledger is exact. Needs `mount` (root); skipped with a message otherwise.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { jetstreamManager } from '@nats-io/jetstream'
import { connect } from '@nats-io/transport-node'
import mqtt from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { decodeCbor, decodeEntry } from '../../src/codec/index.js'
import { spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { connectClient, endClient } from '../helpers/mqtt.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream, waitForCount } from '../helpers/stream.js'

const MiB = 1024 * 1024
/** Payload padding: records of ~6 KiB fill a 24 MiB tmpfs with ~4,000 publishes. */
const PAD_BYTES = 6000
const DEVICES = 4

/** Why tmpfs cannot be mounted here (not root, no mount), or undefined when it can. */
function mountProblem(): string | undefined {
  const dir = tempDir('ferry-mount-probe-')
  try {
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=1m', 'tmpfs', dir], { stdio: 'pipe' })
    execFileSync('umount', [dir], { stdio: 'pipe' })
    return undefined
  } catch (err) {
    return (err as Error).message.split('\n')[0]
  } finally {
    fs.rmSync(dir, { recursive: true, force: true })
  }
}

const problem = mountProblem()
if (problem) console.warn(`disk-full tests SKIPPED: cannot mount a tmpfs (${problem}). They need root, as in CI.`)

interface Tmpfs {
  /** The gateway's data directory, inside the mount. */
  readonly dataDir: string
  readonly mountPoint: string
  /** Bytes still free for files. */
  free(): number
  [Symbol.asyncDispose](): Promise<void>
}

function mountTmpfs(sizeMiB: number): Tmpfs {
  const mountPoint = tempDir('ferry-diskfull-')
  execFileSync('mount', ['-t', 'tmpfs', '-o', `size=${sizeMiB}m`, 'tmpfs', mountPoint], { stdio: 'pipe' })
  const dataDir = path.join(mountPoint, 'data')
  return {
    dataDir,
    mountPoint,
    free: () => {
      const s = fs.statfsSync(mountPoint)
      return s.bavail * s.bsize
    },
    async [Symbol.asyncDispose]() {
      try {
        execFileSync('umount', [mountPoint], { stdio: 'pipe' })
      } catch {
        execFileSync('umount', ['-l', mountPoint], { stdio: 'pipe' }) // still busy: detach it
      }
      fs.rmSync(mountPoint, { recursive: true, force: true })
    },
  }
}

/**
 * A disk whose writes fail with EIO once 8 MiB have been written back: ext4 on a loop device whose
 * sparse 64 MiB backing file sits on an 8 MiB tmpfs. The file system still reports free space, so a
 * failure is an I/O error, never ENOSPC. Undefined (with the reason logged) when loop devices or
 * mkfs.ext4 are unavailable.
 */
function mountFailingDisk(): Tmpfs | undefined {
  const backing = mountTmpfs(8)
  const mountPoint = tempDir('ferry-eio-')
  let loop = ''
  try {
    const image = path.join(backing.mountPoint, 'disk.img')
    fs.writeFileSync(image, '')
    fs.truncateSync(image, 64 * MiB)
    loop = execFileSync('losetup', ['-f', '--show', image], { encoding: 'utf8', stdio: 'pipe' }).trim()
    execFileSync('mkfs.ext4', ['-q', '-E', 'lazy_itable_init=1,lazy_journal_init=1', loop], { stdio: 'pipe' })
    execFileSync('mount', [loop, mountPoint], { stdio: 'pipe' })
  } catch (err) {
    console.warn(`EIO test SKIPPED: cannot build a failing disk (${(err as Error).message.split('\n')[0]})`)
    if (loop) execFileSync('losetup', ['-d', loop], { stdio: 'pipe' })
    fs.rmSync(mountPoint, { recursive: true, force: true })
    void backing[Symbol.asyncDispose]()
    return undefined
  }
  return {
    dataDir: path.join(mountPoint, 'data'),
    mountPoint,
    free: () => {
      const st = fs.statfsSync(mountPoint)
      return st.bavail * st.bsize
    },
    async [Symbol.asyncDispose]() {
      try {
        execFileSync('umount', [mountPoint], { stdio: 'pipe' })
      } catch {
        execFileSync('umount', ['-l', mountPoint], { stdio: 'pipe' })
      }
      execFileSync('losetup', ['-d', loop], { stdio: 'pipe' })
      fs.rmSync(mountPoint, { recursive: true, force: true })
      await backing[Symbol.asyncDispose]()
    },
  }
}

/** Someone else's file takes every byte still free (a full disk is full to the last page). */
function takeTheRest(mountPoint: string): void {
  const fd = fs.openSync(path.join(mountPoint, 'other-tenant'), 'a')
  try {
    for (let chunk = MiB; chunk >= 1; ) {
      try {
        fs.writeSync(fd, Buffer.alloc(chunk, 2))
      } catch (err) {
        if ((err as NodeJS.ErrnoException).code !== 'ENOSPC') throw err
        chunk = Math.floor(chunk / 2)
      }
    }
  } finally {
    fs.closeSync(fd)
  }
}

function payload(device: string, seq: number): string {
  return JSON.stringify({ device, seq, pad: 'x'.repeat(PAD_BYTES) })
}

/**
 * A device publishing numbered QoS 1 messages one at a time, reconnecting like firmware after a
 * refusal. Each attempt has a new seq. `acked`: seqs whose PUBACK arrived.
 */
class Device {
  readonly acked: number[] = []
  /** Publishes answered by closing the connection (the gateway refused them). */
  refused = 0
  /** Publishes that got neither a PUBACK nor a disconnect within 15 s. */
  stuck = 0
  lastAckAt = 0
  private seq = 0
  private running = true
  private readonly loop: Promise<void>

  constructor(
    readonly id: string,
    private readonly port: () => number,
  ) {
    this.loop = this.run()
  }

  private async run(): Promise<void> {
    while (this.running) {
      const c = mqtt.connect(`mqtt://127.0.0.1:${this.port()}`, { clientId: this.id, reconnectPeriod: 0, connectTimeout: 2000, clean: true })
      c.on('error', () => {})
      const closed = new Promise<'closed'>((resolve) => c.once('close', () => resolve('closed')))
      const up = await Promise.race([new Promise<'up'>((resolve) => c.once('connect', () => resolve('up'))), closed])
      while (up === 'up' && this.running) {
        const seq = ++this.seq
        let timer: NodeJS.Timeout | undefined
        const stuck = new Promise<'stuck'>((resolve) => (timer = setTimeout(() => resolve('stuck'), 15_000)))
        const sent = c.publishAsync(`devices/${this.id}/telemetry`, payload(this.id, seq), { qos: 1 }).then(
          () => 'acked' as const,
          () => 'error' as const,
        )
        const r = await Promise.race([sent, closed, stuck])
        clearTimeout(timer)
        if (r === 'acked') {
          this.acked.push(seq)
          this.lastAckAt = Date.now()
          continue
        }
        if (r === 'stuck') this.stuck++
        else this.refused++
        break
      }
      await c.endAsync(true).catch(() => {})
      // Reconnect backoff, as firmware does (pacing, not synchronisation).
      if (this.running) await new Promise((r) => setTimeout(r, 100))
    }
  }

  /** Stops after the publish in flight is answered. */
  async stop(): Promise<void> {
    this.running = false
    await this.loop
  }
}

/** A fleet of devices and the sums over their ledgers. */
class Fleet {
  readonly devices: Device[]
  constructor(name: string, port: () => number, n = DEVICES) {
    this.devices = Array.from({ length: n }, (_, i) => new Device(`${name}-${i}`, port))
  }
  acked(): number {
    return this.devices.reduce((s, d) => s + d.acked.length, 0)
  }
  refused(): number {
    return this.devices.reduce((s, d) => s + d.refused, 0)
  }
  stuck(): number {
    return this.devices.reduce((s, d) => s + d.stuck, 0)
  }
  async stop(): Promise<void> {
    await Promise.all(this.devices.map((d) => d.stop()))
  }
}

/** A spawned gateway that records whether it exited (it must not). */
class Gw {
  exitedWith: number | null | undefined = undefined
  private constructor(readonly proc: GatewayProcess) {
    void proc.exited.then((code) => (this.exitedWith = code))
  }
  static async spawn(args: string[]): Promise<Gw> {
    return new Gw(await spawnGateway(args))
  }
  get port(): number {
    return this.proc.port
  }
  get alive(): boolean {
    return this.exitedWith === undefined
  }
  tail(): string {
    return this.proc.output().split('\n').slice(-15).join('\n')
  }
  async metric(name: string, labels: string): Promise<number> {
    const http = /"msg":"HTTP listening","address":"[^"]*:(\d+)"/.exec(this.proc.output())
    if (!http) throw new Error('no "HTTP listening" line')
    const text = await (await fetch(`http://127.0.0.1:${http[1]}/metrics`)).text()
    const m = new RegExp(`^${name}\\{${labels.replace(/[{}]/g, '\\$&')}\\} (\\S+)$`, 'm').exec(text)
    return m ? Number(m[1]) : 0
  }
  drops(reason: string): Promise<number> {
    return this.metric('ferry_drops_total', `reason="${reason}"`)
  }
}

/** Polls `cond` every 50 ms until true; fails with `what` at the deadline, or at once if the gateway exits. */
async function until(what: string, timeoutMs: number, cond: () => boolean | Promise<boolean>, gw?: Gw): Promise<void> {
  const deadline = Date.now() + timeoutMs
  for (;;) {
    if (gw && !gw.alive) throw new Error(`gateway exited (code ${String(gw.exitedWith)}) while waiting for: ${what}\n${gw.tail()}`)
    if (await cond()) return
    if (Date.now() > deadline) throw new Error(`not within ${timeoutMs} ms: ${what}${gw ? `\n${gw.tail()}` : ''}`)
    await new Promise((r) => setTimeout(r, 50))
  }
}

/**
 * Waits until the disk is full as a state: every device has been refused, then a stretch of 2 refusals
 * per device passes without any acknowledgement. (Right after the first refusal a smaller group
 * commit can still fit in what the truncated write left, so a few acknowledgements may follow.)
 */
async function settledFull(fleet: Fleet, gw: Gw): Promise<void> {
  await until('every device refused (the disk is full)', 40_000, () => fleet.devices.every((d) => d.refused > 0), gw)
  let acked = fleet.acked()
  let refused = fleet.refused()
  await until('2 refusals per device in a row with no acknowledgement (full is a state)', 20_000, () => {
    if (fleet.acked() !== acked) {
      acked = fleet.acked()
      refused = fleet.refused()
    }
    return fleet.refused() >= refused + 2 * fleet.devices.length
  }, gw)
}

function args(dataDir: string, nats: NatsServer, name: string, discard: 'old' | 'new'): string[] {
  return [
    '--mqtt-listen', '127.0.0.1:0',
    '--data-dir', dataDir,
    '--nats-url', nats.url,
    '--gateway-id', name,
    '--log-segment-bytes', '1MiB',
    '--log-max-bytes', '1GiB', // far above the disk: the disk fills first
    '--discard', discard,
    '--presence', 'off', // exact accounting: only device publishes in the log
    '--stream', name.toUpperCase(),
    '--subject-prefix', name,
  ]
}

/** Every acknowledged message is in the stream, none twice; returns the acknowledged ones missing. */
async function upstreamCheck(nats: NatsServer, stream: string, fleet: Fleet): Promise<{ missing: string[]; duplicates: string[]; stored: number }> {
  const seen = new Map<string, number>()
  const msgs = await readStream(nats.url, stream)
  for (const m of msgs) {
    const v = decodeCbor(m.data) as { device: string; seq: number }
    const k = `${v.device}:${v.seq}`
    seen.set(k, (seen.get(k) ?? 0) + 1)
  }
  const missing: string[] = []
  for (const d of fleet.devices) for (const s of d.acked) if (!seen.has(`${d.id}:${s}`)) missing.push(`${d.id}:${s}`)
  return { missing, duplicates: [...seen].filter(([, n]) => n > 1).map(([k]) => k), stored: msgs.length }
}

describe.skipIf(problem !== undefined)('disk full', () => {
  let nats: NatsServer
  beforeAll(async () => {
    nats = await startNats()
    await nats.stop() // the gateway starts with upstream down: the disk fills
  })
  afterAll(async () => {
    await nats?.[Symbol.asyncDispose]()
  })

  it('disk full - discard new: refuses and counts disk_full, drains, acknowledges again within seconds, never exits, loses nothing acknowledged', async () => {
    const disk = mountTmpfs(24)
    let gw: Gw | undefined
    const fleet = new Fleet('dfnew', () => gw?.port ?? 1)
    try {
      gw = await Gw.spawn(args(disk.dataDir, nats, 'dfnew', 'new'))
      // Fully allocated when created: a checkpoint write never needs a free block.
      const checkpoint = fs.statSync(path.join(disk.dataDir, 'checkpoint'))
      expect(checkpoint.size).toBe(8192)
      expect(checkpoint.blocks * 512).toBeGreaterThanOrEqual(8192)
      await settledFull(fleet, gw)
      const ackedWhenFull = fleet.acked()
      expect(disk.free()).toBeLessThan(2 * MiB)
      expect(await gw.drops('disk_full')).toBeGreaterThan(0)

      const upAt = Date.now()
      await nats.start()
      // The backlog drains while the disk is still full; forwarded segments are deleted; PUBACKs resume.
      await until('every device acknowledged again after NATS came back', 30_000, () => fleet.devices.every((d) => d.lastAckAt > upAt), gw)
      const resumedMs = Math.max(...fleet.devices.map((d) => d.lastAckAt)) - upAt
      console.log(`disk full (discard new): ${ackedWhenFull} acknowledged before full, ${fleet.refused()} refused, every device acknowledged again ${resumedMs} ms after NATS started`)
      await until('a few more acknowledged after resuming', 20_000, () => fleet.acked() >= ackedWhenFull + 50, gw)
      await fleet.stop()

      expect(fleet.stuck()).toBe(0) // refused means disconnected, never left waiting
      expect(await waitForCount(nats.url, fleet.acked(), 30_000, 'DFNEW')).toBeGreaterThanOrEqual(fleet.acked())
      const { missing, duplicates } = await upstreamCheck(nats, 'DFNEW', fleet)
      expect(missing).toEqual([])
      expect(duplicates).toEqual([])
      // Every refusal is counted as disk_full (the log is nowhere near --log-max-bytes).
      expect(await gw.drops('disk_full')).toBe(fleet.refused())
      expect(await gw.drops('discard_new')).toBe(0)
      expect(gw.alive).toBe(true)
      expect(await gw.proc.kill('SIGTERM')).toBe(0)
    } finally {
      await fleet.stop()
      await gw?.proc.kill('SIGKILL')
      await nats.stop()
      await disk[Symbol.asyncDispose]()
    }
  })

  it('disk full - discard old: a full disk evicts the oldest segment, counted exactly as the acknowledged records missing upstream', async () => {
    const disk = mountTmpfs(16)
    let gw: Gw | undefined
    const fleet = new Fleet('dfold', () => gw?.port ?? 1)
    try {
      gw = await Gw.spawn(args(disk.dataDir, nats, 'dfold', 'old'))
      // Twice the disk acknowledged with NATS down: only possible by evicting.
      const recordBytes = PAD_BYTES + 100
      const target = Math.ceil((2 * 16 * MiB) / recordBytes)
      await until(`${target} publishes acknowledged on a 16 MiB disk with NATS down`, 25_000, () => fleet.acked() >= target, gw)
      await fleet.stop()
      const evicted = await gw.drops('discard_old')
      expect(evicted).toBeGreaterThan(0)

      await nats.start()
      const kept = fleet.acked() - evicted
      expect(await waitForCount(nats.url, kept, 30_000, 'DFOLD')).toBeGreaterThanOrEqual(kept)
      const { missing, duplicates, stored } = await upstreamCheck(nats, 'DFOLD', fleet)
      console.log(`disk full (discard old): ${fleet.acked()} acknowledged, ${evicted} evicted, ${fleet.refused()} refused, ${stored} upstream`)
      expect(duplicates).toEqual([])
      expect(missing.length).toBe(evicted)
      expect(stored).toBe(kept)
      // Eviction takes the oldest: per device, what is missing comes before what arrived.
      for (const d of fleet.devices) {
        const gone = new Set(missing.filter((k) => k.startsWith(`${d.id}:`)).map((k) => Number(k.split(':')[1])))
        const firstKept = d.acked.find((s) => !gone.has(s)) ?? Infinity
        expect([...gone].every((s) => s < firstKept)).toBe(true)
      }
      expect(await gw.drops('disk_full')).toBe(fleet.refused())
      expect(gw.alive).toBe(true)
      expect(await gw.proc.kill('SIGTERM')).toBe(0)
    } finally {
      await fleet.stop()
      await gw?.proc.kill('SIGKILL')
      await nats.stop()
      await disk[Symbol.asyncDispose]()
    }
  })

  it('disk full - space freed by someone else (a file deleted, NATS still down): acknowledges again within seconds', async () => {
    const disk = mountTmpfs(24)
    let gw: Gw | undefined
    const fleet = new Fleet('dffree', () => gw?.port ?? 1)
    try {
      const filler = path.join(disk.mountPoint, 'filler')
      fs.writeFileSync(filler, Buffer.alloc(20 * MiB, 1))
      gw = await Gw.spawn(args(disk.dataDir, nats, 'dffree', 'new'))
      await settledFull(fleet, gw)
      const ackedWhenFull = fleet.acked()

      const freedAt = Date.now()
      fs.rmSync(filler)
      await until('every device acknowledged again after the filler was deleted', 15_000, () => fleet.devices.every((d) => d.lastAckAt > freedAt), gw)
      const resumedMs = Math.max(...fleet.devices.map((d) => d.lastAckAt)) - freedAt
      console.log(`disk full (freed by someone else): ${ackedWhenFull} acknowledged before full, every device acknowledged again ${resumedMs} ms after the delete`)
      await fleet.stop()
      expect(fleet.acked()).toBeGreaterThan(ackedWhenFull)
      expect(fleet.stuck()).toBe(0)

      await nats.start()
      expect(await waitForCount(nats.url, fleet.acked(), 30_000, 'DFFREE')).toBeGreaterThanOrEqual(fleet.acked())
      const { missing, duplicates } = await upstreamCheck(nats, 'DFFREE', fleet)
      expect(missing).toEqual([])
      expect(duplicates).toEqual([])
      expect(await gw.drops('disk_full')).toBe(fleet.refused())
      expect(gw.alive).toBe(true)
      expect(await gw.proc.kill('SIGTERM')).toBe(0)
    } finally {
      await fleet.stop()
      await gw?.proc.kill('SIGKILL')
      await nats.stop()
      await disk[Symbol.asyncDispose]()
    }
  })

  it('disk full - kill -9 while full, restart with not one byte free: it starts, forwards what was acknowledged, and acknowledges again', async () => {
    const disk = mountTmpfs(24)
    const a = args(disk.dataDir, nats, 'dfkill', 'new')
    let gw: Gw | undefined
    const fleet = new Fleet('dfkill', () => gw?.port ?? 1)
    try {
      gw = await Gw.spawn(a)
      await settledFull(fleet, gw)
      await gw.proc.kill('SIGKILL')
      takeTheRest(disk.mountPoint)
      expect(disk.free()).toBe(0)
      gw = await Gw.spawn(a) // lock takeover and recovery on a full disk must not need a free block
      const refusedAtRestart = fleet.refused()
      await until('refusals by the restarted gateway (the disk is still full)', 20_000, () => fleet.refused() >= refusedAtRestart + DEVICES, gw)
      const upAt = Date.now()
      await nats.start()
      await until('every device acknowledged again after NATS came back', 30_000, () => fleet.devices.every((d) => d.lastAckAt > upAt), gw)
      await fleet.stop()
      expect(fleet.stuck()).toBe(0)
      expect(await waitForCount(nats.url, fleet.acked(), 30_000, 'DFKILL')).toBeGreaterThanOrEqual(fleet.acked())
      const { missing, duplicates } = await upstreamCheck(nats, 'DFKILL', fleet)
      expect(missing).toEqual([])
      expect(duplicates).toEqual([])
      expect(gw.alive).toBe(true)
      expect(await gw.proc.kill('SIGTERM')).toBe(0)
    } finally {
      await fleet.stop()
      await gw?.proc.kill('SIGKILL')
      await nats.stop()
      await disk[Symbol.asyncDispose]()
    }
  })

  it('disk full - not one byte left and a message to dead-letter in the backlog: the drain frees space by itself, the dead letter is written, acknowledging resumes', async () => {
    // A stream that rejects messages over 7,000 bytes (ours are ~6 KiB): one publish will be dead-lettered.
    await nats.start()
    const nc = await connect({ servers: nats.url })
    await (await jetstreamManager(nc)).streams.add({ name: 'DFZERO', subjects: ['dfzero.up.>', 'dfzero.events.>'], max_msg_size: 7000 })
    await nc.close()
    await nats.stop()
    const disk = mountTmpfs(24)
    let gw: Gw | undefined
    const fleet = new Fleet('dfzero', () => gw?.port ?? 1)
    try {
      gw = await Gw.spawn([...args(disk.dataDir, nats, 'dfzero', 'new'), '--max-attempts', '1'])
      // After two segments' worth, so that forwarded segments before it can be freed.
      await until('2 MiB acknowledged', 20_000, () => fleet.acked() * (PAD_BYTES + 100) >= 2 * MiB, gw)
      const poison = await connectClient(gw.port, 'dfzero-poison')
      await poison.publishAsync('devices/dfzero-poison/blob', Buffer.alloc(12_000, 7), { qos: 1 })
      await endClient(poison)
      await settledFull(fleet, gw)
      takeTheRest(disk.mountPoint)
      expect(disk.free()).toBe(0)

      const upAt = Date.now()
      await nats.start()
      // Nothing but the drain can free space: forwarded segments must go without a checkpoint write first.
      await until('the rejected message is dead-lettered', 30_000, async () => (await gw!.drops('dead_letter')) === 1, gw)
      await until('every device acknowledged again after NATS came back', 30_000, () => fleet.devices.every((d) => d.lastAckAt > upAt), gw)
      console.log(`disk full (not one byte left): every device acknowledged again ${Math.max(...fleet.devices.map((d) => d.lastAckAt)) - upAt} ms after NATS started`)
      await fleet.stop()
      expect(fleet.stuck()).toBe(0)
      expect(await waitForCount(nats.url, fleet.acked(), 30_000, 'DFZERO')).toBeGreaterThanOrEqual(fleet.acked())
      const { missing, duplicates } = await upstreamCheck(nats, 'DFZERO', fleet)
      expect(missing).toEqual([])
      expect(duplicates).toEqual([])
      const dead = fs.readFileSync(path.join(disk.dataDir, 'dead-letter.jsonl'), 'utf8').trim().split('\n')
      expect(dead.length).toBe(1)
      expect(decodeEntry(Buffer.from((JSON.parse(dead[0]!) as { entry: string }).entry, 'base64')).clientId).toBe('dfzero-poison')
      expect(await gw.drops('disk_full')).toBe(fleet.refused())
      expect(gw.alive).toBe(true)
      expect(await gw.proc.kill('SIGTERM')).toBe(0)
    } finally {
      await fleet.stop()
      await gw?.proc.kill('SIGKILL')
      await nats.stop()
      await disk[Symbol.asyncDispose]()
    }
  })

  it('disk full - EIO is not a full disk: a failed fdatasync stops the log and exits 1 naming what failed', async () => {
    const disk = mountFailingDisk()
    if (!disk) return
    let gw: Gw | undefined
    const fleet = new Fleet('dfeio', () => gw?.port ?? 1)
    try {
      gw = await Gw.spawn(args(disk.dataDir, nats, 'dfeio', 'new'))
      const exited = await Promise.race([gw.proc.exited, new Promise<'running'>((r) => setTimeout(() => r('running'), 30_000))])
      expect(exited).toBe(1)
      expect(disk.free()).toBeGreaterThan(8 * MiB) // the file system had room: this was EIO, not ENOSPC
      const errors = gw.proc.output().split('\n').filter((l) => l.includes('"level":"error"'))
      expect(errors.some((l) => l.includes('EIO') && l.includes('fdatasync'))).toBe(true)
      expect(fleet.acked()).toBeGreaterThan(0)
    } finally {
      await fleet.stop()
      await gw?.proc.kill('SIGKILL')
      await disk[Symbol.asyncDispose]()
    }
  })
})
