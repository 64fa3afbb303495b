// Every metric Ferry exports, declared once with its help text.
import { Counter, Gauge, Histogram, LabelledGauge, Registry } from './registry.js'

const LATENCY_S = [0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5]
/** Buckets of the time a PUBACK is held by the slow-down (seconds). */
const HELD_S = [0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30]

/** Drop reasons used as the `reason` label of ferry_drops_total. */
export const DROP_REASONS = ['discard_old', 'discard_new', 'expired', 'dead_letter', 'corrupt', 'qos0_overload', 'events_not_captured', 'disk_full', 'no_descriptors', 'power_loss', 'refused', 'outbound_queue_full', 'device_quota', 'rate_limited'] as const
export type DropReason = (typeof DROP_REASONS)[number]

/**
 * The drop reasons of uplink records (what a priority class's log and forwarder, or ingress for a record
 * bound to a class, count): with --priority their ferry_drops_total series carry a `class` label.
 */
export const RECORD_DROP_REASONS = ['discard_old', 'discard_new', 'expired', 'dead_letter', 'corrupt', 'disk_full', 'no_descriptors', 'power_loss', 'refused', 'device_quota', 'rate_limited'] as const satisfies readonly DropReason[]

/** Creates the registry with every metric of the gateway. */
export function createMetrics() {
  const r = new Registry()
  const m = {
    registry: r,
    mqttClients: r.add(new Gauge('ferry_mqtt_clients', 'Connected MQTT clients')),
    mqttReceived: r.add(new Counter('ferry_mqtt_received_messages_total', 'PUBLISH packets accepted from devices, by qos')),
    mqttReceivedBytes: r.add(new Counter('ferry_mqtt_received_bytes_total', 'Payload bytes accepted from devices, by qos')),
    mqttRefused: r.add(new Counter('ferry_mqtt_refused_total', 'Publishes refused (client disconnected), by reason')),
    mqttAuthFailures: r.add(new Counter('ferry_mqtt_auth_failures_total', 'CONNECTs refused, by reason (credentials, anonymous, certificate, takeover, busy)')),
    mqttAclDenials: r.add(new Counter('ferry_mqtt_acl_denials_total', 'Publishes and subscriptions the ACL denied, by action')),
    mqttLimits: r.add(new Counter('ferry_mqtt_limit_refusals_total', 'Connections or packets refused by a limit, by limit')),
    authReloads: r.add(new Counter('ferry_auth_reloads_total', 'Reloads of the credentials and ACL files (SIGHUP), by result')),
    deviceEvents: r.add(new Counter('ferry_device_events_total', 'Events about devices written to the log (connected, disconnected, command-expired, command-dead), by event')),
    commands: r.add(new Counter('ferry_downlink_commands_total', 'Commands handled, by result (delivered, expired, dead, offline, unacknowledged)')),
    commandsInflight: r.add(new Gauge('ferry_downlink_commands_inflight', 'Commands being delivered to devices')),
    commandLatency: r.add(new Histogram('ferry_downlink_command_delivery_seconds', 'Time from sending a command to the device to its PUBACK', LATENCY_S)),
    rpc: r.add(new Counter('ferry_downlink_rpc_requests_total', 'RPC requests, by result (ok, offline, moved, timeout, busy, bad_request, bad_reply_subject, too_large, unknown_correlation, ...)')),
    rpcPending: r.add(new Gauge('ferry_downlink_rpc_pending', 'RPC requests waiting for a device')),
    rpcSubscriptions: r.add(new Gauge('ferry_downlink_rpc_subscriptions', 'Open RPC request subscriptions (<prefix>.rpc.<device>.>), one per device connected to this gateway')),
    rpcLatency: r.add(new Histogram('ferry_downlink_rpc_latency_seconds', 'Time from an RPC request to the device\'s response', LATENCY_S)),
    requests: r.add(new Counter('ferry_device_requests_total', 'Requests from devices to cloud services, by result (ok, no_responders, timeout, upstream_down, upstream_error, busy, forbidden, bad_request, acl, stopping)')),
    requestsPending: r.add(new Gauge('ferry_device_requests_pending', 'Requests from devices waiting for a cloud service')),
    mqttRetransmits: r.add(new Counter('ferry_mqtt_retransmits_dropped_total', 'QoS 1/2 retransmissions recognised as already stored and not stored again')),
    pubackLatency: r.add(new Histogram('ferry_mqtt_puback_latency_seconds', 'Time from PUBLISH to PUBACK/PUBREC (log append)', LATENCY_S)),
    ingressSlowed: r.add(new Gauge('ferry_ingress_slowed', '1 while ingress is slowed: forwarding lag over --max-forward-lag with a healthy upstream, PUBACKs held')),
    ingressSlowedSeconds: r.add(new Counter('ferry_ingress_slowed_seconds_total', 'Seconds ingress spent slowed (--max-forward-lag)')),
    ingressPubacksHeld: r.add(new Gauge('ferry_ingress_pubacks_held', 'PUBACKs/PUBRECs of stored publishes being held now (--max-forward-lag)')),
    ingressPubacksDelayed: r.add(new Counter('ferry_ingress_pubacks_delayed_total', 'PUBACKs/PUBRECs of stored publishes that were held before being sent (--max-forward-lag)')),
    ingressPubackDelay: r.add(new Histogram('ferry_ingress_puback_delay_seconds', 'How long a held PUBACK/PUBREC was held (--max-forward-lag)', HELD_S)),
    deviceRateHeld: r.add(new Counter('ferry_ingress_device_rate_held_total', 'Acknowledgements (or QoS 0 socket reads) held back because a device published faster than --device-max-rate')),
    deviceRateHolding: r.add(new Gauge('ferry_ingress_device_rate_holding', 'Acknowledgements held back by --device-max-rate now')),
    deviceShareMaxBytes: r.add(new Gauge('ferry_ingress_device_share_max_bytes', 'Bytes not yet forwarded of the device holding the most (--device-max-bytes)')),
    deviceShareDevices: r.add(new Gauge('ferry_ingress_device_share_devices', 'Devices with records not yet forwarded (--device-max-bytes)')),
    logAppended: r.add(new Counter('ferry_log_appended_records_total', 'Records written to the ring log')),
    logAppendedBytes: r.add(new Counter('ferry_log_appended_bytes_total', 'Bytes written to the ring log, framing included')),
    logFsyncLatency: r.add(new Histogram('ferry_log_fsync_latency_seconds', 'fdatasync duration of the ring log', LATENCY_S)),
    logBytes: r.add(new Gauge('ferry_log_size_bytes', 'Bytes in ring log segment files')),
    logSegments: r.add(new Gauge('ferry_log_segments', 'Ring log segment files')),
    logBacklog: r.add(new Gauge('ferry_log_backlog_records', 'Records in the log not yet acknowledged by JetStream')),
    logBacklogBytes: r.add(new Gauge('ferry_log_backlog_bytes', 'Bytes of the records not yet acknowledged by JetStream (estimated from segment sizes)')),
    logRecords: r.add(new Gauge('ferry_log_records', 'Records in the ring log (forwarded or not)')),
    logOldestAge: r.add(new Gauge('ferry_log_oldest_unforwarded_age_seconds', 'Age of the oldest record not yet acknowledged by JetStream (0 without backlog)')),
    logClassBacklog: r.add(new LabelledGauge('ferry_log_class_backlog_records', 'Records not yet acknowledged by JetStream, by priority class (class="normal" only without --priority)')),
    logClassBacklogBytes: r.add(new LabelledGauge('ferry_log_class_backlog_bytes', 'Bytes of the records not yet acknowledged by JetStream (estimated from segment sizes), by priority class')),
    logClassOldestAge: r.add(new LabelledGauge('ferry_log_class_oldest_unforwarded_age_seconds', 'Age of the oldest record not yet acknowledged by JetStream, by priority class (0 without backlog)')),
    forwardRate: r.add(new Gauge('ferry_forward_rate_messages_per_second', 'Messages acknowledged by JetStream per second, recent average')),
    drainEstimate: r.add(new Gauge('ferry_forward_drain_estimate_seconds', 'Expected time until the backlog is empty at the recent forward rate (NaN while not draining)')),
    ready: r.add(new Gauge('ferry_health_ready', '1 when /readyz is ok or degraded, 0 when failing')),
    drops: r.add(new Counter('ferry_drops_total', 'Messages dropped by an explicit policy, by reason')),
    forwarded: r.add(new Counter('ferry_forward_messages_total', 'Messages acknowledged by JetStream')),
    forwardDuplicates: r.add(new Counter('ferry_forward_duplicates_total', 'PubAcks with duplicate: true (resends JetStream dropped)')),
    forwardRetries: r.add(new Counter('ferry_forward_retries_total', 'Messages published again after a timeout, error or reconnect')),
    forwardRecoveries: r.add(new Counter('ferry_forward_recoveries_total', 'Times forwarding paused and resent from the earliest unacknowledged record, by cause (refused, timeout, reconnect)')),
    forwardPropertiesOmitted: r.add(new Counter('ferry_forward_properties_omitted_total', 'MQTT 5 User Properties not forwarded as NATS headers (beyond 32 per message or 4096 bytes of headers)')),
    forwardReordered: r.add(new Counter('ferry_forward_reordered_total', 'Records JetStream stored after a later record of the same topic or device (it refused or lost the earlier one while storing the later one)')),
    forwardDrainPaced: r.add(new Counter('ferry_forward_drain_paced_seconds_total', 'Seconds the backlog waited for --drain-max-rate')),
    forwardInflight: r.add(new Gauge('ferry_forward_inflight_messages', 'Published messages waiting for a PubAck')),
    forwardAckLatency: r.add(new Histogram('ferry_forward_puback_latency_seconds', 'Time from publish to JetStream PubAck', LATENCY_S)),
    forwardConnected: r.add(new Gauge('ferry_forward_connected', '1 while connected to NATS')),
    forwardReconnects: r.add(new Counter('ferry_forward_reconnects_total', 'Reconnections to NATS')),
    forwardResendsOutsideDedupWindow: r.add(new Counter('ferry_forward_resends_outside_dedup_window_total', 'Resends (same Nats-Msg-Id) of records first sent longer than --dedup-window (or the stream\'s shorter duplicate window) ago: JetStream may store these twice')),
    fleetTakeovers: r.add(new Counter('ferry_fleet_takeovers_total', 'Cross-gateway takeovers of a device session, by direction (in: taken from another live gateway here; out: a session here closed for another gateway)')),
    fleetRegistryUpdates: r.add(new Counter('ferry_fleet_registry_updates_total', 'Writes to the fleet registry bucket, by op (put, delete) and result (ok, error)')),
    fleetStaleRemoved: r.add(new Counter('ferry_fleet_stale_entries_removed_total', 'Registry entries removed because their gateway was dead or was an earlier run of this gateway')),
    fleetGateways: r.add(new Gauge('ferry_fleet_gateways', 'Live gateways the fleet registry shows, this one included')),
    fleetIdConflicts: r.add(new Counter('ferry_fleet_gateway_id_conflicts_total', 'Renewals of this gateway\'s registry entry by another process with the same --gateway-id')),
    processRss: r.add(new Gauge('ferry_process_resident_memory_bytes', 'Resident set size of the gateway process')),
    processHeap: r.add(new Gauge('ferry_process_heap_used_bytes', 'V8 heap in use (part of the resident set)')),
    eventLoopDelay: r.add(new Gauge('ferry_process_event_loop_delay_p99_seconds', 'Event loop delay, 99th percentile since start')),
  }
  // Every drop reason is exported from the start, at 0. (qos0_overload stays 0: when writes fall
  // behind, QoS 0 publishes wait for the log instead of being dropped.)
  for (const reason of DROP_REASONS) m.drops.child({ reason })
  for (const cause of ['refused', 'timeout', 'reconnect']) m.forwardRecoveries.child({ cause })
  for (const direction of ['in', 'out']) m.fleetTakeovers.child({ direction })
  return m
}

export type Metrics = ReturnType<typeof createMetrics>

/**
 * With --priority: exports ferry_drops_total{class, reason} at 0 for every class in use and every record
 * drop reason, so dashboards see each series from the start. Not called without --priority (the series
 * then stay exactly as they were: reason only).
 */
export function exportClassDrops(drops: Pick<Counter, 'child'>, classes: readonly string[]): void {
  for (const cls of classes) for (const reason of RECORD_DROP_REASONS) drops.child({ class: cls, reason })
}
