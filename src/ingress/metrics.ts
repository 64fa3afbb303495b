// The metrics ingress records, as ingress needs them: structural types that the gateway's catalogue
// (src/metrics) satisfies. Ingress does not know the catalogue.

/** A count (Prometheus counter) without labels. */
export interface Count {
  inc(n?: number): void
}

/** A count split by one label (its value given at each increment). */
export interface CountBy<L extends string> {
  inc(n: number, labels: Readonly<Record<L, string>>): void
}

/** What the MQTT ingress records. */
export interface IngressMetrics {
  /** ferry_mqtt_clients: connected clients, read when scraped. */
  readonly mqttClients: { collect(read: () => number): void }
  /** ferry_mqtt_received_messages_total, by qos. */
  readonly mqttReceived: { child(labels: { qos: string }): Count }
  /** ferry_mqtt_received_bytes_total (payload bytes), by qos. */
  readonly mqttReceivedBytes: { child(labels: { qos: string }): Count }
  /** ferry_mqtt_refused_total, by reason. */
  readonly mqttRefused: CountBy<'reason'>
  /** ferry_mqtt_auth_failures_total, by reason (ingress counts failed TLS handshakes). */
  readonly mqttAuthFailures: CountBy<'reason'>
  /** ferry_mqtt_limit_refusals_total, by limit. */
  readonly mqttLimits: CountBy<'limit'>
  /** ferry_mqtt_retransmits_dropped_total. */
  readonly mqttRetransmits: Count
  /** ferry_mqtt_puback_latency_seconds: PUBLISH to PUBACK, in seconds. */
  readonly pubackLatency: { observe(seconds: number): void }
  /**
   * ferry_drops_total, by reason ("refused": acknowledged to a 3.1.1 device and dropped), and with
   * IngressOptions.classLabels by the class of the device publish too.
   */
  readonly drops: { inc(n: number, labels: Readonly<{ reason: string; class?: string }>): void }
  /** ferry_ingress_device_rate_held_total: acknowledgements (QoS 0: socket reads) held by --device-max-rate / --device-hard-rate. */
  readonly deviceRateHeld?: Count
  /** ferry_ingress_device_rate_holding: acknowledgements held by the device rates now. */
  readonly deviceRateHolding?: { collect(read: () => number): void }
  /** ferry_ingress_device_share_max_bytes: unforwarded bytes of the device holding the most (--device-max-bytes). */
  readonly deviceShareMaxBytes?: { collect(read: () => number): void }
  /** ferry_ingress_device_share_devices: devices with records not yet forwarded (--device-max-bytes). */
  readonly deviceShareDevices?: { collect(read: () => number): void }
}

/** What device presence events record. */
export interface PresenceMetrics {
  /** ferry_drops_total, by reason. */
  readonly drops: CountBy<'reason'>
  /** ferry_device_events_total, by event. */
  readonly deviceEvents: CountBy<'event'>
}
