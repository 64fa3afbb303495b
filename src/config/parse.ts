// Turns raw values (file, environment, flags) into a validated, frozen Config, reporting every problem at once.
import { topicFilterProblem } from '../codec/topic-filter.js'
import { ConfigError } from '../errors.js'
import { DIR_RESERVE_BYTES, frameBytes, SEAL_FRAME_BYTES, SEGMENT_HEADER_BYTES } from '../log/format.js'
import { OPTIONS, PRIORITY_CLASSES } from './schema.js'
import type { Config, DrainMaxRate, OptionSpec, PriorityClass, PriorityRule, TtlRule } from './schema.js'

/** Where a raw value came from, for error messages. */
export type Source = 'flag' | 'env' | 'file' | 'default'

/** A raw value and its source, by option key. */
export type RawValues = Map<string, { value: unknown; source: Source }>

const UNITS: Record<string, number> = {
  b: 1,
  k: 1000, kb: 1000, m: 1e6, mb: 1e6, g: 1e9, gb: 1e9, t: 1e12, tb: 1e12,
  kib: 1024, mib: 1024 ** 2, gib: 1024 ** 3, tib: 1024 ** 4,
}

/** Parses `512MiB`, `2GiB`, `64KiB`, `1GB` (decimal), `1048576`. Undefined when not a size. */
export function parseBytes(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) ? v : undefined
  if (typeof v !== 'string') return undefined
  const m = /^\s*(\d+(?:\.\d+)?)\s*([a-zA-Z]*)\s*$/.exec(v)
  if (!m) return undefined
  const unit = (m[2] ?? '').toLowerCase()
  const mult = unit === '' ? 1 : UNITS[unit]
  if (mult === undefined) return undefined
  const n = Number(m[1]) * mult
  return Number.isInteger(n) ? n : undefined
}

/** Milliseconds per duration unit. */
const DURATION_UNIT_MS = { ms: 1, s: 1000, m: 60_000, h: 3_600_000, d: 86_400_000 } as const
export type DurationUnit = keyof typeof DURATION_UNIT_MS

/** The units of configuration durations (no days: no option is that long). */
const CONFIG_DURATION_UNITS: readonly DurationUnit[] = ['ms', 's', 'm', 'h']

/**
 * Parses a non-negative number with an optional unit among `units` (`1500ms`, `10s`, `2.5m`; none: milliseconds),
 * rounded to whole milliseconds. Undefined when the text is not one. The one duration syntax of Ferry:
 * configuration values and a command's TTL header (which also allows `d`) both use it.
 */
export function parseDurationMs(v: string, units: readonly DurationUnit[]): number | undefined {
  const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h|d)?\s*$/.exec(v)
  const unit = (m?.[2] ?? 'ms') as DurationUnit
  if (!m || !units.includes(unit)) return undefined
  return Math.round(Number(m[1]) * DURATION_UNIT_MS[unit])
}

/** Parses `10s`, `1500ms`, `2m`, `1h`, or a bare number of milliseconds. Undefined when not a duration. */
export function parseDuration(v: unknown): number | undefined {
  if (typeof v === 'number') return Number.isInteger(v) ? v : undefined
  if (typeof v !== 'string') return undefined
  return parseDurationMs(v, CONFIG_DURATION_UNITS)
}

/**
 * Parses a time in seconds: `2`, `0.5`, or with a unit `500ms`, `2s`, `1m` (a number in a config
 * file is seconds too), to whole milliseconds. Undefined when not one, and for a positive time that
 * rounds to 0 ms (0 means "off" where this kind is used).
 */
export function parseSeconds(v: unknown): number | undefined {
  let ms: number | undefined
  if (typeof v === 'number') ms = Number.isFinite(v) && v >= 0 ? v * 1000 : undefined
  else if (typeof v !== 'string') return undefined
  else if (/^\s*\d+(?:\.\d+)?\s*$/.test(v)) ms = Number(v) * 1000
  else {
    // With a unit: parsed unrounded, so that a positive value under 1 ms is seen as such.
    const m = /^\s*(\d+(?:\.\d+)?)\s*(ms|s|m|h)\s*$/.exec(v)
    ms = m ? Number(m[1]) * DURATION_UNIT_MS[m[2] as DurationUnit] : undefined
  }
  // A positive time under 1 ms would round to 0, which means "off": refused instead.
  if (ms === undefined || (ms > 0 && ms < 0.5)) return undefined
  return Math.round(ms)
}

function describe(spec: OptionSpec): string {
  switch (spec.kind) {
    case 'int':
      return `an integer in [${spec.min}, ${spec.max}]`
    case 'bytes':
      return `a size in [${spec.min}, ${spec.max}] bytes (a number, or with a unit: KiB, MiB, GiB)`
    case 'duration':
      return `a duration from ${spec.min} ms to ${spec.max} ms (e.g. 10s, 1500ms, 2m; a bare number is milliseconds)`
    case 'seconds':
      return `a time from ${(spec.min ?? 0) / 1000} to ${(spec.max ?? 0) / 1000} seconds: a number of seconds (e.g. 2 or 0.5) or with a unit (e.g. 500ms, 2s)`
    case 'bool':
      return 'one of true, false, on, off'
    case 'enum':
      return `one of ${spec.values?.map((v) => `"${v}"`).join(', ')}`
    case 'hostport':
      return spec.default === '' ? 'HOST:PORT with a port in [0, 65535], or empty for off' : 'HOST:PORT with a port in [0, 65535]'
    case 'urls':
      return 'one or more nats:// URLs, comma separated'
    case 'topics':
      return 'MQTT topic filters, comma separated ("+" and "#" as whole levels, "#" last)'
    case 'string':
      return 'a non-empty string'
  }
}

/** The userinfo part of a URL (`user:pass` in nats://user:pass@host), undefined when there is none. */
function urlUserinfo(u: string): string | undefined {
  // With or without a scheme: `user:pass@host:4222` and `token@host:4222` hold credentials too.
  const m = /^(?:[a-z]+:\/\/)?([^/?#]*)@/i.exec(u)
  return m?.[1]
}

/** A URL with any userinfo replaced, for messages. */
function redactUrl(u: string): string {
  return urlUserinfo(u) === undefined ? u : u.replace(/^((?:[a-z]+:\/\/)?)[^/?#]*@/i, '$1<redacted>@')
}

/**
 * A rejected value as it may be printed: secret options show only the type of what was given (a YAML password that parses as a
 * number must not reach the journal), URLs lose their userinfo.
 */
function shown(spec: OptionSpec, value: unknown): string {
  if (spec.secret) return `${value === null ? 'null' : Array.isArray(value) ? 'a list' : `a ${typeof value}`} (value redacted)`
  if (spec.kind === 'urls') {
    if (typeof value === 'string') return JSON.stringify(value.split(',').map(redactUrl).join(','))
    if (Array.isArray(value)) return JSON.stringify(value.map((u: unknown) => (typeof u === 'string' ? redactUrl(u) : u)))
  }
  return JSON.stringify(value)
}

function where(key: string, spec: OptionSpec, source: Source): string {
  if (source === 'flag') return `'${key}' (flag ${spec.flag})`
  if (source === 'env') return `'${key}' (environment ${spec.env})`
  if (source === 'file') return `'${key}' (config file)`
  return `'${key}'`
}

function convert(spec: OptionSpec, v: unknown): unknown {
  switch (spec.kind) {
    case 'int': {
      const n = typeof v === 'number' ? v : typeof v === 'string' && /^\s*-?\d+\s*$/.test(v) ? Number(v) : NaN
      return Number.isInteger(n) && n >= (spec.min ?? -Infinity) && n <= (spec.max ?? Infinity) ? n : undefined
    }
    case 'bytes': {
      const n = parseBytes(v)
      return n !== undefined && n >= (spec.min ?? 0) && n <= (spec.max ?? Infinity) ? n : undefined
    }
    case 'seconds': {
      const n = parseSeconds(v)
      return n !== undefined && n >= (spec.min ?? 0) && n <= (spec.max ?? Infinity) ? n : undefined
    }
    case 'duration': {
      const n = parseDuration(v)
      return n !== undefined && n >= (spec.min ?? 0) && n <= (spec.max ?? Infinity) ? n : undefined
    }
    case 'bool':
      if (typeof v === 'boolean') return v
      if (typeof v === 'string' && /^(true|on|yes|1)$/i.test(v.trim())) return true
      if (typeof v === 'string' && /^(false|off|no|0)$/i.test(v.trim())) return false
      return undefined
    case 'enum':
      return typeof v === 'string' && spec.values?.includes(v) ? v : undefined
    case 'hostport': {
      if (typeof v !== 'string') return undefined
      if (v.trim() === '' && spec.default === '') return null // an optional listener, off
      const m = /^(\[[^\]]+\]|[^:]+):(\d{1,5})$/.exec(v.trim())
      if (!m) return undefined
      const port = Number(m[2])
      if (port > 65535) return undefined
      return { host: (m[1] ?? '').replace(/^\[|\]$/g, ''), port }
    }
    case 'urls': {
      const list = Array.isArray(v) ? v : typeof v === 'string' ? v.split(',') : undefined
      if (!list || list.length === 0) return undefined
      const urls = list.map((u) => (typeof u === 'string' ? u.trim() : ''))
      return urls.every((u) => /^(nats|tls|wss?):\/\/[^\s]+$/.test(u) || /^[^\s/:@]+:\d+$/.test(u)) ? urls : undefined
    }
    case 'topics': {
      const list = Array.isArray(v) ? v : typeof v === 'string' ? (v.trim() === '' ? [] : v.split(',')) : undefined
      if (!list || !list.every((f) => typeof f === 'string')) return undefined
      const filters = list.map((f) => f.trim())
      return filters.every((f) => topicFilterProblem(f) === undefined) ? filters : undefined
    }
    case 'string':
      return typeof v === 'string' && (v.length > 0 || spec.default === '') ? v : undefined
  }
}

function setPath(obj: Record<string, unknown>, key: string, value: unknown): void {
  const parts = key.split('.')
  let o = obj
  for (let i = 0; i < parts.length - 1; i++) {
    const p = parts[i]!
    o[p] ??= {}
    o = o[p] as Record<string, unknown>
  }
  o[parts[parts.length - 1]!] = value
}

function deepFreeze<T>(o: T): T {
  if (o && typeof o === 'object') {
    for (const v of Object.values(o)) deepFreeze(v)
    Object.freeze(o)
  }
  return o
}

const TOKEN = /^[^\s.*>]+$/

const MiB = 1024 * 1024
/** Bounds of the segment size Ferry derives from --log-max-bytes when --log-segment-bytes is not given. */
export const SEGMENT_DERIVED_MIN = 1 * MiB
export const SEGMENT_DERIVED_MAX = 64 * MiB - 4096

/**
 * The segment size used when --log-segment-bytes is not given: an eighth of what the bound leaves
 * beside the data directory's other files (DIR_RESERVE_BYTES), rounded down to 4 KiB, so eight
 * whole segments and those files fit in it (disk is reclaimed in whole segments: an eighth wastes
 * little); at least 1 MiB (a default --max-record-bytes publish fits in one), at most 64 MiB less
 * 4 KiB (so the default bound, 1 GiB, still holds 16 segments, as with 64 MiB before the reserve).
 */
export function derivedSegmentBytes(maxBytes: number): number {
  const eighth = Math.floor((maxBytes - DIR_RESERVE_BYTES) / 8 / 4096) * 4096
  return Math.min(SEGMENT_DERIVED_MAX, Math.max(SEGMENT_DERIVED_MIN, eighth))
}

/**
 * Validates raw values (missing keys take defaults) and returns a frozen Config. Throws one
 * ConfigError listing every problem: unknown keys, wrong types, out-of-range values and
 * cross-field rules.
 */
export function parseConfig(raw: RawValues, defaultGatewayId: string): Config {
  const problems: string[] = []
  const out: Record<string, unknown> = {}
  const known = new Set(OPTIONS.map((o) => o.key))
  for (const [key, { source }] of raw) {
    if (!known.has(key)) problems.push(`unknown option '${key}' (${source}); see 'ferry run --help' for the list`)
  }
  for (const spec of OPTIONS) {
    const r = raw.get(spec.key)
    const value = r?.value ?? spec.default
    const converted = convert(spec, value)
    if (converted === undefined) {
      problems.push(`${where(spec.key, spec, r?.source ?? 'default')} must be ${describe(spec)}, got ${shown(spec, value)}`)
      continue
    }
    if (spec.kind === 'urls') {
      const withCredentials = (converted as string[]).filter((u) => urlUserinfo(u) !== undefined)
      if (withCredentials.length > 0) {
        problems.push(
          `${where(spec.key, spec, r?.source ?? 'default')} must not contain credentials, got ${withCredentials.map((u) => JSON.stringify(redactUrl(u))).join(', ')}: give them with --nats-user and --nats-password, or --nats-token (FERRY_NATS_USER, FERRY_NATS_PASSWORD, FERRY_NATS_TOKEN)`,
        )
        continue
      }
    }
    if (spec.kind === 'hostport') {
      setPath(out, spec.key.split('.')[0]!, converted)
    } else {
      setPath(out, spec.key, converted)
    }
  }
  if (problems.length > 0) throw new ConfigError(problems)
  const c = out as unknown as Config & { gatewayId: string }
  if (c.gatewayId === '') c.gatewayId = defaultGatewayId.replace(/[^A-Za-z0-9_-]/g, '-') || 'ferry'
  if (!/^[A-Za-z0-9_-]{1,64}$/.test(c.gatewayId)) {
    problems.push(`'gatewayId' must be 1-64 letters, digits, "-" or "_", got ${JSON.stringify(c.gatewayId)}`)
  }
  const { log, nats } = c
  // Without --log-segment-bytes the segment size follows from the bound, so a small bound works on its own.
  const derived = raw.get('log.segmentBytes')?.value == null
  if (derived) (log as { segmentBytes: number }).segmentBytes = derivedSegmentBytes(log.maxBytes)
  const seg = derived ? `${log.segmentBytes}, derived from 'log.maxBytes': an eighth, at least ${SEGMENT_DERIVED_MIN}` : `${log.segmentBytes}`
  // The bound holds the data directory: segments, and DIR_RESERVE_BYTES for the checkpoint, lock and
  // directories. A segment size given explicitly needs only two segments, as before the reserve: a
  // config written to the old rule keeps starting, and the log keeps what room is left (ring-log.ts).
  const least = 2 * log.segmentBytes + (derived ? DIR_RESERVE_BYTES : 0)
  if (log.maxBytes < least) {
    problems.push(
      derived
        ? `'log.maxBytes' (${log.maxBytes}) must be at least 2 x 'log.segmentBytes' (${seg}) + ${DIR_RESERVE_BYTES} for the checkpoint and directories: raise --log-max-bytes to at least ${least}, or give --log-segment-bytes (and a --max-record-bytes that fits in it)`
        : `'log.maxBytes' (${log.maxBytes}) must be at least 2 x 'log.segmentBytes' (${seg}), and ${DIR_RESERVE_BYTES} more to keep the checkpoint and directories within it; lower --log-segment-bytes or raise --log-max-bytes`,
    )
  }
  if (frameBytes(log.maxRecordBytes) > log.segmentBytes - SEGMENT_HEADER_BYTES - SEAL_FRAME_BYTES) {
    problems.push(`'log.maxRecordBytes' (${log.maxRecordBytes}) must fit in one segment: at most ${log.segmentBytes - SEGMENT_HEADER_BYTES - SEAL_FRAME_BYTES - 32} for 'log.segmentBytes' (${seg})`)
  }
  if (!nats.subjectPrefix.split('.').every((t) => TOKEN.test(t))) {
    problems.push(`'nats.subjectPrefix' must be NATS subject tokens separated by "." without spaces or wildcards, got ${JSON.stringify(nats.subjectPrefix)}`)
  }
  if (!/^[^\s.*>/\\]+$/.test(nats.stream)) {
    problems.push(`'nats.stream' must be a stream name without spaces, ".", "*", ">", "/" or "\\", got ${JSON.stringify(nats.stream)}`)
  }
  problems.push(...bufferPolicyProblems(c))
  problems.push(...securityProblems(c))
  if (problems.length > 0) throw new ConfigError(problems)
  return deepFreeze(c)
}

const LOOPBACK = /^(127\.\d+\.\d+\.\d+|::1|localhost)$/

/** Whether `host` only accepts connections from this machine. */
export function isLoopback(host: string): boolean {
  return LOOPBACK.test(host)
}

/** Cross-field rules of the security options. */
function securityProblems(c: Config): string[] {
  const problems: string[] = []
  const { tls, auth, nats } = c
  if (c.mqtts && (!tls.cert || !tls.key)) problems.push(`'mqtts.listen' (--mqtts-listen) needs --tls-cert and --tls-key`)
  if (!c.mqtts && (tls.cert || tls.key || tls.ca || tls.requireClientCert)) problems.push(`--tls-cert, --tls-key, --tls-ca and --require-client-cert apply to the MQTTS listener: set --mqtts-listen HOST:PORT too`)
  if (tls.requireClientCert && !tls.ca) problems.push(`'tls.requireClientCert' (--require-client-cert) needs --tls-ca, the CA file that signs device certificates`)
  const identified = auth.file !== '' || tls.requireClientCert
  const exposed = [c.mqtt, ...(c.mqtts ? [c.mqtts] : [])].filter((l) => !isLoopback(l.host))
  if (exposed.length > 0 && !identified && !auth.allowAnonymous) {
    problems.push(
      `'mqtt.listen' ${exposed.map((l) => `${l.host}:${l.port}`).join(', ')} accepts connections from other machines but no authentication is configured: set --auth-file FILE (see 'ferry passwd'), or --require-client-cert, or --allow-anonymous to accept anyone (not recommended)`,
    )
  }
  if (auth.aclFile && !identified && !auth.allowAnonymous) {
    problems.push(`'auth.aclFile' (--acl-file) names devices, which needs --auth-file or --require-client-cert`)
  }
  const creds = [nats.token && '--nats-token', nats.user && '--nats-user', nats.nkeyFile && '--nats-nkey-file', nats.credsFile && '--nats-creds'].filter(Boolean)
  if (creds.length > 1) problems.push(`NATS credentials: use only one of ${creds.join(', ')}`)
  if ((nats.user === '') !== (nats.password === '')) problems.push(`'nats.user' and 'nats.password' (--nats-user, --nats-password) go together`)
  if ((nats.tlsCert === '') !== (nats.tlsKey === '')) problems.push(`'nats.tlsCert' and 'nats.tlsKey' (--nats-tls-cert, --nats-tls-key) go together`)
  return problems
}

/** Flattens a parsed config file (nested objects or dotted keys) into raw values. */
export function flattenFile(obj: unknown, problems: string[]): RawValues {
  const out: RawValues = new Map()
  const known = new Set(OPTIONS.map((o) => o.key))
  const walk = (o: unknown, prefix: string): void => {
    if (o === null || typeof o !== 'object' || Array.isArray(o)) {
      problems.push(`config file: expected an object${prefix ? ` at '${prefix}'` : ''}`)
      return
    }
    for (const [k, v] of Object.entries(o as Record<string, unknown>)) {
      const key = prefix ? `${prefix}.${k}` : k
      if (!known.has(key) && v !== null && typeof v === 'object' && !Array.isArray(v)) walk(v, key)
      else out.set(key, { value: v, source: 'file' })
    }
  }
  walk(obj, '')
  return out
}

/** Returns the config as plain JSON for the startup log, with secrets redacted. */
export function redactedConfig(c: Config): Record<string, unknown> {
  const copy = JSON.parse(JSON.stringify(c)) as Record<string, unknown>
  for (const spec of OPTIONS) {
    if (spec.secret && spec.key.split('.').reduce<unknown>((o, k) => (o as Record<string, unknown>)?.[k], c) !== '') setPath(copy, spec.key, '<redacted>')
  }
  return copy
}

/** Splits `FILTER=VALUE,FILTER=VALUE` (a config file may give a list of such strings). Undefined when not one. */
function ruleList(v: unknown): Array<[string, string]> | undefined {
  const items: unknown[] | undefined = Array.isArray(v) ? (v as unknown[]) : typeof v === 'string' ? (v.trim() === '' ? [] : v.split(',')) : undefined
  if (!items) return undefined
  const out: Array<[string, string]> = []
  for (const item of items) {
    if (typeof item !== 'string') return undefined
    const at = item.lastIndexOf('=')
    if (at <= 0) return undefined
    out.push([item.slice(0, at).trim(), item.slice(at + 1).trim()])
  }
  return out
}

/** Parses --priority. Problems name the rule and the fix. */
export function parsePriorityRules(v: unknown): { rules: PriorityRule[]; problems: string[] } {
  const problems: string[] = []
  const list = ruleList(v)
  if (!list) return { rules: [], problems: [`'log.priority' (--priority) must be FILTER=CLASS pairs, comma separated, CLASS one of ${PRIORITY_CLASSES.join(', ')} (e.g. alarms/#=high,+/+/telemetry=low), got ${JSON.stringify(v)}`] }
  const rules: PriorityRule[] = []
  for (const [filter, cls] of list) {
    const bad = topicFilterProblem(filter)
    if (bad) problems.push(`'log.priority' (--priority): topic filter ${JSON.stringify(filter)} ${bad}`)
    else if (!(PRIORITY_CLASSES as readonly string[]).includes(cls)) problems.push(`'log.priority' (--priority): class of ${JSON.stringify(filter)} must be one of ${PRIORITY_CLASSES.join(', ')}, got ${JSON.stringify(cls)}`)
    else rules.push({ filter, class: cls as PriorityClass })
  }
  return { rules, problems }
}

/** Parses --ttl (units ms, s, m, h, d; at least 1 s, at most 365 days). */
export function parseTtlRules(v: unknown): { rules: TtlRule[]; problems: string[] } {
  const problems: string[] = []
  const list = ruleList(v)
  if (!list) return { rules: [], problems: [`'log.ttl' (--ttl) must be FILTER=DURATION pairs, comma separated (e.g. telemetry/#=1h,+/status=10m), got ${JSON.stringify(v)}`] }
  const rules: TtlRule[] = []
  for (const [filter, d] of list) {
    const bad = topicFilterProblem(filter)
    const ms = parseDurationMs(d, ['ms', 's', 'm', 'h', 'd'])
    if (bad) problems.push(`'log.ttl' (--ttl): topic filter ${JSON.stringify(filter)} ${bad}`)
    else if (ms === undefined || ms < 1000 || ms > 365 * 86_400_000) problems.push(`'log.ttl' (--ttl): time to live of ${JSON.stringify(filter)} must be a duration from 1s to 365d (e.g. 90s, 10m, 1h, 7d), got ${JSON.stringify(d)}`)
    else rules.push({ filter, ttlMs: ms })
  }
  return { rules, problems }
}

/** Parses --drain-max-rate: `500/s`, `64KiB/s`, `500/s,64KiB/s`; '' = no cap. */
export function parseDrainMaxRate(v: unknown): { rate: DrainMaxRate; problems: string[] } {
  const none = { messagesPerSecond: 0, bytesPerSecond: 0 }
  const fix = `'forward.drainMaxRate' (--drain-max-rate) must be N/s (messages per second), SIZE/s (bytes per second, e.g. 64KiB/s) or both, comma separated, or empty for no cap`
  if (typeof v !== 'string') return { rate: none, problems: [`${fix}, got ${JSON.stringify(v)}`] }
  if (v.trim() === '') return { rate: none, problems: [] }
  let messagesPerSecond = 0
  let bytesPerSecond = 0
  for (const part of v.split(',').map((x) => x.trim())) {
    const m = /^(.+?)\s*\/\s*s$/.exec(part)
    const amount = m?.[1]?.trim() ?? ''
    if (/^\d+$/.test(amount) && messagesPerSecond === 0 && Number(amount) > 0) messagesPerSecond = Number(amount)
    else if (!/^\d+$/.test(amount) && bytesPerSecond === 0 && (parseBytes(amount) ?? 0) > 0) bytesPerSecond = parseBytes(amount)!
    else return { rate: none, problems: [`${fix}, got ${JSON.stringify(v)}`] }
  }
  return { rate: { messagesPerSecond, bytesPerSecond }, problems: [] }
}

/** Parses --device-max-bytes: a size, or a percentage of log.maxBytes. */
export function parseDeviceMaxBytes(v: unknown, logMaxBytes: number): { bytes: number; problems: string[] } {
  const fix = `'limits.deviceMaxBytes' (--device-max-bytes) must be a size (e.g. 64MiB), a share of --log-max-bytes from 1% to 100% (e.g. 10%), or 0 for none`
  if (typeof v === 'number' && Number.isInteger(v) && v >= 0) return { bytes: v, problems: [] }
  if (typeof v !== 'string') return { bytes: 0, problems: [`${fix}, got ${JSON.stringify(v)}`] }
  const pct = /^\s*(\d+(?:\.\d+)?)\s*%\s*$/.exec(v)
  if (pct) {
    const p = Number(pct[1])
    if (p < 1 || p > 100) return { bytes: 0, problems: [`${fix}, got ${JSON.stringify(v)}`] }
    return { bytes: Math.floor((logMaxBytes * p) / 100), problems: [] }
  }
  const b = parseBytes(v)
  return b === undefined ? { bytes: 0, problems: [`${fix}, got ${JSON.stringify(v)}`] } : { bytes: b, problems: [] }
}

/** --priority, --ttl, --device-max-bytes, --device-*-rate and --drain-max-rate: parsed into their typed form, problems returned. */
function bufferPolicyProblems(c: Config): string[] {
  const problems: string[] = []
  const log = c.log as { priority: unknown; ttl: unknown }
  const pr = parsePriorityRules(log.priority)
  log.priority = pr.rules
  problems.push(...pr.problems)
  const tr = parseTtlRules(log.ttl)
  log.ttl = tr.rules
  problems.push(...tr.problems)
  const fwd = c.forward as { drainMaxRate: unknown }
  const dr = parseDrainMaxRate(fwd.drainMaxRate)
  fwd.drainMaxRate = dr.rate
  problems.push(...dr.problems)
  const limits = c.limits as { deviceMaxBytes: unknown; deviceMaxRate: number; deviceHardRate: number }
  const share = parseDeviceMaxBytes(limits.deviceMaxBytes, c.log.maxBytes)
  limits.deviceMaxBytes = share.bytes
  problems.push(...share.problems)
  if (limits.deviceHardRate > 0 && limits.deviceHardRate < limits.deviceMaxRate) {
    problems.push(`'limits.deviceHardRate' (--device-hard-rate, ${limits.deviceHardRate}) must be at least 'limits.deviceMaxRate' (--device-max-rate, ${limits.deviceMaxRate}), or 0 for none`)
  }
  // Each class is its own log with its own active segment: the bound must hold one segment per class and one more.
  const classes = new Set<string>(['normal', ...pr.rules.map((r) => r.class)])
  if (classes.size > 1 && c.log.maxBytes < (classes.size + 1) * c.log.segmentBytes + DIR_RESERVE_BYTES) {
    problems.push(
      `'log.maxBytes' (${c.log.maxBytes}) must hold ${classes.size + 1} segments of 'log.segmentBytes' (${c.log.segmentBytes}) + ${DIR_RESERVE_BYTES} with --priority using ${classes.size} classes (${[...classes].join(', ')}): raise --log-max-bytes to at least ${(classes.size + 1) * c.log.segmentBytes + DIR_RESERVE_BYTES} or lower --log-segment-bytes`,
    )
  }
  return problems
}
