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

export interface StatusSources {
  readonly gatewayId: string
  readonly version: string
  readonly health: Pick<Health, 'readiness' | 'series' | 'recentDrops'>
  readonly metrics: StatusCounters
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
  }
}
