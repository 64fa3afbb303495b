// Makes sure the uplink JetStream stream exists and captures `<prefix>.up.>`.
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { nanos } from '@nats-io/transport-node'
import { FerryError } from '../errors.js'
import type { Logger } from '../logger.js'

/** True when NATS subject pattern `pattern` matches every subject `subject` matches (both may hold wildcards). */
export function subjectCovers(pattern: string, subject: string): boolean {
  const p = pattern.split('.')
  const s = subject.split('.')
  for (let i = 0; i < p.length; i++) {
    const pt = p[i]
    if (pt === '>') return i < s.length
    const st = s[i]
    if (st === undefined) return false
    if (pt === '*') {
      if (st === '>') return false
      continue
    }
    if (pt !== st) return false
  }
  return p.length === s.length
}

/** Subjects the uplink stream is created with. Never `<prefix>.cmd.>` or `<prefix>.rpc.>`. */
export function uplinkSubjects(prefix: string): string[] {
  return [`${prefix}.up.>`, `${prefix}.events.>`]
}

/** How Ferry creates the uplink stream (--stream-replicas, --dedup-window). */
export interface StreamSettings {
  /** num_replicas when Ferry creates the stream (1..5). */
  readonly replicas: number
  /** duplicate_window when Ferry creates the stream, milliseconds. */
  readonly dedupWindowMs: number
}

/** A setting of an existing stream weaker than configured: `key` names it (a warning is logged once per key). */
export interface StreamSettingWarning {
  readonly key: 'replicas' | 'dedup_window'
  readonly message: string
  readonly fields: Readonly<Record<string, unknown>>
}

/** JetStream's duplicate window when a stream's config leaves it at 0. */
const JETSTREAM_DEFAULT_DUPLICATE_WINDOW_MS = 120_000

/**
 * Compares an existing stream's replicas and duplicate window (nanoseconds, as JetStream reports
 * it; 0 = JetStream's default of 2 minutes) with the configured ones: a warning for each that is weaker.
 */
export function streamSettingWarnings(stream: string, actual: { readonly num_replicas?: number; readonly duplicate_window?: number }, want: StreamSettings): StreamSettingWarning[] {
  const out: StreamSettingWarning[] = []
  const replicas = actual.num_replicas || 1
  if (replicas < want.replicas) {
    out.push({
      key: 'replicas',
      message: `stream "${stream}" has ${replicas} replica(s), fewer than --stream-replicas ${want.replicas}: a JetStream node failure can make it unavailable or lose what it stored; Ferry does not change an existing stream: raise it with \`nats stream edit ${stream} --replicas ${want.replicas}\``,
      fields: { stream, replicas, configured: want.replicas },
    })
  }
  const windowMs = duplicateWindowMs(actual)
  if (windowMs < want.dedupWindowMs) {
    out.push({
      key: 'dedup_window',
      message: `stream "${stream}" has a duplicate window of ${windowMs} ms, shorter than --dedup-window ${want.dedupWindowMs} ms: a message resent after an outage (or a gateway restart) longer than ${windowMs} ms may be stored twice (resends within one gateway process are counted in ferry_forward_resends_outside_dedup_window_total, against this window); Ferry does not change an existing stream: raise it with \`nats stream edit ${stream} --dupe-window ${Math.ceil(want.dedupWindowMs / 1000)}s\``,
      fields: { stream, dedupWindowMs: windowMs, configured: want.dedupWindowMs },
    })
  }
  return out
}

/** A stream's duplicate window in ms (JetStream reports nanoseconds; 0 = its default of 2 minutes). */
function duplicateWindowMs(config: { readonly duplicate_window?: number }): number {
  return config.duplicate_window ? Math.floor(config.duplicate_window / 1e6) : JETSTREAM_DEFAULT_DUPLICATE_WINDOW_MS
}

/** What {@link ensureStream} found. */
export interface StreamCheck {
  /** A stream stores device events (`<prefix>.events.>`, this one or another). */
  readonly eventsCaptured: boolean
  /**
   * The stream's duplicate window, ms: the configured one when Ferry created it, else the existing
   * stream's own (which may be shorter than --dedup-window: a resend after it may be stored twice).
   */
  readonly dedupWindowMs: number
}

/** Options of {@link ensureStream}. */
export interface EnsureStreamOptions {
  /** Replicas and duplicate window of a stream Ferry creates. Default 1 replica, 2 minutes. */
  readonly settings?: StreamSettings
  /** Warnings already logged (by key): each is logged once per set, not once per check. */
  readonly warned?: Set<string>
  /**
   * Timeout of each JetStream API request, ms. Default 5000. While a clustered stream elects a new
   * leader the API does not answer: a shorter timeout lets the check be tried again sooner.
   */
  readonly timeoutMs?: number
  /** --partitions: the event subjects' layout, for eventsCaptured. Default 0. */
  readonly partitions?: number
}

/**
 * Creates the stream with the uplink subjects (and the configured replicas and duplicate window)
 * when it is missing; when it exists, checks that it captures `<prefix>.up.>` and throws
 * FERRY_ERR_FORWARD_STREAM naming the fix otherwise, and warns (once per kind) when its replicas or
 * duplicate window are weaker than configured.
 */
export async function ensureStream(nc: NatsConnection, stream: string, prefix: string, logger: Logger, opts: EnsureStreamOptions = {}): Promise<StreamCheck> {
  const settings = opts.settings ?? { replicas: 1, dedupWindowMs: JETSTREAM_DEFAULT_DUPLICATE_WINDOW_MS }
  const warned = opts.warned ?? new Set<string>()
  // No account-info check first: on a cluster it is answered by the meta leader, so the kill of that
  // node would hold the check (and forwarding) until a new one is elected although the stream's own
  // leader, which answers the stream info, is alive.
  const jsm = await jetstreamManager(nc, { timeout: opts.timeoutMs ?? 5000, checkAPI: false })
  const want = `${prefix}.up.>`
  let info
  try {
    info = await jsm.streams.info(stream)
  } catch (err) {
    if ((err as { code?: unknown; name?: string }).name !== 'StreamNotFoundError' && !/not found/i.test(String(err))) throw err
    info = undefined
  }
  if (!info) {
    await jsm.streams.add({ name: stream, subjects: uplinkSubjects(prefix), num_replicas: settings.replicas, duplicate_window: nanos(settings.dedupWindowMs) })
    logger.info('created JetStream stream', { stream, subjects: uplinkSubjects(prefix), replicas: settings.replicas, dedupWindowMs: settings.dedupWindowMs })
    return { eventsCaptured: true, dedupWindowMs: settings.dedupWindowMs }
  }
  const subjects = info.config.subjects ?? []
  if (!subjects.some((s) => subjectCovers(s, want))) {
    throw new FerryError(
      'FERRY_ERR_FORWARD_STREAM',
      `stream "${stream}" exists but does not capture "${want}" (its subjects: ${JSON.stringify(subjects)}); add "${want}" to the stream or choose another --stream / --subject-prefix`,
    )
  }
  for (const w of streamSettingWarnings(stream, info.config, settings)) {
    if (warned.has(w.key)) continue
    warned.add(w.key)
    logger.warn(w.message, w.fields)
  }
  const bad = subjects.filter((s) => subjectCovers(s, `${prefix}.cmd.x`) || subjectCovers(s, `${prefix}.rpc.x`))
  if (bad.length > 0) {
    logger.warn('stream also captures command or RPC subjects; requests to devices may be answered by JetStream', { stream, subjects: bad })
  }
  // Events may also go to a stream of their own, or to a narrower filter: ask JetStream which
  // stream would store one, in the layout Ferry writes (--partitions adds a token: `<prefix>.events.*.*`
  // captures `<prefix>.events.<device>.<event>` but not `<prefix>.events.<p>.<device>.<event>`).
  const probe = (opts.partitions ?? 0) > 0 ? `${prefix}.events.0.probe.connected` : `${prefix}.events.probe.connected`
  const eventsCaptured = subjects.some((s) => subjectCovers(s, `${prefix}.events.>`)) || (await jsm.streams.find(probe).then(() => true, () => false))
  if (!eventsCaptured) {
    logger.warn(`stream does not capture "${prefix}.events.>": device events (presence, command-expired, command-dead) are dropped and counted; add that subject to the stream to keep them`, { stream, subjects })
  }
  return { eventsCaptured, dedupWindowMs: duplicateWindowMs(info.config) }
}
