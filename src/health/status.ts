// The /status.json document the status page polls: readiness, totals, the last ten minutes and the
// recent drops, in one object.
import type { DropEvent, Health, Readiness, SeriesPoint } from './health.js'

/** The counts the document shows; the gateway's metrics catalogue implements this structurally. */
export interface StatusCounters {
  /** Connected MQTT clients. */
  readonly mqttClients: { get(): number }
  /** Publishes accepted from devices, over every label set. */
  readonly mqttReceived: { total(): number }
  /** Messages acknowledged by JetStream. */
  readonly forwarded: { get(): number }
  /** Messages dropped, over every reason. */
  readonly drops: { total(): number }
}

/** The --max-forward-lag slow-down as the document shows it (ingress' PubackGate state, structurally). */
export interface SlowdownStatus {
  /** --max-forward-lag, seconds; 0 = off. */
  readonly maxLagSeconds: number
  /** Forwarding lag as the slow-down last measured it (every 100 ms), seconds. */
  readonly lagSeconds: number
  /** PUBACKs are being held (lag over the bound, upstream healthy). /readyz stays ready meanwhile. */
  readonly slowed: boolean
  /** PUBACKs held now. */
  readonly held: number
  /** PUBACKs held and released since start. */
  readonly delayedTotal: number
}

export interface StatusSources {
  readonly gatewayId: string
  readonly version: string
  readonly health: Pick<Health, 'readiness' | 'series' | 'recentDrops'>
  readonly metrics: StatusCounters
  /** The slow-down's state; without it the document says it is off. */
  readonly slowdown?: () => SlowdownStatus
}

/** The body of /status.json (its field order is what clients see). */
export interface StatusDocument {
  readonly gatewayId: string
  readonly version: string
  /** ms since the Unix epoch. */
  readonly now: number
  readonly readiness: Readiness
  readonly clients: number
  readonly totals: { readonly received: number; readonly forwarded: number; readonly dropped: number }
  readonly series: readonly SeriesPoint[]
  readonly drops: readonly DropEvent[]
  readonly slowdown: SlowdownStatus
}

/** Builds the /status.json document from the current state. */
export function statusDocument(src: StatusSources): StatusDocument {
  const { health, metrics } = src
  return {
    gatewayId: src.gatewayId,
    version: src.version,
    now: Date.now(),
    readiness: health.readiness,
    clients: metrics.mqttClients.get(),
    totals: { received: metrics.mqttReceived.total(), forwarded: metrics.forwarded.get(), dropped: metrics.drops.total() },
    series: health.series,
    drops: health.recentDrops,
    slowdown: src.slowdown?.() ?? { maxLagSeconds: 0, lagSeconds: 0, slowed: false, held: 0, delayedTotal: 0 },
  }
}
