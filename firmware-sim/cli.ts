// Command line front end of the device fleet simulator: `firmware-sim [run] [options]` and `firmware-sim verify`.
import { parseArgs, type ParseArgsConfig } from 'node:util'
import { startFleet, type Fleet, type FleetOptions, type LatencySummary, type QoS, type QosWeights } from './fleet.js'
import { Ledger, LedgerFileError, readLedgerFile, writeLedgerFile } from './ledger.js'
import { MAX_LARGE_BYTES, PROFILE_NAMES, type ProfileName } from './payloads.js'
import { VerifyError, formatReport, verifyStream } from './verify.js'

const USAGE = `Usage: firmware-sim [run] [options]      simulate a fleet of MQTT devices (the default command)
       firmware-sim verify [options]     check a JetStream stream against the ack ledger of a run
       firmware-sim <command> --help

npm run sim -- [options] is firmware-sim run.`

const RUN_USAGE = `Usage: firmware-sim [run] [options]

Simulates a fleet of MQTT devices, one MQTT client each, publishing to <topic-prefix>/<device>/<profile>.
Every payload carries its device id and seq (JSON fields "device" and "seq"; binary payloads an FSIM header),
and every message the broker acknowledged (PUBACK for QoS 1, PUBCOMP for QoS 2) goes into the ack ledger.

Options:
  --url <url>               broker URL (default mqtt://127.0.0.1:1883)
  --devices <n>             number of devices (default 10)
  --rate <msgs/s>           average messages per second per device; 0 = as fast as acked (default 1)
  --inflight <n>            max unacked messages per device when --rate 0 (default 10)
  --qos <0|1|2>             QoS of every publish (default 1)
  --qos-mix <q=w,...>       QoS drawn per message by weight, e.g. 0=10,1=80,2=10 (replaces --qos)
  --profile <name=w,...>    device profiles by weight, e.g. telemetry=80,alarm=10,binary=5,large=5
                            (default: the original compact telemetry JSON, ~130 bytes, on <device>/telemetry)
                              telemetry  periodic JSON, ~250 B: numbers, ints, bools, strings, a nested object, arrays
                              alarm      JSON alarms: quiet, then bursts of 3-12 messages 50 ms apart (same average rate)
                              binary     non-JSON bytes, ~40-300 B, with the FSIM header
                              large      non-JSON bytes, --large-bytes, with the FSIM header
  --large-bytes <min-max>   size range of large payloads, e.g. 8KiB-64KiB (default 8192-65536, max 1MiB)
  --count <n>               messages per device, then stop once all are acked (default unlimited)
  --duration <seconds>      stop after this long (default: until Ctrl-C, or until --count is done)
  --topic-prefix <s>        topic prefix (default devices)
  --id-prefix <s>           device / client id prefix (default sim)
  --payload-bytes <n>       pad each telemetry JSON payload to about n bytes (default: no padding)
  --jitter <0..1>           publish interval jitter (default 0.2)
  --rate-spread <0..1>      each device's rate is --rate times a fixed factor in [1-s, 1+s] (default 0)
  --ramp-ms <ms>            spread device connects over this long (default min(devices*2, 5000))
  --clean <true|false>      MQTT clean session of every device (default true)
  --persistent <0..1>       share of devices with persistent sessions (clean=false, subscribed to
                            <topic-prefix>/<device>/cmd at QoS 1); instead of --clean
  --keepalive <s>           MQTT keepalive in seconds, 0 = off (default 30)
  --offline-rate <n>        offline episodes per device per minute (link lost, no DISCONNECT) (default 0)
  --offline-ms <ms>         mean length of an offline episode (50..150 %) (default 10000)
  --storm-every <s>         every s seconds all connected devices drop their connection at once and reconnect
  --commands                devices act on Ferry's downlink: commands on commands/<id>/# (config/set {"rate":n},
                            offline {"ms":n}) and RPCs getConfig and reboot on devices/<id>/rpc/request/+/json
  --fetch-config            devices ask the cloud for their configuration at start (Ferry's requests from devices:
                            requests/<id>/config/get/<n>; a 200 answer {"rate":n} sets their rate)
  --backoff-max-ms <ms>     longest reconnect backoff; it starts at 500 ms and doubles, ±20 % jitter (default 10000)
  --max-pending <n>         with --rate > 0, a device with n unacked messages skips producing (default 1000)
  --seed <n>                seed of the random choices (default: random, printed at start)
  --ledger <file>           write the ack ledger to this file at exit and every --ledger-interval seconds
  --ledger-interval <s>     (default 5)
  -h, --help                show this help

Devices keep producing while disconnected (mqtt.js queues the messages and resends unacknowledged QoS 1/2 after
reconnecting). Prints one status line per second and a summary on exit (Ctrl-C, --duration or --count reached).
Exit code: 0 on a normal run, 1 when the final ledger write failed, 2 on bad arguments.`

const VERIFY_USAGE = `Usage: firmware-sim verify --ledger <file> [options]

Reads the JetStream stream once (an ordered consumer on <subject-prefix>.up.>, in stream order), reduces every
message to (device, seq) by its Content-Type (application/cbor, application/json, application/octet-stream: FSIM
header or JSON text), and compares with the ledger written by \`firmware-sim run --ledger <file>\`:
  lost          acknowledged to the device, not in the stream
  duplicates    in the stream more than once
  out-of-order  an acknowledged message stored after a higher acknowledged seq of the same device
  unknown       in the stream, not acknowledged (QoS 0, or in flight when the run ended): fine for at-least-once
  corrupt       a binary payload whose body checksum does not match its FSIM header

Options:
  --nats-url <url>          NATS server URL(s), comma separated (default nats://127.0.0.1:4222)
  --stream <name>           JetStream stream (default FERRY)
  --subject-prefix <s>      Ferry's --subject-prefix (default ferry)
  --partitions <n>          Ferry's --partitions (default 0: subjects without a partition token); with n > 0 every
                            message must be in its device's partition (CRC-32 of the id mod n), else it fails
  --ledger <file>           ledger file of the run (required)
  --json                    print the full report (every device) as JSON
  --max-devices <n>         devices with findings listed in the text report (default 20)
  -h, --help                show this help

Exit code: 0 when nothing was lost, duplicated or corrupted (or outside its partition); 1 when something was; 2 on bad arguments;
3 when the ledger or the stream cannot be read.`

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

const SIZE_UNITS: Record<string, number> = { '': 1, b: 1, k: 1000, kb: 1000, kib: 1024, m: 1e6, mb: 1e6, mib: 1024 * 1024 }

function size(name: string, raw: string): number {
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-z]*)\s*$/i.exec(raw)
  const unit = SIZE_UNITS[(m?.[2] ?? '').toLowerCase()]
  if (m === null || unit === undefined) throw new UsageError(`--${name}: "${raw}" is not a size (e.g. 8192, 8KiB, 1MiB)`)
  const v = Math.round(Number(m[1]) * unit)
  return v
}

/** `a=1,b=2` with keys from `keys`; every problem named. */
function weights<K extends string>(name: string, raw: string, keys: readonly K[]): Partial<Record<K, number>> {
  const out: Partial<Record<K, number>> = {}
  for (const part of raw.split(',')) {
    const [k, w, extra] = part.split('=').map((s) => s.trim())
    const key = keys.find((x) => x === k)
    if (key === undefined) throw new UsageError(`--${name}: unknown name "${k ?? ''}" in "${raw}", expected one of ${keys.join(', ')}`)
    if (extra !== undefined) throw new UsageError(`--${name}: "${part}" is not name=weight`)
    const v = w === undefined ? 1 : Number(w)
    if (w === '' || !Number.isFinite(v) || v < 0) throw new UsageError(`--${name}: weight of ${key} must be a number >= 0, got "${w ?? ''}"`)
    if (out[key] !== undefined) throw new UsageError(`--${name}: ${key} given twice`)
    out[key] = v
  }
  if (!Object.values<number | undefined>(out).some((v) => (v ?? 0) > 0)) throw new UsageError(`--${name}: at least one weight must be > 0`)
  return out
}

function bool(name: string, raw: string): boolean {
  if (raw !== 'true' && raw !== 'false') throw new UsageError(`--${name} must be true or false, got "${raw}"`)
  return raw === 'true'
}

/** Parsed flags: `str(name)` is the value of a string flag, `on(name)` whether a boolean flag was given. */
interface Flags {
  str(name: string): string | undefined
  on(name: string): boolean
}

function parseStrict(argv: string[], options: NonNullable<ParseArgsConfig['options']>): Flags {
  let values: Record<string, string | boolean | (string | boolean)[] | undefined>
  try {
    values = parseArgs({ args: argv, strict: true, allowPositionals: false, options }).values
  } catch (err) {
    throw new UsageError(err instanceof Error ? err.message : String(err))
  }
  return {
    str: (name) => {
      const v = values[name]
      return typeof v === 'string' ? v : undefined
    },
    on: (name) => values[name] === true,
  }
}

interface RunConfig {
  fleet: FleetOptions
  durationSec: number | undefined
  ledgerPath: string | undefined
  ledgerIntervalSec: number
  seed: number
}

function parseRun(argv: string[]): RunConfig | 'help' {
  const flags = parseStrict(argv, {
    url: { type: 'string' },
    devices: { type: 'string' },
    rate: { type: 'string' },
    inflight: { type: 'string' },
    qos: { type: 'string' },
    'qos-mix': { type: 'string' },
    profile: { type: 'string' },
    'large-bytes': { type: 'string' },
    count: { type: 'string' },
    duration: { type: 'string' },
    'topic-prefix': { type: 'string' },
    'id-prefix': { type: 'string' },
    'payload-bytes': { type: 'string' },
    jitter: { type: 'string' },
    'rate-spread': { type: 'string' },
    'ramp-ms': { type: 'string' },
    clean: { type: 'string' },
    persistent: { type: 'string' },
    keepalive: { type: 'string' },
    'offline-rate': { type: 'string' },
    'offline-ms': { type: 'string' },
    'storm-every': { type: 'string' },
    commands: { type: 'boolean' },
    'fetch-config': { type: 'boolean' },
    'backoff-max-ms': { type: 'string' },
    'max-pending': { type: 'string' },
    seed: { type: 'string' },
    ledger: { type: 'string' },
    'ledger-interval': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  })
  if (flags.on('help')) return 'help'
  const str = (name: string): string | undefined => flags.str(name)

  const qosNum = num('qos', str('qos'), { int: true, min: 0, max: 2 }) ?? 1
  const qos: QoS = qosNum === 0 ? 0 : qosNum === 2 ? 2 : 1
  const clean = str('clean') === undefined ? true : bool('clean', str('clean') ?? '')
  const persistent = num('persistent', str('persistent'), { min: 0, max: 1 })
  if (persistent !== undefined && str('clean') !== undefined) throw new UsageError('give either --clean or --persistent, not both')
  const seed = num('seed', str('seed'), { int: true, min: 0, max: 2 ** 32 - 1 }) ?? Math.floor(Math.random() * 2 ** 32)
  const fleet: FleetOptions = {
    devices: num('devices', str('devices'), { int: true, min: 1 }) ?? 10,
    ratePerDevice: num('rate', str('rate'), { min: 0 }) ?? 1,
    qos,
    clean,
    seed,
  }
  if (str('url') !== undefined) fleet.url = str('url')
  const inflight = num('inflight', str('inflight'), { int: true, min: 1 })
  if (inflight !== undefined) fleet.inflight = inflight
  const qosMix = str('qos-mix')
  if (qosMix !== undefined) {
    const w = weights('qos-mix', qosMix, ['0', '1', '2'] as const)
    const mix: QosWeights = {}
    if (w['0'] !== undefined) mix[0] = w['0']
    if (w['1'] !== undefined) mix[1] = w['1']
    if (w['2'] !== undefined) mix[2] = w['2']
    fleet.qosMix = mix
  }
  const profile = str('profile')
  if (profile !== undefined) fleet.profiles = weights<ProfileName>('profile', profile, PROFILE_NAMES)
  const largeBytes = str('large-bytes')
  if (largeBytes !== undefined) {
    const parts = largeBytes.split('-')
    const lo = size('large-bytes', parts[0] ?? '')
    const hi = size('large-bytes', parts[1] ?? parts[0] ?? '')
    if (parts.length > 2 || lo < 64 || hi < lo || hi > MAX_LARGE_BYTES) {
      throw new UsageError(`--large-bytes must be MIN-MAX with 64 <= MIN <= MAX <= ${MAX_LARGE_BYTES}, got "${largeBytes}"`)
    }
    fleet.largeBytes = [lo, hi]
  }
  const count = num('count', str('count'), { int: true, min: 1 })
  if (count !== undefined) fleet.count = count
  if (str('topic-prefix') !== undefined) fleet.topicPrefix = str('topic-prefix')
  if (str('id-prefix') !== undefined) fleet.idPrefix = str('id-prefix')
  const payloadBytes = num('payload-bytes', str('payload-bytes'), { int: true, min: 0 })
  if (payloadBytes !== undefined) fleet.payloadBytes = payloadBytes
  const jitter = num('jitter', str('jitter'), { min: 0, max: 1 })
  if (jitter !== undefined) fleet.jitter = jitter
  const rateSpread = num('rate-spread', str('rate-spread'), { min: 0, max: 1 })
  if (rateSpread !== undefined) fleet.rateSpread = rateSpread
  const rampMs = num('ramp-ms', str('ramp-ms'), { min: 0 })
  if (rampMs !== undefined) fleet.rampMs = rampMs
  if (persistent !== undefined) fleet.persistentShare = persistent
  const keepalive = num('keepalive', str('keepalive'), { int: true, min: 0, max: 65535 })
  if (keepalive !== undefined) fleet.keepaliveSec = keepalive
  const offlineRate = num('offline-rate', str('offline-rate'), { min: 0 })
  if (offlineRate !== undefined) fleet.offlinePerMin = offlineRate
  const offlineMs = num('offline-ms', str('offline-ms'), { min: 0 })
  if (offlineMs !== undefined) fleet.offlineMs = offlineMs
  const stormEvery = num('storm-every', str('storm-every'), { min: 0.1 })
  if (stormEvery !== undefined) fleet.stormEveryMs = stormEvery * 1000
  const backoffMax = num('backoff-max-ms', str('backoff-max-ms'), { int: true, min: 500 })
  if (backoffMax !== undefined) fleet.backoffMaxMs = backoffMax
  const maxPending = num('max-pending', str('max-pending'), { int: true, min: 1 })
  if (maxPending !== undefined) fleet.maxPending = maxPending
  if (flags.on('commands')) fleet.commands = true
  if (flags.on('fetch-config')) fleet.fetchConfig = true
  const durationSec = num('duration', str('duration'), { min: 0 })
  const ledgerIntervalSec = num('ledger-interval', str('ledger-interval'), { min: 0.1 }) ?? 5
  return { fleet, durationSec, ledgerPath: str('ledger'), ledgerIntervalSec, seed }
}

const ms = (v: number): string => (v >= 100 ? v.toFixed(0) : v >= 10 ? v.toFixed(1) : v.toFixed(2))
const lat = (l: LatencySummary): string => `p50 ${ms(l.p50)}ms p99 ${ms(l.p99)}ms`
const mib = (bytes: number): string => (bytes / (1024 * 1024)).toFixed(0)

async function run(cfg: RunConfig): Promise<number> {
  const o = cfg.fleet
  const profileText =
    o.profiles === undefined
      ? 'compact telemetry'
      : PROFILE_NAMES.filter((p) => (o.profiles?.[p] ?? 0) > 0)
          .map((p) => `${p}=${o.profiles?.[p] ?? 0}`)
          .join(',')
  const qosText = o.qosMix === undefined ? `qos ${o.qos ?? 1}` : `qos-mix ${Object.entries(o.qosMix).map(([k, v]) => `${k}=${v}`).join(',')}`
  console.log(
    `firmware-sim: ${o.devices} devices -> ${o.url ?? 'mqtt://127.0.0.1:1883'}, ` +
      `rate ${o.ratePerDevice === 0 ? `max (inflight ${o.inflight ?? 10})` : `${o.ratePerDevice}/s`} per device, ` +
      `${qosText}, profile ${profileText}, ` +
      (o.persistentShare !== undefined ? `persistent ${o.persistentShare}` : `clean ${String(o.clean ?? true)}`) +
      (o.count !== undefined ? `, count ${o.count}` : '') +
      (cfg.durationSec !== undefined ? `, duration ${cfg.durationSec}s` : '') +
      (o.offlinePerMin !== undefined ? `, offline ${o.offlinePerMin}/min for ~${o.offlineMs ?? 10_000}ms` : '') +
      (o.stormEveryMs !== undefined ? `, storm every ${o.stormEveryMs / 1000}s` : '') +
      `, seed ${cfg.seed}` +
      (cfg.ledgerPath !== undefined ? `, ledger ${cfg.ledgerPath}` : ''),
  )

  if (cfg.ledgerPath !== undefined) {
    // Fail now, not after the run, when the ledger cannot be written there.
    try {
      await writeLedgerFile(cfg.ledgerPath, new Ledger())
    } catch (err) {
      console.error(`firmware-sim run: cannot write --ledger ${cfg.ledgerPath}: ${(err as Error).message}`)
      return 2
    }
  }
  let fleet: Fleet
  try {
    fleet = startFleet(o)
  } catch (err) {
    if (!(err instanceof RangeError)) throw err
    console.error(`firmware-sim run: ${err.message}\nRun with --help for usage.`)
    return 2
  }
  const t0 = performance.now()
  let prev = fleet.stats()
  let prevAt = t0
  let rssPeak = process.memoryUsage.rss()

  const status = setInterval(() => {
    const now = performance.now()
    const s = fleet.stats()
    const dt = (now - prevAt) / 1000
    const w = fleet.ackLatencyWindow()
    const rss = process.memoryUsage.rss()
    if (rss > rssPeak) rssPeak = rss
    console.log(
      `[${((now - t0) / 1000).toFixed(0).padStart(4)}s] connected ${s.connected}/${s.devices}` +
        (s.offline > 0 || s.offlineEpisodes > 0 ? ` offline ${s.offline}` : '') +
        `  sent/s ${((s.sent - prev.sent) / dt).toFixed(0)}  acked/s ${((s.acked - prev.acked) / dt).toFixed(0)}` +
        `  acked ${s.acked}  pending ${s.pending}  ack ${w.samples > 0 ? lat(w) : 'p50 - p99 -'}` +
        `  reconnects ${s.reconnects}  errors ${s.errors}  rss ${mib(rss)}MiB`,
    )
    prev = s
    prevAt = now
  }, 1000)

  // Periodic ledger writes, one at a time; a failure is reported once, the final write decides the exit code.
  let ledgerWrite: Promise<void> = Promise.resolve()
  let ledgerErrors = 0
  const ledgerTimer =
    cfg.ledgerPath === undefined
      ? undefined
      : setInterval(() => {
          const path = cfg.ledgerPath ?? ''
          ledgerWrite = ledgerWrite
            .then(() => fleet.writeLedger(path))
            .catch((err: unknown) => {
              if (ledgerErrors++ === 0) console.error(`firmware-sim: cannot write ledger ${path}: ${(err as Error).message}`)
            })
        }, cfg.ledgerIntervalSec * 1000)

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
  if (ledgerTimer !== undefined) clearInterval(ledgerTimer)

  const countDone = o.count !== undefined && fleet.ledger.size + fleet.stats().sentByQos[0] >= o.devices * o.count
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
  await fleet.close()
  let code = 0
  if (cfg.ledgerPath !== undefined) {
    await ledgerWrite
    try {
      await fleet.writeLedger(cfg.ledgerPath)
    } catch (err) {
      console.error(`firmware-sim: cannot write ledger ${cfg.ledgerPath}: ${(err as Error).message}`)
      code = 1
    }
  }

  console.log(`\nsummary (${reason}) after ${elapsed.toFixed(1)}s:`)
  console.log(
    `  devices ${s.devices}  connected at end ${s.connected}  reconnects ${s.reconnects}  errors ${s.errors} (publish ${s.publishErrors})` +
      `  offline episodes ${s.offlineEpisodes}  storms ${s.storms}  unacked at drop ${s.unackedAtDrop}  qos0 dropped ${s.qos0Dropped}`,
  )
  console.log(
    `  sent ${s.sent} (${(s.sent / elapsed).toFixed(1)}/s, ${mib(s.bytesSent)} MiB)  acked ${s.acked} (${(s.acked / elapsed).toFixed(1)}/s)` +
      `  unacked ${s.pending}  skipped ${s.skipped}`,
  )
  console.log(
    `  by qos: 0=${s.sentByQos[0]} 1=${s.sentByQos[1]} 2=${s.sentByQos[2]}  by profile: ` +
      PROFILE_NAMES.map((p) => `${p}=${s.sentByProfile[p]}`).join(' '),
  )
  console.log(
    `  ack latency (qos>=1): p50 ${ms(s.ackLatencyMs.p50)}ms  p99 ${ms(s.ackLatencyMs.p99)}ms  max ${ms(s.ackLatencyMs.max)}ms`,
  )
  let complete = 0
  if (o.count !== undefined) for (const id of fleet.deviceIds) if (ledger.countFor(id) >= o.count) complete++
  console.log(
    `  ledger: ${ledger.size} distinct (device, seq) acked (QoS 1/2), ${ledger.duplicates} duplicate acks` +
      (o.count !== undefined && s.sentByQos[0] === 0 ? `, ${complete}/${s.devices} devices complete` : '') +
      (cfg.ledgerPath !== undefined ? `, written to ${cfg.ledgerPath}` : ''),
  )
  console.log(`  rss peak ${mib(rssPeak)} MiB`)
  return code
}

interface VerifyConfig {
  natsUrl: string
  stream: string
  subjectPrefix: string
  partitions: number
  ledgerPath: string
  json: boolean
  maxDevices: number
}

function parseVerify(argv: string[]): VerifyConfig | 'help' {
  const flags = parseStrict(argv, {
    'nats-url': { type: 'string' },
    stream: { type: 'string' },
    'subject-prefix': { type: 'string' },
    partitions: { type: 'string' },
    ledger: { type: 'string' },
    json: { type: 'boolean' },
    'max-devices': { type: 'string' },
    help: { type: 'boolean', short: 'h' },
  })
  if (flags.on('help')) return 'help'
  const ledgerPath = flags.str('ledger')
  if (ledgerPath === undefined || ledgerPath === '') throw new UsageError('verify needs --ledger <file> (written by firmware-sim run --ledger <file>)')
  const stream = flags.str('stream') ?? 'FERRY'
  const subjectPrefix = flags.str('subject-prefix') ?? 'ferry'
  if (stream === '' || /[\s.*>]/.test(stream)) throw new UsageError(`--stream must be a stream name (no spaces, '.', '*', '>'), got "${stream}"`)
  if (subjectPrefix === '' || /[\s*>]/.test(subjectPrefix)) throw new UsageError(`--subject-prefix must be subject tokens without wildcards, got "${subjectPrefix}"`)
  return {
    natsUrl: flags.str('nats-url') ?? 'nats://127.0.0.1:4222',
    stream,
    subjectPrefix,
    partitions: num('partitions', flags.str('partitions'), { int: true, min: 0, max: 1024 }) ?? 0,
    ledgerPath,
    json: flags.on('json'),
    maxDevices: num('max-devices', flags.str('max-devices'), { int: true, min: 0 }) ?? 20,
  }
}

async function verify(cfg: VerifyConfig): Promise<number> {
  let ledger
  try {
    ledger = await readLedgerFile(cfg.ledgerPath)
  } catch (err) {
    if (err instanceof LedgerFileError) {
      console.error(`firmware-sim verify: ${err.message}`)
      return 3
    }
    throw err
  }
  let report
  try {
    report = await verifyStream({
      natsUrl: cfg.natsUrl,
      stream: cfg.stream,
      subjectPrefix: cfg.subjectPrefix,
      partitions: cfg.partitions,
      ledger,
      onProgress: (read, total) => console.error(`  read ${read} of ${total} messages...`),
    })
  } catch (err) {
    console.error(`firmware-sim verify: ${err instanceof VerifyError ? err.message : `cannot read the stream: ${(err as Error).message}`}`)
    return 3
  }
  if (cfg.json) console.log(JSON.stringify({ ledger: cfg.ledgerPath, ...report }, null, 2))
  else console.log(`ledger ${cfg.ledgerPath}: ${ledger.size} acked messages of ${[...ledger.allDevices()].length} devices\n${formatReport(report, cfg.maxDevices)}`)
  return report.ok ? 0 : 1
}

function main(argv: string[]): void {
  let command = 'run'
  let rest = argv
  const first = argv[0]
  if (first !== undefined && !first.startsWith('-')) {
    if (first !== 'run' && first !== 'verify') {
      console.error(`firmware-sim: unknown command "${first}", expected run or verify\nRun with --help for usage.`)
      process.exit(2)
    }
    command = first
    rest = argv.slice(1)
  }
  let job: () => Promise<number>
  try {
    if (command === 'verify') {
      const cfg = parseVerify(rest)
      if (cfg === 'help') {
        console.log(VERIFY_USAGE)
        return
      }
      job = () => verify(cfg)
    } else {
      const cfg = parseRun(rest)
      if (cfg === 'help') {
        console.log(first === 'run' ? RUN_USAGE : `${USAGE}\n\n${RUN_USAGE}`)
        return
      }
      job = () => run(cfg)
    }
  } catch (err) {
    if (err instanceof UsageError) {
      console.error(`firmware-sim ${command}: ${err.message}\nRun with ${command === 'verify' ? 'verify ' : ''}--help for usage.`)
      process.exit(2)
    }
    throw err
  }
  job().then(
    (code) => process.exit(code),
    (err: unknown) => {
      console.error('firmware-sim: fatal:', err instanceof Error ? (err.stack ?? err.message) : String(err))
      process.exit(1)
    },
  )
}

main(process.argv.slice(2))
