// Tools for a data directory:
//   ferry log stat DIR [--class C] [--json]
//   ferry log dump DIR [--class C] [--from SEQ] [--limit N] [--json]
//   ferry dlq list|show|replay|purge DIR [--seq SEQ] [--class C]
//   ferry replay [--data-dir DIR] [--class C] (--from SEQ | --since TIME)
// stat, dump, dlq list and dlq show only read, also beside a running gateway. dlq replay, dlq purge
// and replay change the directory and need the gateway stopped (they take its lock).
//
// Priority classes (--priority): the data directory is the log of class normal; the logs of classes
// high and low are its subdirectories high/ and low/. Where those exist, stat and dump show one
// section per class (most important first), replay --since applies to each class log, and replay --from
// (seqs are numbered per class) needs --class. --class picks one class log (for dlq: the dead letters of
// one class; dlq replay puts each dead letter back in the log of its class). Without class logs on disk
// every output is as it was.
import fs from 'node:fs'
import path from 'node:path'
import { ENCODING_CONTENT_TYPE, decodeCbor, decodeEntry } from '../codec/index.js'
import { FerryError } from '../errors.js'
import { DEAD_LETTER_FILE, formatDeadLetter, parseDeadLetters } from '../forward/dead-letter.js'
import { PRIORITY_CLASSES } from '../config/index.js'
import type { MessageProperties } from '../codec/index.js'
import type { StoredDeadLetter } from '../forward/dead-letter.js'
import { DirLock, NO_LOG_METRICS, RingLog, nodeFs, readCheckpointState, rewriteCheckpoint, scanLog, statLog } from '../log/index.js'
import type { InspectedRecord, LogStat } from '../log/index.js'
import { silentLogger } from '../logger.js'

export const LOG_USAGE = `Usage:
  ferry log stat DIR [--json]                              segments, positions, backlog, damage
  ferry log dump DIR [--from SEQ] [--limit N] [--json]     records with topic, time, size, payload preview
  ferry dlq list DIR [--json]                              dead letters with their reasons
  ferry dlq show DIR --seq SEQ                             one dead letter, whole
  ferry dlq replay DIR [--seq SEQ]                         put dead letters back in line for forwarding (gateway stopped)
  ferry dlq purge DIR [--seq SEQ]                          remove dead letters, with a count (gateway stopped)
  ferry replay [--data-dir DIR] --from SEQ | --since TIME  forward acknowledged history again (gateway stopped)

Priority classes (--priority): the logs of classes high and low are DIR/high and DIR/low (DIR itself is
class normal). log stat and log dump show one section per class log present; --class high|normal|low
picks one (also for replay; for dlq, the dead letters of that class). dlq replay puts each dead letter
back in the log of its class. replay --since applies to every class log; replay --from, and dlq --seq
naming dead letters of several classes, need --class (seqs are per class).
`

class UsageError extends Error {}

interface Args {
  positional: string[]
  flags: Map<string, string | true>
}

function parse(argv: string[], valueFlags: string[], boolFlags: string[]): Args {
  const out: Args = { positional: [], flags: new Map() }
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!
    if (!a.startsWith('--')) {
      out.positional.push(a)
      continue
    }
    const [name, inline] = a.includes('=') ? [a.slice(0, a.indexOf('=')), a.slice(a.indexOf('=') + 1)] : [a, undefined]
    if (boolFlags.includes(name)) out.flags.set(name, true)
    else if (valueFlags.includes(name)) {
      const v = inline ?? argv[++i]
      if (v === undefined) throw new UsageError(`${name} needs a value`)
      out.flags.set(name, v)
    } else throw new UsageError(`unknown flag ${name}`)
  }
  return out
}

function intFlag(args: Args, name: string): number | undefined {
  const v = args.flags.get(name)
  if (v === undefined) return undefined
  if (typeof v !== 'string' || !/^\d+$/.test(v)) throw new UsageError(`${name} must be a whole number, got ${JSON.stringify(v)}`)
  return Number(v)
}

function dirOf(args: Args): string {
  const dir = args.positional[0]
  if (!dir) throw new UsageError('give the data directory')
  if (!fs.existsSync(dir)) throw new UsageError(`${dir} does not exist`)
  return dir
}

/** A class log of a data directory: its class and its directory. */
interface ClassLog {
  readonly name: string
  readonly dir: string
}

/**
 * The class logs of a data directory, most important first: normal is the directory itself, high and
 * low their subdirectories when those hold a log.
 */
export function classLogsOf(dir: string): ClassLog[] {
  return PRIORITY_CLASSES.flatMap((name): ClassLog[] => {
    if (name === 'normal') return [{ name, dir }]
    const sub = path.join(dir, name)
    return fs.existsSync(path.join(sub, 'segments')) ? [{ name, dir: sub }] : []
  })
}

/** The class logs a command works on: the one --class names, else every class log present. */
function chosenLogs(dir: string, args: Args): ClassLog[] {
  const all = classLogsOf(dir)
  const cls = args.flags.get('--class')
  if (cls === undefined) return all
  if (typeof cls !== 'string' || !(PRIORITY_CLASSES as readonly string[]).includes(cls)) throw new UsageError(`--class must be one of ${PRIORITY_CLASSES.join(', ')}, got ${JSON.stringify(cls)}`)
  const one = all.find((c) => c.name === cls)
  if (!one) throw new UsageError(`no log of class ${cls} in ${dir} (expected ${path.join(dir, cls)})`)
  return [one]
}

const iso = (ms: number): string => new Date(ms).toISOString()

/**
 * Device-controlled text for a terminal: C0/C1 controls (ESC sequences too) as \\xNN; invisible and
 * format characters (bidirectional overrides and isolates U+202A–U+202E, U+2066–U+2069, marks
 * U+200E/U+200F/U+061C, zero-width characters, line and paragraph separators) and lone surrogates
 * as \\u{XXXX}, so a client id cannot reorder or hide what is printed around it; `\\` as `\\\\`,
 * so an escape in the text cannot pass for one of ours.
 */
export function printable(v: string | number | undefined): string {
  return String(v ?? '').replace(/[\\\x00-\x1f\x7f-\x9f]|[\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu, (c) => {
    if (c === '\\') return '\\\\'
    const cp = c.codePointAt(0)!
    return cp <= 0x9f ? `\\x${cp.toString(16).padStart(2, '0')}` : `\\u{${cp.toString(16).toUpperCase().padStart(4, '0')}}`
  })
}

/** JSON for a terminal: the same invisible and format characters as `\\uXXXX` escapes (still valid JSON, same data). */
export function printableJson(value: unknown, space?: number): string {
  return JSON.stringify(value, null, space).replace(/[\x7f-\x9f]|[\p{Cf}\p{Zl}\p{Zp}\p{Cs}]/gu, (c) =>
    c.split('').map((u) => `\\u${u.charCodeAt(0).toString(16).padStart(4, '0')}`).join(''),
  )
}

/** A short, printable view of a stored payload. */
export function preview(payload: Uint8Array, encoding: number, max = 80): string {
  let text: string
  try {
    if (encoding === 1) text = JSON.stringify(decodeCbor(payload))
    else if (Buffer.from(payload).every((b) => b >= 0x20 || b === 0x0a || b === 0x09)) text = Buffer.from(payload).toString('utf8')
    else text = `0x${Buffer.from(payload.subarray(0, 32)).toString('hex')}${payload.length > 32 ? '…' : ''}`
  } catch {
    text = `0x${Buffer.from(payload.subarray(0, 32)).toString('hex')}`
  }
  return text.length > max ? `${text.slice(0, max - 1)}…` : text
}

/** One log record as `log dump` prints it; `error` instead of the entry fields when the body does not decode. */
interface RecordDescription {
  seq: number
  time: string
  bytes: number
  clientId?: string
  topic?: string
  qos?: 0 | 1 | 2
  contentType?: string
  payload?: string
  /** MQTT 5 properties kept with the message (entry version 3), absent when it has none. */
  properties?: PropertiesDescription
  error?: string
}

/** The MQTT 5 properties of a record as `log dump` shows them (times ISO 8601, binary as hex). */
interface PropertiesDescription {
  expiresAt?: string
  contentType?: string
  utf8?: true
  userProperties?: Array<[string, string]>
  responseTopic?: string
  correlationData?: string
}

function describeProperties(p: MessageProperties): PropertiesDescription {
  const d: PropertiesDescription = {}
  if (p.expiresAtMs !== undefined) d.expiresAt = iso(p.expiresAtMs)
  if (p.contentType !== undefined) d.contentType = p.contentType
  if (p.utf8 === true) d.utf8 = true
  if (p.userProperties !== undefined) d.userProperties = p.userProperties.map(([n, v]) => [n, v])
  if (p.responseTopic !== undefined) d.responseTopic = p.responseTopic
  if (p.correlationData !== undefined) d.correlationData = Buffer.from(p.correlationData).toString('hex')
  return d
}

/** The properties on one text line, fields printable-escaped (exact values: --json). */
function propertiesText(d: PropertiesDescription): string {
  const parts: string[] = []
  if (d.expiresAt !== undefined) parts.push(`expires ${d.expiresAt}`)
  if (d.contentType !== undefined) parts.push(`content-type ${printable(d.contentType)}`)
  if (d.utf8) parts.push('utf8')
  for (const [n, v] of d.userProperties ?? []) parts.push(`user ${printable(n)}=${printable(v)}`)
  if (d.responseTopic !== undefined) parts.push(`response-topic ${printable(d.responseTopic)}`)
  if (d.correlationData !== undefined) parts.push(`correlation 0x${d.correlationData}`)
  return parts.join('; ')
}

function describeRecord(r: { seq: number; ts: number; body: Buffer }): RecordDescription {
  try {
    const e = decodeEntry(r.body)
    const encoding = e.encoding ?? 0
    return {
      seq: r.seq,
      time: iso(r.ts),
      bytes: r.body.length,
      clientId: e.clientId,
      topic: e.topic,
      qos: e.qos,
      contentType: ENCODING_CONTENT_TYPE[encoding] || 'as sent',
      payload: preview(e.payload, encoding),
      ...(e.properties ? { properties: describeProperties(e.properties) } : {}),
    }
  } catch (err) {
    return { seq: r.seq, time: iso(r.ts), bytes: r.body.length, error: (err as Error).message }
  }
}

function statJson(s: LogStat): object {
  return { ...s, checkpoint: s.checkpoint ? { ...s.checkpoint, logId: s.checkpoint.logId.toString('hex') } : null }
}

function writeStat(s: LogStat): void {
  const w = (l: string): boolean => process.stdout.write(l + '\n')
  w(`data directory  ${path.resolve(s.dir)}${s.runningPid ? `  (in use by a running gateway, pid ${s.runningPid}: a snapshot)` : ''}`)
  w(`records         ${s.records.toLocaleString('en')} (seq ${s.firstSeq ?? '-'} … ${s.lastSeq ?? '-'}), ${(s.bytes / 2 ** 20).toFixed(1)} MiB in ${s.segments.length} segment(s)`)
  w(`acknowledged    up to seq ${s.acked} (checkpoint: ${s.checkpoint ? `${s.checkpoint.clean ? 'clean stop' : 'not a clean stop'}, epoch ${s.checkpoint.epoch}` : 'none'})`)
  w(`backlog         ${s.backlog.toLocaleString('en')} record(s) not yet forwarded`)
  w(`damaged         ${s.corrupt} record(s) skipped as corrupt`)
  w('')
  w('SEGMENT                     BYTES  EPOCH  FIRST  LAST  RECORDS  SEALED  CORRUPT  NOTE')
  for (const g of s.segments) {
    w(`${g.file.padEnd(24)} ${String(g.bytes).padStart(8)} ${String(g.epoch).padStart(6)} ${String(g.firstSeq ?? '-').padStart(6)} ${String(g.lastSeq ?? '-').padStart(5)} ${String(g.records).padStart(8)} ${(g.sealed ? 'yes' : 'no').padStart(7)} ${String(g.corrupt).padStart(8)}  ${g.problem ?? (g.tailBytes > 0 ? `${g.tailBytes} bytes after the last record` : '')}`)
  }
}

/**
 * `log stat`. With class logs (and no --class): one section per class; --json then keeps class normal's
 * figures at the top level (as without classes) and adds `classes` with every class log's.
 */
async function logStat(args: Args): Promise<number> {
  const dir = dirOf(args)
  const logs = chosenLogs(dir, args)
  const json = args.flags.has('--json')
  if (logs.length === 1) {
    const s = await statLog(logs[0]!.dir)
    if (json) process.stdout.write(JSON.stringify(statJson(s), null, 2) + '\n')
    else writeStat(s)
    return 0
  }
  const stats = await Promise.all(logs.map(async (c) => ({ name: c.name, stat: await statLog(c.dir) })))
  if (json) {
    const normal = stats.find((x) => x.name === 'normal')!.stat
    process.stdout.write(JSON.stringify({ ...statJson(normal), classes: Object.fromEntries(stats.map((x) => [x.name, statJson(x.stat)])) }, null, 2) + '\n')
    return 0
  }
  const total = stats.reduce((a, x) => a + x.stat.backlog, 0)
  process.stdout.write(`priority classes  ${stats.map((x) => `${x.name} ${x.stat.backlog.toLocaleString('en')}`).join(', ')} record(s) not yet forwarded (${total.toLocaleString('en')} in all)\n`)
  for (const x of stats) {
    process.stdout.write(`\n== class ${x.name} ==\n`)
    writeStat(x.stat)
  }
  return 0
}

/** `log dump`. With class logs (and no --class): each class log in turn, --from and --limit per class; text under a `== class C ==` line, JSON lines with `class`. */
async function logDump(args: Args): Promise<number> {
  const logs = chosenLogs(dirOf(args), args)
  const from = intFlag(args, '--from') ?? 0
  const limit = intFlag(args, '--limit') ?? 100
  const json = args.flags.has('--json')
  const sections = logs.length > 1
  for (const c of logs) {
    if (sections && !json) process.stdout.write(`== class ${c.name} ==\n`)
    let n = 0
    await scanLog(c.dir, Math.max(0, from - 1), (r: InspectedRecord) => {
      if (n >= limit) return false
      n++
      const d = describeRecord(r)
      if (json) process.stdout.write(printableJson(sections ? { class: c.name, ...d } : d) + '\n')
      else process.stdout.write(d.error ? `${d.seq}  ${d.time}  ${d.bytes} B  undecodable: ${printable(d.error)}\n` : `${d.seq}  ${d.time}  ${String(d.bytes).padStart(5)} B  ${printable(d.clientId)}  ${printable(d.topic)}  qos${d.qos}  ${d.contentType}  ${printable(d.payload)}${d.properties ? `  {${propertiesText(d.properties)}}` : ''}\n`)
      return n < limit
    })
    if (!json) process.stderr.write(sections ? `${n} record(s) of class ${c.name}\n` : `${n} record(s)\n`)
  }
  return 0
}

function deadLetters(dir: string): { file: string; lines: StoredDeadLetter[] } {
  const file = path.join(dir, DEAD_LETTER_FILE)
  if (!fs.existsSync(file)) return { file, lines: [] }
  return { file, lines: parseDeadLetters(fs.readFileSync(file, 'utf8')) }
}

/** Takes the data directory's lock for a tool that changes it; a running gateway makes this fail. */
function lockForChange(dir: string): DirLock {
  try {
    return DirLock.acquire(dir)
  } catch (err) {
    if (err instanceof FerryError && err.code === 'FERRY_ERR_LOG_LOCKED') throw new UsageError(`${err.message}; this command changes the directory and needs the gateway stopped`)
    throw err
  }
}

/** The class of a dead letter: the one its line names, normal when none. */
const classOfDead = (l: StoredDeadLetter): string => l.className ?? 'normal'

async function dlq(sub: string, args: Args): Promise<number> {
  const dir = dirOf(args)
  // The dead letters of every class are in the one file in DIR, each line naming its class (none: normal)
  // and holding the seq it had in its class log. --class picks the dead letters of one class.
  const cls = args.flags.get('--class')
  if (cls !== undefined && (typeof cls !== 'string' || !(PRIORITY_CLASSES as readonly string[]).includes(cls))) throw new UsageError(`--class must be one of ${PRIORITY_CLASSES.join(', ')}, got ${JSON.stringify(cls)}`)
  const only = intFlag(args, '--seq')
  const { file, lines } = deadLetters(dir)
  const chosen = lines.filter((l) => (cls === undefined || classOfDead(l) === cls) && (only === undefined || l.seq === only))
  // Seqs are per class log: one seq may name dead letters of several classes.
  const classesChosen = [...new Set(chosen.map(classOfDead))]
  if (only !== undefined && sub !== 'list' && classesChosen.length > 1) throw new UsageError(`seq ${only} names dead letters of classes ${classesChosen.join(', ')} (each class log numbers its records): give --class`)
  const classNote = (l: StoredDeadLetter): string => (l.className === undefined ? '' : ` (class ${l.className})`)
  if (sub === 'list') {
    const listed = lines.filter((l) => cls === undefined || classOfDead(l) === cls)
    if (args.flags.has('--json')) {
      for (const l of listed) process.stdout.write(printableJson({ ...describeRecord(l), deadAt: iso(l.deadAt), reason: l.reason, ...(l.className === undefined ? {} : { class: l.className }) }) + '\n')
      return 0
    }
    for (const l of listed) {
      const d = describeRecord(l)
      process.stdout.write(`${l.seq}${classNote(l)}  dead ${iso(l.deadAt)}  ${printable(d.clientId)}  ${printable(d.topic)}  ${d.bytes} B  reason: ${printable(l.reason)}\n`)
    }
    process.stderr.write(`${listed.length} dead letter(s) in ${file}\n`)
    return 0
  }
  if (sub === 'show') {
    if (only === undefined) throw new UsageError('dlq show needs --seq SEQ')
    const l = chosen[0]
    if (!l) {
      process.stderr.write(`no dead letter with seq ${only}${cls === undefined ? '' : ` of class ${cls}`}\n`)
      return 1
    }
    const e = decodeEntry(l.body)
    process.stdout.write(printableJson({ ...describeRecord(l), epoch: l.epoch, deadAt: iso(l.deadAt), reason: l.reason, ...(l.className === undefined ? {} : { class: l.className }), payload: preview(e.payload, e.encoding ?? 0, 100_000) }, 2) + '\n')
    return 0
  }
  if (sub !== 'replay' && sub !== 'purge') throw new UsageError(`unknown dlq command ${JSON.stringify(sub)}`)
  const lock = lockForChange(dir)
  try {
    if (sub === 'replay' && chosen.length > 0) {
      // Back in line: each appended to the log of its class as a new record; the gateway forwards them at its next start.
      const logs = classLogsOf(dir)
      const targets = classesChosen.map((name) => {
        const log = logs.find((c) => c.name === name)
        if (!log) throw new UsageError(`dead letters of class ${name}, but no log of class ${name} in ${dir} (expected ${path.join(dir, name)})`)
        return log
      })
      lock.release()
      let done = 0
      for (const t of targets) {
        const log = await RingLog.open({ dir: t.dir, segmentBytes: 64 * 1024 * 1024, maxBytes: 2 ** 50, discard: 'new', fsync: 'always', fsyncIntervalMs: 100, maxRecordBytes: 32 * 1024 * 1024, checkpointIntervalMs: 1000, logger: silentLogger, metrics: NO_LOG_METRICS })
        try {
          for (const l of chosen) {
            if (classOfDead(l) !== t.name) continue
            await log.append(l.body)
            if (process.stderr.isTTY) process.stderr.write(`\rreplaying ${++done}/${chosen.length}`)
          }
        } finally {
          await log.close()
        }
      }
      if (process.stderr.isTTY) process.stderr.write('\n')
    }
    const keep = lines.filter((l) => !chosen.includes(l))
    const tmp = `${file}.tmp`
    fs.writeFileSync(tmp, keep.map((l) => formatDeadLetter(l)).join(''))
    const fd = fs.openSync(tmp, 'r')
    fs.fsyncSync(fd)
    fs.closeSync(fd)
    fs.renameSync(tmp, file)
    process.stdout.write(`${sub === 'replay' ? 'replayed' : 'purged'} ${chosen.length} dead letter(s); ${keep.length} left\n`)
    return 0
  } finally {
    lock.release()
  }
}

/**
 * `ferry replay`: moves the acknowledged position back, so the gateway forwards that history again at its
 * next start. With class logs: --since moves each class log's position (or the --class one's); --from
 * needs --class, as each class numbers its records.
 */
async function replay(args: Args): Promise<number> {
  const dir = (args.flags.get('--data-dir') as string | undefined) ?? './data'
  const from = intFlag(args, '--from')
  const since = args.flags.get('--since')
  if ((from === undefined) === (since === undefined)) throw new UsageError('give exactly one of --from SEQ or --since TIME')
  let t: number | undefined
  if (since !== undefined) {
    t = Date.parse(String(since))
    if (Number.isNaN(t)) throw new UsageError(`--since must be a date and time (e.g. 2026-11-28T10:00:00Z), got ${JSON.stringify(since)}`)
  }
  const logs = fs.existsSync(dir) ? chosenLogs(dir, args) : [{ name: 'normal', dir }]
  if (logs.length > 1 && from !== undefined) throw new UsageError(`${dir} holds the logs of classes ${logs.map((c) => c.name).join(', ')}, each with its own seqs: give --class with --from`)
  if (logs.length === 1) return replayLog(logs[0]!.dir, from, t, '')
  let code = 1
  for (const c of logs) code = Math.min(code, await replayLog(c.dir, from, t, `class ${c.name}: `))
  return code
}

/** Replay in one (class) log; `prefix` starts each line printed (the class, with several). */
async function replayLog(dir: string, from: number | undefined, since: number | undefined, prefix: string): Promise<number> {
  let seq = from
  if (since !== undefined) {
    await scanLog(dir, 0, (r) => {
      if (r.ts < since) return true
      seq = r.seq
      return false
    })
    if (seq === undefined) {
      process.stderr.write(`${prefix}nothing on disk received since ${iso(since)}\n`)
      return 1
    }
  }
  const lock = lockForChange(dir)
  try {
    const s = await statLog(dir)
    const cp = readCheckpointState(path.join(dir, 'checkpoint'))
    if (!cp || s.firstSeq === null) {
      process.stderr.write(`${prefix}nothing to replay: no checkpoint or no records\n`)
      return 1
    }
    const target = Math.max(s.firstSeq, seq!) - 1
    if (target >= cp.acked) {
      process.stdout.write(`${prefix}nothing to do: seq ${target + 1} is not yet acknowledged (acknowledged up to ${cp.acked})\n`)
      return 0
    }
    await rewriteCheckpoint(nodeFs, path.join(dir, 'checkpoint'), { ...cp, acked: target })
    process.stdout.write(
      `${prefix}the gateway will forward seq ${target + 1} … ${cp.acked} again at its next start (${cp.acked - target} record(s))${seq! < s.firstSeq ? `; seq ${seq} … ${s.firstSeq - 1} are no longer on disk` : ''}.\n` +
        `${prefix}They keep their Nats-Msg-Id: JetStream drops those it still has in its duplicate window (2 minutes by default) and stores the rest again.\n`,
    )
    return 0
  } finally {
    lock.release()
  }
}

/** Runs `ferry log …`, `ferry dlq …` or `ferry replay …`; returns the exit code. */
export async function logTools(cmd: 'log' | 'dlq' | 'replay', argv: string[]): Promise<number> {
  try {
    if (cmd === 'replay') return await replay(parse(argv, ['--data-dir', '--from', '--since', '--class'], []))
    const [sub = '', ...rest] = argv
    const args = parse(rest, ['--from', '--limit', '--seq', '--class'], ['--json'])
    if (cmd === 'log' && sub === 'stat') return await logStat(args)
    if (cmd === 'log' && sub === 'dump') return await logDump(args)
    if (cmd === 'dlq') return await dlq(sub, args)
    throw new UsageError(`unknown command: ferry ${cmd} ${sub}`)
  } catch (err) {
    if (err instanceof UsageError) {
      process.stderr.write(`ferry ${cmd}: ${err.message}\n\n${LOG_USAGE}`)
      return 2
    }
    throw err
  }
}
