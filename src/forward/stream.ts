// Makes sure the uplink JetStream stream exists and captures `<prefix>.up.>`.
import type { NatsConnection } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
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

/**
 * Creates the stream with the uplink subjects when it is missing; when it exists, checks that it
 * captures `<prefix>.up.>` and throws FERRY_ERR_FORWARD_STREAM naming the fix otherwise. `partitions`:
 * --partitions (the event subjects' layout, for eventsCaptured).
 */
export async function ensureStream(nc: NatsConnection, stream: string, prefix: string, logger: Logger, partitions = 0): Promise<{ eventsCaptured: boolean }> {
  const jsm = await jetstreamManager(nc, { timeout: 5000 })
  const want = `${prefix}.up.>`
  let info
  try {
    info = await jsm.streams.info(stream)
  } catch (err) {
    if ((err as { code?: unknown; name?: string }).name !== 'StreamNotFoundError' && !/not found/i.test(String(err))) throw err
    info = undefined
  }
  if (!info) {
    await jsm.streams.add({ name: stream, subjects: uplinkSubjects(prefix) })
    logger.info('created JetStream stream', { stream, subjects: uplinkSubjects(prefix) })
    return { eventsCaptured: true }
  }
  const subjects = info.config.subjects ?? []
  if (!subjects.some((s) => subjectCovers(s, want))) {
    throw new FerryError(
      'FERRY_ERR_FORWARD_STREAM',
      `stream "${stream}" exists but does not capture "${want}" (its subjects: ${JSON.stringify(subjects)}); add "${want}" to the stream or choose another --stream / --subject-prefix`,
    )
  }
  const bad = subjects.filter((s) => subjectCovers(s, `${prefix}.cmd.x`) || subjectCovers(s, `${prefix}.rpc.x`))
  if (bad.length > 0) {
    logger.warn('stream also captures command or RPC subjects; requests to devices may be answered by JetStream', { stream, subjects: bad })
  }
  // Events may also go to a stream of their own, or to a narrower filter: ask JetStream which
  // stream would store one, in the layout Ferry writes (--partitions adds a token: `<prefix>.events.*.*`
  // captures `<prefix>.events.<device>.<event>` but not `<prefix>.events.<p>.<device>.<event>`).
  const probe = partitions > 0 ? `${prefix}.events.0.probe.connected` : `${prefix}.events.probe.connected`
  const eventsCaptured = subjects.some((s) => subjectCovers(s, `${prefix}.events.>`)) || (await jsm.streams.find(probe).then(() => true, () => false))
  if (!eventsCaptured) {
    logger.warn(`stream does not capture "${prefix}.events.>": device events (presence, command-expired, command-dead) are dropped and counted; add that subject to the stream to keep them`, { stream, subjects })
  }
  return { eventsCaptured }
}
