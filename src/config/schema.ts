// The configuration: every option once, with its flag, environment variable, default, unit and meaning.

/**
 * Value kinds an option can have. `duration`: a bare number is milliseconds; `seconds`: a bare
 * number (decimals allowed) is seconds, and a unit may be given ("500ms", "2s"); both are stored in
 * milliseconds, and `min`/`max` are in milliseconds (its `default` is in seconds, as given).
 */
export type OptionKind = 'string' | 'int' | 'bytes' | 'duration' | 'seconds' | 'bool' | 'enum' | 'hostport' | 'urls' | 'topics'

/** One configuration option. `key` is its path in the config file and in {@link Config}. */
export interface OptionSpec {
  readonly key: string
  readonly flag: string
  readonly env: string
  readonly kind: OptionKind
  readonly default: string | number | boolean | readonly string[]
  readonly help: string
  readonly min?: number
  readonly max?: number
  readonly values?: readonly string[]
  /** Printed in place of the value in logs and `--print-config`. */
  readonly secret?: boolean
}

const KiB = 1024
const MiB = 1024 * KiB
const GiB = 1024 * MiB

/** All options, in the order `ferry run --help` and README list them. */
export const OPTIONS: readonly OptionSpec[] = [
  { key: 'gatewayId', flag: '--gateway-id', env: 'FERRY_GATEWAY_ID', kind: 'string', default: '', help: 'name of this gateway, part of every Nats-Msg-Id; letters, digits, "-", "_" (default: the host name)' },
  { key: 'mqtt.listen', flag: '--mqtt-listen', env: 'FERRY_MQTT_LISTEN', kind: 'hostport', default: '127.0.0.1:1883', help: 'MQTT TCP listener HOST:PORT (port 0 = any free port)' },
  { key: 'mqtts.listen', flag: '--mqtts-listen', env: 'FERRY_MQTTS_LISTEN', kind: 'hostport', default: '', help: 'MQTT over TLS listener HOST:PORT (off when empty); needs --tls-cert and --tls-key' },
  { key: 'tls.cert', flag: '--tls-cert', env: 'FERRY_TLS_CERT', kind: 'string', default: '', help: 'PEM certificate (chain) file of the MQTTS listener' },
  { key: 'tls.key', flag: '--tls-key', env: 'FERRY_TLS_KEY', kind: 'string', default: '', help: 'PEM private key file of the MQTTS listener' },
  { key: 'tls.ca', flag: '--tls-ca', env: 'FERRY_TLS_CA', kind: 'string', default: '', help: 'PEM file of the CAs that sign device certificates (for --require-client-cert)' },
  { key: 'tls.requireClientCert', flag: '--require-client-cert', env: 'FERRY_REQUIRE_CLIENT_CERT', kind: 'bool', default: false, help: 'MQTTS devices must present a certificate signed by --tls-ca; its CN (or first DNS/URI SAN) is the device identity' },
  { key: 'auth.file', flag: '--auth-file', env: 'FERRY_AUTH_FILE', kind: 'string', default: '', help: 'credentials file (scrypt hashes; manage with "ferry passwd FILE DEVICE"); devices must log in' },
  { key: 'auth.aclFile', flag: '--acl-file', env: 'FERRY_ACL_FILE', kind: 'string', default: '', help: 'Mosquitto-style ACL file (user/topic/pattern rules, %u and %c); anything not allowed is denied' },
  { key: 'auth.allowAnonymous', flag: '--allow-anonymous', env: 'FERRY_ALLOW_ANONYMOUS', kind: 'bool', default: false, help: 'accept devices without credentials, also on a non-loopback listener without --auth-file (warned at every start)' },
  { key: 'limits.maxPacketBytes', flag: '--max-packet-bytes', env: 'FERRY_MAX_PACKET_BYTES', kind: 'bytes', default: 1 * MiB, min: 1 * KiB, max: 256 * MiB, help: 'largest MQTT packet; a larger one is refused from its fixed header, before it is buffered' },
  { key: 'limits.maxConnections', flag: '--max-connections', env: 'FERRY_MAX_CONNECTIONS', kind: 'int', default: 10_000, min: 1, max: 1_000_000, help: 'open MQTT connections (TCP and TLS together); more are closed at once' },
  { key: 'limits.connectionRate', flag: '--max-connection-rate', env: 'FERRY_MAX_CONNECTION_RATE', kind: 'int', default: 2000, min: 1, max: 1_000_000, help: 'new connections per second, all addresses together (bursts up to the same number)' },
  { key: 'limits.connectionRatePerAddress', flag: '--max-connection-rate-per-address', env: 'FERRY_MAX_CONNECTION_RATE_PER_ADDRESS', kind: 'int', default: 200, min: 1, max: 1_000_000, help: 'new connections per second from one IP address (bursts up to the same number)' },
  { key: 'limits.maxTlsHandshakes', flag: '--max-tls-handshakes', env: 'FERRY_MAX_TLS_HANDSHAKES', kind: 'int', default: 64, min: 1, max: 100_000, help: 'TLS handshakes in progress at once on the MQTTS listener; beyond it the oldest one in progress is closed' },
  { key: 'limits.tlsHandshakeRatePerAddress', flag: '--max-tls-handshake-rate-per-address', env: 'FERRY_MAX_TLS_HANDSHAKE_RATE_PER_ADDRESS', kind: 'int', default: 200, min: 1, max: 1_000_000, help: 'TLS handshakes per second from one IP address (bursts up to the same number); a failed or abandoned handshake costs 4 more' },
  { key: 'limits.connectTimeoutMs', flag: '--connect-timeout-ms', env: 'FERRY_CONNECT_TIMEOUT_MS', kind: 'int', default: 10_000, min: 100, max: 600_000, help: 'a socket that has not completed CONNECT after this long is closed, milliseconds' },
  { key: 'limits.maxKeepalive', flag: '--max-keepalive', env: 'FERRY_MAX_KEEPALIVE', kind: 'int', default: 3600, min: 0, max: 65_535, help: 'largest non-zero keepalive a device may ask for, seconds (3.1.1: more gets CONNACK 2; MQTT 5: Server Keep Alive = this, also for 0); 0 = no bound' },
  { key: 'limits.maxTopicBytes', flag: '--max-topic-bytes', env: 'FERRY_MAX_TOPIC_BYTES', kind: 'int', default: 1024, min: 16, max: 65_535, help: 'longest topic or topic filter, UTF-8 bytes' },
  { key: 'limits.maxTopicLevels', flag: '--max-topic-levels', env: 'FERRY_MAX_TOPIC_LEVELS', kind: 'int', default: 32, min: 1, max: 100, help: 'most levels ("/"-separated) in a topic or topic filter' },
  { key: 'limits.maxSubscriptions', flag: '--max-subscriptions', env: 'FERRY_MAX_SUBSCRIPTIONS', kind: 'int', default: 100, min: 1, max: 100_000, help: 'subscriptions one client may hold' },
  { key: 'limits.maxInflightIn', flag: '--max-inflight-in', env: 'FERRY_MAX_INFLIGHT_IN', kind: 'int', default: 1000, min: 1, max: 65_535, help: 'inbound QoS 2 messages one client may leave without PUBREL; more disconnect it (MQTT 5: the Receive Maximum advertised, QoS 1 and 2 together; more get DISCONNECT 0x93)' },
  { key: 'limits.maxSessionExpiry', flag: '--max-session-expiry', env: 'FERRY_MAX_SESSION_EXPIRY', kind: 'int', default: 604_800, min: 0, max: 4_294_967_295, help: 'longest MQTT 5 Session Expiry Interval, seconds; a longer one (or "never") is lowered to it and the CONNACK says so; 0 = no cap' },
  { key: 'limits.refusedPublish', flag: '--refused-publish', env: 'FERRY_REFUSED_PUBLISH', kind: 'enum', values: ['ack', 'disconnect'], default: 'ack', help: 'an MQTT 3.1.1 QoS 1/2 publish refused by policy ($ topic, ACL, topic refused, too large to store): "ack" acknowledges and drops it (counted as drops{reason="refused"}), "disconnect" closes the connection without PUBACK; MQTT 5 devices always get the reason code' },
  { key: 'limits.maxTopicAlias', flag: '--max-topic-alias', env: 'FERRY_MAX_TOPIC_ALIAS', kind: 'int', default: 10, min: 0, max: 65_535, help: 'MQTT 5 Topic Alias Maximum advertised for inbound topic aliases; 0 = none' },
  { key: 'limits.deviceMaxBytes', flag: '--device-max-bytes', env: 'FERRY_DEVICE_MAX_BYTES', kind: 'string', default: '0', help: 'fair share: most bytes of one device\'s records not yet forwarded (all classes together), as a size (e.g. 64MiB) or a share of --log-max-bytes (e.g. 10%); over it that device\'s publishes are refused (MQTT 5: 0x97 Quota exceeded; 3.1.1: no PUBACK), counted as drops{reason="device_quota"}; 0 = no share' },
  { key: 'limits.deviceMaxRate', flag: '--device-max-rate', env: 'FERRY_DEVICE_MAX_RATE', kind: 'int', default: 0, min: 0, max: 1_000_000, help: 'publishes per second one device may make (bursts up to the same number); faster, its PUBACKs/PUBRECs are held back (and a QoS 0 publisher\'s socket paused) until it is within the rate; nothing is dropped; 0 = no limit' },
  { key: 'limits.deviceHardRate', flag: '--device-hard-rate', env: 'FERRY_DEVICE_HARD_RATE', kind: 'int', default: 0, min: 0, max: 1_000_000, help: 'publishes per second one device may send at all (bursts up to the same number): past it an MQTT 5 QoS 1/2 publish is not stored and the device gets DISCONNECT 0x96 Message rate too high (MQTT 5 allows 0x96 only there), QoS 0 ones are dropped, counted as drops{reason="rate_limited"}; 3.1.1 QoS 1/2 publishes are only held back; 0 = none; at least --device-max-rate' },
  { key: 'limits.drainTimeoutMs', flag: '--drain-timeout-ms', env: 'FERRY_DRAIN_TIMEOUT_MS', kind: 'int', default: 30_000, min: 100, max: 600_000, help: 'a subscriber that reads nothing for this long while messages wait for it is disconnected, milliseconds' },
  { key: 'http.listen', flag: '--http-listen', env: 'FERRY_HTTP_LISTEN', kind: 'hostport', default: '127.0.0.1:9464', help: 'HTTP listener HOST:PORT for /metrics (Prometheus) and /healthz' },
  { key: 'http.maxConnections', flag: '--http-max-connections', env: 'FERRY_HTTP_MAX_CONNECTIONS', kind: 'int', default: 32, min: 1, max: 10_000, help: 'open HTTP connections; more are closed at once' },
  { key: 'http.allowedHosts', flag: '--http-allowed-hosts', env: 'FERRY_HTTP_ALLOWED_HOSTS', kind: 'string', default: '', help: 'host names accepted in the HTTP Host header besides localhost, IP addresses and the --http-listen host, comma separated' },
  { key: 'log.dataDir', flag: '--data-dir', env: 'FERRY_DATA_DIR', kind: 'string', default: './data', help: 'directory of the ring log, checkpoint and dead letters' },
  { key: 'log.maxBytes', flag: '--log-max-bytes', env: 'FERRY_LOG_MAX_BYTES', kind: 'bytes', default: 1 * GiB, min: 128 * KiB, max: 2 ** 50, help: 'bound on the data directory: the ring log\'s segments plus 32KiB for the checkpoint, lock and directories (e.g. 8MiB, 512MiB, 2GiB); at least 2 segments + 32KiB' },
  { key: 'log.segmentBytes', flag: '--log-segment-bytes', env: 'FERRY_LOG_SEGMENT_BYTES', kind: 'bytes', default: 64 * MiB, min: 64 * KiB, max: 1 * GiB, help: 'size of one segment file; disk is reclaimed in whole segments. When not given: an eighth of --log-max-bytes less 32KiB, rounded down to 4KiB, at least 1MiB, at most 64MiB less 4KiB' },
  { key: 'log.discard', flag: '--discard', env: 'FERRY_DISCARD', kind: 'enum', values: ['old', 'new'], default: 'old', help: 'when the log is full: "old" evicts the oldest segment (counted, logged), "new" refuses publishes (no PUBACK)' },
  { key: 'log.fsync', flag: '--fsync', env: 'FERRY_FSYNC', kind: 'enum', values: ['always', 'batch', 'none'], default: 'always', help: 'always: PUBACK after the group commit\'s fdatasync; batch: PUBACK after write, fdatasync every --fsync-interval-ms; none: the OS decides' },
  { key: 'log.fsyncIntervalMs', flag: '--fsync-interval-ms', env: 'FERRY_FSYNC_INTERVAL_MS', kind: 'int', default: 100, min: 1, max: 60_000, help: 'fdatasync period under --fsync batch, milliseconds' },
  { key: 'log.maxRecordBytes', flag: '--max-record-bytes', env: 'FERRY_MAX_RECORD_BYTES', kind: 'bytes', default: 1023 * KiB, min: 1 * KiB, max: 64 * MiB, help: 'largest stored publish (payload as stored, after JSON to CBOR, + topic + client id + 7 bytes); default leaves 1 KiB of the NATS default max_payload (1 MiB) for headers' },
  { key: 'log.checkpointIntervalMs', flag: '--checkpoint-interval-ms', env: 'FERRY_CHECKPOINT_INTERVAL_MS', kind: 'int', default: 1000, min: 10, max: 60_000, help: 'how often the forwarded position is checkpointed, milliseconds' },
  { key: 'log.priority', flag: '--priority', env: 'FERRY_PRIORITY', kind: 'string', default: '', help: 'priority classes: MQTT topic filters and their class, FILTER=high|normal|low, comma separated (e.g. alarms/#=high,+/+/telemetry=low); the first matching filter wins, other topics and device events are normal; each class is its own part of the log (high first when a backlog drains, low evicted first under --discard old)' },
  { key: 'log.ttl', flag: '--ttl', env: 'FERRY_TTL', kind: 'string', default: '', help: 'time to live of records by topic: FILTER=DURATION, comma separated (e.g. telemetry/#=1h,+/status=10m); the first matching filter wins; an MQTT 5 Message Expiry shorter than it wins; an expired record is never forwarded (drops{reason="expired"})' },
  { key: 'nats.url', flag: '--nats-url', env: 'FERRY_NATS_URL', kind: 'urls', default: ['nats://127.0.0.1:4222'], help: 'NATS server URL(s), comma separated' },
  { key: 'nats.token', flag: '--nats-token', env: 'FERRY_NATS_TOKEN', kind: 'string', default: '', secret: true, help: 'NATS token authentication' },
  { key: 'nats.user', flag: '--nats-user', env: 'FERRY_NATS_USER', kind: 'string', default: '', help: 'NATS user (with --nats-password)' },
  { key: 'nats.password', flag: '--nats-password', env: 'FERRY_NATS_PASSWORD', kind: 'string', default: '', secret: true, help: 'NATS password' },
  { key: 'nats.nkeyFile', flag: '--nats-nkey-file', env: 'FERRY_NATS_NKEY_FILE', kind: 'string', default: '', help: 'file holding an NKey seed (SU...) for NATS authentication' },
  { key: 'nats.credsFile', flag: '--nats-creds', env: 'FERRY_NATS_CREDS', kind: 'string', default: '', help: 'NATS .creds file (user JWT and seed)' },
  { key: 'nats.tlsCa', flag: '--nats-tls-ca', env: 'FERRY_NATS_TLS_CA', kind: 'string', default: '', help: 'PEM file of the CA that signs the NATS server certificate; setting any --nats-tls-* option requires TLS' },
  { key: 'nats.tlsCert', flag: '--nats-tls-cert', env: 'FERRY_NATS_TLS_CERT', kind: 'string', default: '', help: 'PEM client certificate file for NATS (with --nats-tls-key)' },
  { key: 'nats.tlsKey', flag: '--nats-tls-key', env: 'FERRY_NATS_TLS_KEY', kind: 'string', default: '', help: 'PEM client key file for NATS' },
  { key: 'nats.stream', flag: '--stream', env: 'FERRY_STREAM', kind: 'string', default: 'FERRY', help: 'JetStream stream; created with subjects <prefix>.up.> and <prefix>.events.> when missing' },
  { key: 'nats.subjectPrefix', flag: '--subject-prefix', env: 'FERRY_SUBJECT_PREFIX', kind: 'string', default: 'ferry', help: 'prefix of every subject Ferry uses; one for a whole fleet, each gateway with its own --gateway-id (e.g. ferry)' },
  { key: 'nats.streamReplicas', flag: '--stream-replicas', env: 'FERRY_STREAM_REPLICAS', kind: 'int', default: 1, min: 1, max: 5, help: 'replicas of the streams and the key-value bucket Ferry creates (uplink --stream, --cmd-stream, the fleet registry); 3 on a JetStream cluster; an existing stream is left as it is (a warning when it has fewer)' },
  { key: 'nats.dedupWindowMs', flag: '--dedup-window', env: 'FERRY_DEDUP_WINDOW', kind: 'duration', default: 120_000, min: 1000, max: 7 * 86_400_000, help: 'JetStream duplicate window of the uplink stream when Ferry creates it (e.g. 2m, 1h; a bare number is milliseconds); a resend of a message first sent longer ago may be stored twice (counted); a warning when an existing stream has a shorter one' },
  { key: 'nats.partitions', flag: '--partitions', env: 'FERRY_PARTITIONS', kind: 'int', default: 0, min: 0, max: 1024, help: 'put a partition token into uplink and event subjects, <prefix>.up.<p>.<topic> and <prefix>.events.<p>.<device>.<event>, p = CRC-32 of the client id mod N, so N consumers can each take one partition with per-device order; 0 = no partition token' },
  { key: 'nats.maxInflight', flag: '--max-inflight', env: 'FERRY_MAX_INFLIGHT', kind: 'int', default: 2048, min: 1, max: 65_536, help: 'messages published to JetStream and not yet acknowledged' },
  { key: 'nats.maxInflightBytes', flag: '--max-inflight-bytes', env: 'FERRY_MAX_INFLIGHT_BYTES', kind: 'bytes', default: 16 * MiB, min: 64 * KiB, max: 1 * GiB, help: 'payload bytes published and not yet acknowledged' },
  { key: 'nats.ackTimeoutMs', flag: '--ack-timeout-ms', env: 'FERRY_ACK_TIMEOUT_MS', kind: 'int', default: 5000, min: 100, max: 120_000, help: 'resend a message without PubAck after this long, milliseconds (same Nats-Msg-Id)' },
  { key: 'nats.maxAttempts', flag: '--max-attempts', env: 'FERRY_MAX_ATTEMPTS', kind: 'int', default: 3, min: 1, max: 1000, help: 'JetStream rejections (4xx) of one message before it goes to the dead-letter file' },
  { key: 'nats.liveLane', flag: '--live-lane', env: 'FERRY_LIVE_LANE', kind: 'bool', default: true, help: 'while a backlog of 10,000+ records drains, forward new messages on topics without backlog at once (on|off)' },
  { key: 'forward.maxLag', flag: '--max-forward-lag', env: 'FERRY_MAX_FORWARD_LAG', kind: 'seconds', default: 2, min: 0, max: 600_000, help: 'forwarding lag (age of the oldest record JetStream has not acknowledged) past which PUBACKs are held and released at half the forwarding rate, while NATS is healthy; seconds (e.g. 2, 0.5, 500ms); 0 = never slow down' },
  { key: 'forward.uplinkHeaders', flag: '--uplink-headers', env: 'FERRY_UPLINK_HEADERS', kind: 'enum', values: ['full', 'compact'], default: 'full', help: 'headers of uplink messages: "full" (every header) or "compact" (no Nats-Expected-Stream; no Content-Type when application/cbor; no Ferry-Client when the subject carries the client id); see README' },
  { key: 'forward.drainMaxRate', flag: '--drain-max-rate', env: 'FERRY_DRAIN_MAX_RATE', kind: 'string', default: '', help: 'cap on how fast a backlog is sent upstream: N/s (messages), SIZE/s (payload bytes, e.g. 64KiB/s) or both, comma separated; high-priority records and the live lane are never held by it (but count toward it); empty = no cap' },
  { key: 'downlink.cmdStream', flag: '--cmd-stream', env: 'FERRY_CMD_STREAM', kind: 'string', default: 'FERRY_CMD', help: 'JetStream stream of commands to devices; created when missing (work queue, subjects <prefix>.cmd.>)' },
  { key: 'downlink.cmdTopic', flag: '--cmd-topic', env: 'FERRY_CMD_TOPIC', kind: 'string', default: 'commands/{device}/{rest}', help: 'MQTT topic a command on <prefix>.cmd.<device>.<rest> is delivered on ({device}: client id, {rest}: the subject tokens after it as topic levels)' },
  { key: 'downlink.cmdTtlMs', flag: '--cmd-ttl-ms', env: 'FERRY_CMD_TTL_MS', kind: 'int', default: 0, min: 0, max: 365 * 86_400_000, help: 'TTL of commands without a Ferry-TTL header, milliseconds; an older command is never delivered (0 = none)' },
  { key: 'downlink.cmdMaxDeliver', flag: '--cmd-max-deliver', env: 'FERRY_CMD_MAX_DELIVER', kind: 'int', default: 5, min: 1, max: 1000, help: 'deliveries of a command without PUBACK before it is terminated as dead (event command-dead)' },
  { key: 'downlink.cmdAckTimeoutMs', flag: '--cmd-ack-timeout-ms', env: 'FERRY_CMD_ACK_TIMEOUT_MS', kind: 'int', default: 10_000, min: 100, max: 600_000, help: 'wait this long for a device\'s PUBACK of a command before delivering it again, milliseconds' },
  { key: 'downlink.cmdMaxInflight', flag: '--cmd-max-inflight', env: 'FERRY_CMD_MAX_INFLIGHT', kind: 'int', default: 1000, min: 1, max: 1_000_000, help: 'commands being delivered at once, all devices together (each device: one at a time, in order)' },
  { key: 'downlink.rpcTimeoutMs', flag: '--rpc-timeout-ms', env: 'FERRY_RPC_TIMEOUT_MS', kind: 'int', default: 10_000, min: 100, max: 600_000, help: 'default and longest wait for a device\'s RPC response (a request may ask less with header Ferry-Timeout), milliseconds' },
  { key: 'downlink.rpcMaxPending', flag: '--rpc-max-pending', env: 'FERRY_RPC_MAX_PENDING', kind: 'int', default: 1000, min: 1, max: 1_000_000, help: 'RPC requests waiting for devices at once; more are answered "429 too many pending requests"' },
  { key: 'downlink.requestTopic', flag: '--request-topic', env: 'FERRY_REQUEST_TOPIC', kind: 'string', default: 'requests/{device}/{service}/{method}', help: 'MQTT topic of requests from devices to cloud services ({device}: the client id, {service} and {method}: the NATS request <prefix>.svc.<service>.<method>); 3.1.1 devices add a correlation id level' },
  { key: 'downlink.requestTimeoutMs', flag: '--request-timeout-ms', env: 'FERRY_REQUEST_TIMEOUT_MS', kind: 'int', default: 5000, min: 100, max: 600_000, help: 'wait this long for a cloud service to answer a device\'s request, then answer the device "504 service did not answer", milliseconds' },
  { key: 'downlink.requestMaxPending', flag: '--request-max-pending', env: 'FERRY_REQUEST_MAX_PENDING', kind: 'int', default: 1000, min: 1, max: 1_000_000, help: 'device requests waiting for cloud services at once, all devices together; more are answered "429 too many pending requests"' },
  { key: 'downlink.requestMaxPendingPerDevice', flag: '--request-max-pending-per-device', env: 'FERRY_REQUEST_MAX_PENDING_PER_DEVICE', kind: 'int', default: 8, min: 1, max: 100_000, help: 'requests one device may have waiting for cloud services at once; more are answered "429 too many pending requests"' },
  { key: 'fleet.registry', flag: '--fleet-registry', env: 'FERRY_FLEET_REGISTRY', kind: 'bool', default: true, help: 'keep the fleet-wide device registry (device -> gateway) in a JetStream key-value bucket, and take a device over from another gateway that still shows it connected (on|off)' },
  { key: 'fleet.registryBucket', flag: '--registry-bucket', env: 'FERRY_REGISTRY_BUCKET', kind: 'string', default: '', help: 'key-value bucket of the fleet registry (default: the subject prefix with "." as "_", then "_devices", e.g. ferry_devices)' },
  { key: 'fleet.heartbeatMs', flag: '--registry-heartbeat-ms', env: 'FERRY_REGISTRY_HEARTBEAT_MS', kind: 'int', default: 5000, min: 100, max: 600_000, help: 'how often a gateway renews its liveness entry in the registry, milliseconds; a gateway silent for 6 heartbeats is dead and its device entries are removed' },
  { key: 'presence', flag: '--presence', env: 'FERRY_PRESENCE', kind: 'bool', default: true, help: 'write a "connected" and a "disconnected" event per device session to <prefix>.events.<device>.<event> (with --partitions: <prefix>.events.<p>.<device>.<event>) (on|off)' },
  { key: 'codec.cbor', flag: '--cbor', env: 'FERRY_CBOR', kind: 'bool', default: true, help: 'send JSON payloads as CBOR (on|off)' },
  { key: 'codec.rawTopics', flag: '--raw-topics', env: 'FERRY_RAW_TOPICS', kind: 'topics', default: [], help: 'MQTT topic filters (comma separated, + and # allowed) whose payloads are always sent unchanged' },
  { key: 'logging.level', flag: '--log-level', env: 'FERRY_LOG_LEVEL', kind: 'enum', values: ['debug', 'info', 'warn', 'error'], default: 'info', help: 'least severe log level written' },
  { key: 'logging.format', flag: '--log-format', env: 'FERRY_LOG_FORMAT', kind: 'enum', values: ['auto', 'json', 'pretty'], default: 'auto', help: 'json lines, pretty text, or auto (pretty on a terminal)' },
  { key: 'readyStallMs', flag: '--ready-stall-ms', env: 'FERRY_READY_STALL_MS', kind: 'int', default: 30_000, min: 1000, max: 3_600_000, help: '/readyz fails when records wait this long without any JetStream PubAck although NATS is connected, milliseconds (degraded from --ack-timeout-ms on)' },
  { key: 'shutdownTimeoutMs', flag: '--shutdown-timeout', env: 'FERRY_SHUTDOWN_TIMEOUT', kind: 'duration', default: 10_000, min: 0, max: 600_000, help: 'deadline for a graceful stop (e.g. 10s, 1500ms, 2m; a bare number is milliseconds); a second signal exits at once' },
]

/** Priority classes, most important first. */
export const PRIORITY_CLASSES = ['high', 'normal', 'low'] as const
export type PriorityClass = (typeof PRIORITY_CLASSES)[number]

/** One --priority rule: topics matching `filter` are of class `class`. */
export interface PriorityRule {
  readonly filter: string
  readonly class: PriorityClass
}

/** One --ttl rule: records of topics matching `filter` expire `ttlMs` after they were received. */
export interface TtlRule {
  readonly filter: string
  readonly ttlMs: number
}

/** --drain-max-rate: messages and payload bytes per second; 0 = no cap on that measure. */
export interface DrainMaxRate {
  readonly messagesPerSecond: number
  readonly bytesPerSecond: number
}

/** The validated, frozen configuration. Sizes in bytes, times in milliseconds. */
export interface Config {
  readonly gatewayId: string
  readonly mqtt: { readonly host: string; readonly port: number }
  readonly mqtts: { readonly host: string; readonly port: number } | null
  readonly tls: { readonly cert: string; readonly key: string; readonly ca: string; readonly requireClientCert: boolean }
  readonly auth: { readonly file: string; readonly aclFile: string; readonly allowAnonymous: boolean }
  readonly limits: {
    readonly maxPacketBytes: number
    readonly maxConnections: number
    readonly connectionRate: number
    readonly connectionRatePerAddress: number
    readonly maxTlsHandshakes: number
    readonly tlsHandshakeRatePerAddress: number
    readonly connectTimeoutMs: number
    readonly maxKeepalive: number
    readonly maxTopicBytes: number
    readonly maxTopicLevels: number
    readonly maxSubscriptions: number
    readonly maxInflightIn: number
    /** MQTT 5 Session Expiry Interval cap, seconds; 0 = no cap. */
    readonly maxSessionExpiry: number
    /** MQTT 5 inbound Topic Alias Maximum; 0 = no aliases. */
    readonly maxTopicAlias: number
    /** An MQTT 3.1.1 publish refused by policy: acknowledged and dropped, or the connection closed. */
    readonly refusedPublish: 'ack' | 'disconnect'
    readonly drainTimeoutMs: number
    /** Fair share: most unforwarded bytes of one device (a size given or the share of log.maxBytes resolved); 0 = none. */
    readonly deviceMaxBytes: number
    /** Publishes per second per device before PUBACKs are held back; 0 = no limit. */
    readonly deviceMaxRate: number
    /** Publishes per second per device past which MQTT 5 publishes get 0x96 (QoS 0 dropped); 0 = none. */
    readonly deviceHardRate: number
  }
  /** `maxConnections`: open HTTP connections. `allowedHosts`: extra Host header names, comma separated ('' = none). */
  readonly http: { readonly host: string; readonly port: number; readonly maxConnections: number; readonly allowedHosts: string }
  readonly log: {
    readonly dataDir: string
    readonly maxBytes: number
    readonly segmentBytes: number
    readonly discard: 'old' | 'new'
    readonly fsync: 'always' | 'batch' | 'none'
    readonly fsyncIntervalMs: number
    readonly maxRecordBytes: number
    readonly checkpointIntervalMs: number
    /** --priority, in order (first match wins); empty: one class, the log as before. */
    readonly priority: readonly PriorityRule[]
    /** --ttl, in order (first match wins). */
    readonly ttl: readonly TtlRule[]
  }
  readonly nats: {
    readonly url: readonly string[]
    readonly token: string
    readonly user: string
    readonly password: string
    readonly nkeyFile: string
    readonly credsFile: string
    readonly tlsCa: string
    readonly tlsCert: string
    readonly tlsKey: string
    readonly stream: string
    readonly subjectPrefix: string
    readonly maxInflight: number
    readonly maxInflightBytes: number
    readonly ackTimeoutMs: number
    readonly maxAttempts: number
    readonly liveLane: boolean
    /** Replicas of the streams and bucket Ferry creates. */
    readonly streamReplicas: number
    /** Duplicate window of the uplink stream Ferry creates, ms. */
    readonly dedupWindowMs: number
    /** Partition tokens in uplink and event subjects; 0 = none. */
    readonly partitions: number
  }
  readonly forward: {
    /** --max-forward-lag (config file key forward.maxLag, in seconds), held here in milliseconds; 0 = never slow ingress down. */
    readonly maxLag: number
    /** Which headers uplink messages carry (README "Compact uplink headers"). */
    readonly uplinkHeaders: 'full' | 'compact'
    /** --drain-max-rate; 0 = no cap on that measure. */
    readonly drainMaxRate: DrainMaxRate
  }
  readonly downlink: {
    readonly cmdStream: string
    readonly cmdTopic: string
    readonly cmdTtlMs: number
    readonly cmdMaxDeliver: number
    readonly cmdAckTimeoutMs: number
    readonly cmdMaxInflight: number
    readonly rpcTimeoutMs: number
    readonly rpcMaxPending: number
    readonly requestTopic: string
    readonly requestTimeoutMs: number
    readonly requestMaxPending: number
    readonly requestMaxPendingPerDevice: number
  }
  readonly fleet: {
    /** Keep the fleet device registry in JetStream KV (and take devices over across gateways). */
    readonly registry: boolean
    /** Its bucket; '' = derived from the subject prefix (fleetRegistryBucket). */
    readonly registryBucket: string
    readonly heartbeatMs: number
  }
  readonly presence: boolean
  readonly codec: { readonly cbor: boolean; readonly rawTopics: readonly string[] }
  readonly logging: { readonly level: 'debug' | 'info' | 'warn' | 'error'; readonly format: 'auto' | 'json' | 'pretty' }
  readonly readyStallMs: number
  readonly shutdownTimeoutMs: number
}
