// Fleet simulator end to end: a mixed fleet through a real gateway into JetStream, then `firmware-sim verify`
// against the stream: nothing acknowledged is lost or stored twice, and verify does notice when something is.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import { jetstream } from '@nats-io/jetstream'
import { connect, headers as natsHeaders } from '@nats-io/transport-node'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { Ledger, LedgerFileError, decodeFsim, encodeFsim, readLedgerFile, startFleet, verifyStream, writeLedgerFile } from '../../firmware-sim/index.js'
import { assignProfiles } from '../../firmware-sim/payloads.js'
import { Scheduler, Task } from '../../firmware-sim/scheduler.js'
import type { VerifyReport } from '../../firmware-sim/index.js'
import type { Gateway } from '../../src/gateway.js'
import { startGateway } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'
import { readStream } from '../helpers/stream.js'

const DEVICES = 24
const COUNT = 40

let nats: NatsServer
let gw: Gateway
let dir: string
let ledgerPath: string

beforeAll(async () => {
  nats = await startNats()
  dir = tempDir('ferry-fleet-')
  gw = await startGateway({ 'log.dataDir': path.join(dir, 'data'), 'nats.url': nats.url })
  ledgerPath = path.join(dir, 'ledger.fsl')
})
afterAll(async () => {
  await gw?.close()
  await nats?.[Symbol.asyncDispose]()
  if (dir !== undefined) fs.rmSync(dir, { recursive: true, force: true })
})

/** Runs `firmware-sim verify --json` from the source (tsx) and returns its exit code and report. */
async function runVerifyCli(ledger: string): Promise<{ code: number | null; report: VerifyReport; stderr: string }> {
  const child = spawn(
    process.execPath,
    ['--import', 'tsx', 'firmware-sim/cli.ts', 'verify', '--nats-url', nats.url, '--ledger', ledger, '--json'],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  )
  let stdout = ''
  let stderr = ''
  child.stdout?.on('data', (d: Buffer) => (stdout += d.toString()))
  child.stderr?.on('data', (d: Buffer) => (stderr += d.toString()))
  const code = await new Promise<number | null>((resolve) => child.once('exit', (c) => resolve(c)))
  let report: VerifyReport
  try {
    report = JSON.parse(stdout) as VerifyReport
  } catch {
    throw new Error(`verify printed no JSON (exit ${code}):\n${stdout}\n${stderr}`)
  }
  return { code, report, stderr }
}

describe('fleet simulator', () => {
  it('fleet - mixed profiles at QoS 1/2 through the gateway, across a reconnect storm: verify finds 0 lost, 0 duplicates', async () => {
    const fleet = startFleet({
      url: `mqtt://127.0.0.1:${gw.ingress.address.port}`,
      devices: DEVICES,
      ratePerDevice: 25,
      count: COUNT,
      profiles: { telemetry: 60, alarm: 15, binary: 15, large: 10 },
      largeBytes: [8 * 1024, 32 * 1024],
      qosMix: { 1: 3, 2: 1 },
      persistentShare: 0.25,
      rateSpread: 0.3,
      rampMs: 200,
      seed: 7,
    })
    try {
      // A reconnect storm in the middle of the run: in-flight QoS 1/2 messages are resent by mqtt.js after the
      // reconnect (DUP 0), and the gateway must store them once.
      const until = Date.now() + 10_000
      while (fleet.stats().acked < (DEVICES * COUNT) / 3 && Date.now() < until) await new Promise((r) => setTimeout(r, 10))
      expect(fleet.storm()).toBeGreaterThan(0)
      await fleet.done()
      await fleet.writeLedger(ledgerPath)
      const s = fleet.stats()
      expect(s.storms).toBe(1)
      expect(s.reconnects).toBeGreaterThanOrEqual(1)
      expect(s.sentByQos[0]).toBe(0)
      expect(s.sentByQos[1] + s.sentByQos[2]).toBe(DEVICES * COUNT)
      for (const p of ['telemetry', 'alarm', 'binary', 'large'] as const) expect(s.sentByProfile[p]).toBeGreaterThan(0)
      expect(fleet.ledger.size).toBe(DEVICES * COUNT)
      expect(fleet.ledger.duplicates).toBe(0)
    } finally {
      await fleet.close()
    }

    const ledger = await readLedgerFile(ledgerPath)
    expect(ledger.size).toBe(DEVICES * COUNT)
    // Acknowledged means stored in the gateway's log, not yet in JetStream: poll until everything is forwarded.
    let report = await verifyStream({ natsUrl: nats.url, ledger })
    const deadline = Date.now() + 10_000
    while (report.totals.lost > 0 && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 100))
      report = await verifyStream({ natsUrl: nats.url, ledger })
    }
    expect(report.totals).toMatchObject({ devices: DEVICES, acked: DEVICES * COUNT, stored: DEVICES * COUNT, lost: 0, duplicates: 0, unknown: 0 })
    expect(report.unidentified).toBe(0)
    expect(report.corrupt).toBe(0)
    expect(report.clientMismatch).toBe(0)
    expect(report.ok).toBe(true)
    // JSON profiles arrive as CBOR, binary and large ones unchanged with their FSIM header.
    expect(report.contentTypes['application/cbor']).toBeGreaterThan(0)
    expect(report.contentTypes['application/octet-stream']).toBeGreaterThan(0)
    expect(new Set(report.devices.map((d) => d.profile))).toEqual(new Set(['telemetry', 'alarm', 'binary', 'large']))
  })

  it('verify - reports a lost and a duplicated message, and exits 1 (0 before)', async () => {
    const clean = await runVerifyCli(ledgerPath)
    expect(clean.report.totals).toMatchObject({ lost: 0, duplicates: 0 })
    expect(clean.code).toBe(0)

    // A loss: the ledger claims acks that never reached the stream.
    const ledger = await readLedgerFile(ledgerPath)
    const [victim] = ledger.devices().sort()
    expect(victim).toBeDefined()
    ledger.noteSent(victim!, COUNT + 1)
    ledger.record(victim!, COUNT + 1)
    ledger.noteSent('ghost-00001', 1)
    ledger.record('ghost-00001', 1)
    const tampered = path.join(dir, 'tampered.fsl')
    await writeLedgerFile(tampered, ledger)

    // A duplicate: one stored device message published again under another Nats-Msg-Id (the dedup key).
    const original = (await readStream(nats.url)).find((m) => m.subject.startsWith('ferry.up.'))
    expect(original).toBeDefined()
    const nc = await connect({ servers: nats.url })
    try {
      const h = natsHeaders()
      for (const [k, v] of Object.entries(original!.headers)) if (k !== 'Nats-Msg-Id') h.set(k, v)
      await jetstream(nc).publish(original!.subject, original!.data, { msgID: 'fleet-test:duplicate', headers: h })
    } finally {
      await nc.close()
    }

    const { code, report } = await runVerifyCli(tampered)
    expect(code).toBe(1)
    expect(report.ok).toBe(false)
    expect(report.totals).toMatchObject({ lost: 2, duplicates: 1 })
    const byId = new Map(report.devices.map((d) => [d.device, d]))
    expect(byId.get(victim!)).toMatchObject({ lost: 1, lostSeqs: [COUNT + 1] })
    expect(byId.get('ghost-00001')).toMatchObject({ acked: 1, stored: 0, lost: 1, lostSeqs: [1] })
    expect(report.devices.filter((d) => d.duplicates > 0)).toHaveLength(1)
    expect(report.devices.find((d) => d.duplicates > 0)?.duplicateSeqs).toHaveLength(1)
  })
})

describe('fleet simulator - pieces', () => {
  it('ledger - the file round-trips acked seqs and the highest sent seq; a damaged file is refused', async () => {
    const l = new Ledger()
    for (const seq of [1, 2, 3, 33, 1000]) {
      l.noteSent('a', seq)
      l.record('a', seq)
    }
    l.noteSent('a', 1001) // sent, never acked
    l.noteSent('b', 5) // nothing acked
    expect(l.record('a', 2)).toBe(false)
    const file = path.join(dir, 'roundtrip.fsl')
    await writeLedgerFile(file, l)
    const back = await readLedgerFile(file)
    expect(back.size).toBe(5)
    expect(back.seqs('a')).toEqual([1, 2, 3, 33, 1000])
    expect(back.sentMax('a')).toBe(1001)
    expect(back.sentMax('b')).toBe(5)
    expect(back.devices()).toEqual(['a'])
    expect(() => Ledger.decode(l.encode().subarray(0, 20))).toThrow(LedgerFileError)
  })

  it('payloads - the FSIM header names device and seq and catches a changed body; profiles split by weight', () => {
    const p = encodeFsim('dev-ü', 4_000_000_000, Buffer.from([1, 2, 3]))
    expect(p.subarray(0, 4).toString()).toBe('FSIM')
    expect(decodeFsim(p)).toEqual({ device: 'dev-ü', seq: 4_000_000_000, intact: true })
    p[p.length - 1] = 9
    expect(decodeFsim(p)?.intact).toBe(false)
    expect(decodeFsim(Buffer.from('{"device":"x"}'))).toBeUndefined()
    const a = assignProfiles({ telemetry: 80, alarm: 10, binary: 5, large: 5 }, 20)
    expect(a.filter((x) => x === 'telemetry')).toHaveLength(16)
    expect(a.filter((x) => x === 'alarm')).toHaveLength(2)
    expect(a.filter((x) => x === 'large')).toHaveLength(1)
  })

  it('scheduler - runs tasks in time order, never early, one revolution and more ahead', () => {
    const sch = new Scheduler(10, 0, 8) // 80 ms per revolution
    const ran: [string, number][] = []
    const mk = (name: string): Task => new Task((now) => ran.push([name, now]))
    const far = mk('far')
    const soon = mk('soon')
    const cancelled = mk('cancelled')
    sch.schedule(far, 250)
    sch.schedule(soon, 15)
    sch.schedule(cancelled, 20)
    sch.cancel(cancelled)
    for (let now = 0; now <= 300; now += 5) sch.advance(now)
    expect(ran.map(([n]) => n)).toEqual(['soon', 'far'])
    expect(ran[0]![1]).toBeGreaterThanOrEqual(15)
    expect(ran[1]![1]).toBeGreaterThanOrEqual(250)
    expect(ran[1]![1]).toBeLessThan(270)
    expect(sch.size).toBe(0)
  })
})
