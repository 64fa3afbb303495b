// Command line front end of the device fleet simulator: `npm run sim -- --devices 20 --rate 5`.
import { parseArgs } from 'node:util'
import { startFleet, type Fleet, type FleetOptions, type LatencySummary, type QoS } from './fleet.js'

const USAGE = `Usage: npm run sim -- [options]

Simulates a fleet of MQTT devices publishing JSON telemetry to <topic-prefix>/<device>/telemetry.

Options:
  --url <url>             broker URL (default mqtt://127.0.0.1:1883)
  --devices <n>           number of devices, one MQTT client each (default 10)
  --rate <msgs/s>         messages per second per device; 0 = as fast as acked (default 1)
  --inflight <n>          max unacked messages per device when --rate 0 (default 10)
  --qos <0|1|2>           publish QoS (default 1)
  --count <n>             messages per device, then stop once all are acked (default unlimited)
  --duration <seconds>    stop after this long (default: until Ctrl-C, or until --count is done)
  --topic-prefix <s>      topic prefix (default devices)
  --id-prefix <s>         device / client id prefix (default sim)
  --payload-bytes <n>     pad each JSON payload to about n bytes (default: no padding)
  --jitter <0..1>         publish interval jitter (default 0.2)
  --ramp-ms <ms>          spread device connects over this long (default min(devices*2, 5000))
  --clean <true|false>    MQTT clean session (default true)
  -h, --help              show this help

Prints one status line per second and a summary on exit (Ctrl-C, --duration or --count reached).
Exit code: 0 on a normal run, 2 on bad arguments.`

class UsageError extends Error {}

function num(name: string, raw: string | undefined, opts: { int?: boolean; min?: number; max?: number } = {}): number | undefined {
  if (raw === undefined) return undefined
  const v = Number(raw)
  if (raw.trim() === '' || !Number.isFinite(v)) throw new UsageError(`--${name} must be a number, got "${raw}"`)
  if (opts.int === true && !Number.isInteger(v)) throw new UsageError(`--${name} must be an integer, got "${raw}"`)
  if (opts.min !== undefined && v < opts.min) throw new UsageError(`--${name} must be >= ${opts.min}, got "${raw}"`)
  if (opts.max !== undefined && v > opts.max) throw new UsageError(`--${name} must be <= ${opts.max}, got "${raw}"`)
  return v
}

interface CliConfig {
  fleet: FleetOptions
  durationSec: number | undefined
}

function parse(argv: string[]): CliConfig | 'help' {
  let values
  try {
    ;({ values } = parseArgs({
      args: argv,
      strict: true,
      allowPositionals: false,
      options: {
        url: { type: 'string' },
        devices: { type: 'string' },
        rate: { type: 'string' },
        inflight: { type: 'string' },
        qos: { type: 'string' },
        count: { type: 'string' },
        duration: { type: 'string' },
        'topic-prefix': { type: 'string' },
        'id-prefix': { type: 'string' },
        'payload-bytes': { type: 'string' },
        jitter: { type: 'string' },
        'ramp-ms': { type: 'string' },
        clean: { type: 'string' },
        help: { type: 'boolean', short: 'h' },
      },
    }))
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err))
  }
  if (values.help === true) return 'help'

  const qosNum = num('qos', values.qos, { int: true, min: 0, max: 2 }) ?? 1
  const qos: QoS = qosNum === 0 ? 0 : qosNum === 2 ? 2 : 1
  let clean = true
  if (values.clean !== undefined) {
    if (values.clean !== 'true' && values.clean !== 'false') {
      throw new UsageError(`--clean must be true or false, got "${values.clean}"`)
    }
    clean = values.clean === 'true'
  }
  const fleet: FleetOptions = {
    devices: num('devices', values.devices, { int: true, min: 1 }) ?? 10,
    ratePerDevice: num('rate', values.rate, { min: 0 }) ?? 1,
    qos,
    clean,
  }
  if (values.url !== undefined) fleet.url = values.url
  const inflight = num('inflight', values.inflight, { int: true, min: 1 })
  if (inflight !== undefined) fleet.inflight = inflight
  const count = num('count', values.count, { int: true, min: 1 })
  if (count !== undefined) fleet.count = count
  if (values['topic-prefix'] !== undefined) fleet.topicPrefix = values['topic-prefix']
  if (values['id-prefix'] !== undefined) fleet.idPrefix = values['id-prefix']
  const payloadBytes = num('payload-bytes', values['payload-bytes'], { int: true, min: 0 })
  if (payloadBytes !== undefined) fleet.payloadBytes = payloadBytes
  const jitter = num('jitter', values.jitter, { min: 0, max: 1 })
  if (jitter !== undefined) fleet.jitter = jitter
  const rampMs = num('ramp-ms', values['ramp-ms'], { min: 0 })
  if (rampMs !== undefined) fleet.rampMs = rampMs
  const durationSec = num('duration', values.duration, { min: 0 })
  return { fleet, durationSec }
}

const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2))
const lat = (l: LatencySummary): string => `p50 ${ms(l.p50)}ms p99 ${ms(l.p99)}ms`

async function run(cfg: CliConfig): Promise<void> {
  const o = cfg.fleet
  console.log(
    `firmware-sim: ${o.devices} devices -> ${o.url ?? 'mqtt://127.0.0.1:1883'}, ` +
      `rate ${o.ratePerDevice === 0 ? `max (inflight ${o.inflight ?? 10})` : `${o.ratePerDevice}/s`} per device, ` +
      `qos ${o.qos ?? 1}, clean ${String(o.clean ?? true)}` +
      (o.count !== undefined ? `, count ${o.count}` : '') +
      (cfg.durationSec !== undefined ? `, duration ${cfg.durationSec}s` : ''),
  )

  const fleet: Fleet = startFleet(o)
  const t0 = performance.now()
  let prev = fleet.stats()
  let prevAt = t0

  const status = setInterval(() => {
    const now = performance.now()
    const s = fleet.stats()
    const dt = (now - prevAt) / 1000
    const w = fleet.ackLatencyWindow()
    console.log(
      `[${((now - t0) / 1000).toFixed(0).padStart(4)}s] connected ${s.connected}/${s.devices}` +
        `  sent/s ${((s.sent - prev.sent) / dt).toFixed(0)}  acked/s ${((s.acked - prev.acked) / dt).toFixed(0)}` +
        `  acked ${s.acked}  pending ${s.pending}  ack ${w.samples > 0 ? lat(w) : 'p50 - p99 -'}` +
        `  reconnects ${s.reconnects}  errors ${s.errors}`,
    )
    prev = s
    prevAt = now
  }, 1000)

  let reason = await new Promise<string>((resolve) => {
    if (cfg.durationSec !== undefined) {
      setTimeout(() => resolve(`duration ${cfg.durationSec}s reached`), cfg.durationSec * 1000)
    }
    if (o.count !== undefined) {
      fleet.done().then(
        () => resolve(`all ${o.count} messages of every device acknowledged`),
        () => {},
      )
    }
    process.once('SIGINT', () => {
      process.once('SIGINT', () => {
        console.error('second SIGINT: exiting without waiting')
        process.exit(130)
      })
      resolve('SIGINT')
    })
    process.once('SIGTERM', () => resolve('SIGTERM'))
  })
  clearInterval(status)

  const countDone = fleet.ledger.size === o.devices * (o.count ?? -1)
  if (!countDone) {
    const before = fleet.stats().pending
    if (before > 0) {
      console.log(`stopping (${reason}); waiting up to 5s for ${before} pending acks...`)
      const drained = await fleet.drain(5000)
      if (!drained) reason += `, ${fleet.stats().pending} still unacked after 5s`
    }
  }
  const elapsed = (performance.now() - t0) / 1000
  const s = fleet.stats()
  const ledger = fleet.ledger
  let complete = 0
  if (o.count !== undefined) for (const id of fleet.deviceIds) if (ledger.countFor(id) >= o.count) complete++
  await fleet.close()

  console.log(`\nsummary (${reason}) after ${elapsed.toFixed(1)}s:`)
  console.log(
    `  devices ${s.devices}  connected at end ${s.connected}  reconnects ${s.reconnects}  errors ${s.errors} (publish ${s.publishErrors})`,
  )
  console.log(
    `  sent ${s.sent} (${(s.sent / elapsed).toFixed(1)}/s)  acked ${s.acked} (${(s.acked / elapsed).toFixed(1)}/s)` +
      `  unacked ${s.pending}`,
  )
  console.log(
    `  ack latency (qos>=1): p50 ${ms(s.ackLatencyMs.p50)}ms  p99 ${ms(s.ackLatencyMs.p99)}ms  max ${ms(s.ackLatencyMs.max)}ms`,
  )
  console.log(
    `  ledger: ${ledger.size} distinct (device, seq) acked, ${ledger.duplicates} duplicate acks` +
      (o.count !== undefined ? `, ${complete}/${s.devices} devices complete` : ''),
  )
}

function main(): void {
  let cfg: CliConfig | 'help'
  try {
    cfg = parse(process.argv.slice(2))
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`firmware-sim: ${err.message}\nRun with --help for usage.`)
      process.exit(2)
    }
    throw err
  }
  if (cfg === 'help') {
    console.log(USAGE)
    return
  }
  run(cfg).then(
    () => process.exit(0),
    (err: unknown) => {
      console.error('firmware-sim: fatal:', err instanceof Error ? (err.stack ?? err.message) : String(err))
      process.exit(1)
    },
  )
}

main()
