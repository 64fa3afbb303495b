// The configuration: every option once, with its flag, environment variable, default, unit and meaning.

/** Value kinds an option can have. */
export type OptionKind = 'string' | 'int' | 'bytes' | 'bool' | 'enum' | 'hostport' | 'urls' | 'topics'

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
  { key: 'http.listen', flag: '--http-listen', env: 'FERRY_HTTP_LISTEN', kind: 'hostport', default: '127.0.0.1:9464', help: 'HTTP listener HOST:PORT for /metrics (Prometheus) and /healthz' },
  { key: 'log.dataDir', flag: '--data-dir', env: 'FERRY_DATA_DIR', kind: 'string', default: './data', help: 'directory of the ring log, checkpoint and dead letters' },
  { key: 'log.maxBytes', flag: '--log-max-bytes', env: 'FERRY_LOG_MAX_BYTES', kind: 'bytes', default: 1 * GiB, min: 128 * KiB, max: 2 ** 50, help: 'bound on the ring log on disk (e.g. 512MiB, 2GiB); at least 2 segments' },
  { key: 'log.segmentBytes', flag: '--log-segment-bytes', env: 'FERRY_LOG_SEGMENT_BYTES', kind: 'bytes', default: 64 * MiB, min: 64 * KiB, max: 1 * GiB, help: 'size of one segment file; disk is reclaimed in whole segments' },
  { key: 'log.discard', flag: '--discard', env: 'FERRY_DISCARD', kind: 'enum', values: ['old', 'new'], default: 'old', help: 'when the log is full: "old" evicts the oldest segment (counted, logged), "new" refuses publishes (no PUBACK)' },
  { key: 'log.fsync', flag: '--fsync', env: 'FERRY_FSYNC', kind: 'enum', values: ['always', 'batch', 'none'], default: 'always', help: 'always: PUBACK after the group commit\'s fdatasync; batch: PUBACK after write, fdatasync every --fsync-interval-ms; none: the OS decides' },
  { key: 'log.fsyncIntervalMs', flag: '--fsync-interval-ms', env: 'FERRY_FSYNC_INTERVAL_MS', kind: 'int', default: 100, min: 1, max: 60_000, help: 'fdatasync period under --fsync batch, milliseconds' },
  { key: 'log.maxRecordBytes', flag: '--max-record-bytes', env: 'FERRY_MAX_RECORD_BYTES', kind: 'bytes', default: 1023 * KiB, min: 1 * KiB, max: 64 * MiB, help: 'largest stored publish (payload + topic + client id + 7 bytes); default leaves 1 KiB of the NATS default max_payload (1 MiB) for headers' },
  { key: 'log.checkpointIntervalMs', flag: '--checkpoint-interval-ms', env: 'FERRY_CHECKPOINT_INTERVAL_MS', kind: 'int', default: 1000, min: 10, max: 60_000, help: 'how often the forwarded position is checkpointed, milliseconds' },
  { key: 'nats.url', flag: '--nats-url', env: 'FERRY_NATS_URL', kind: 'urls', default: ['nats://127.0.0.1:4222'], help: 'NATS server URL(s), comma separated' },
  { key: 'nats.stream', flag: '--stream', env: 'FERRY_STREAM', kind: 'string', default: 'FERRY', help: 'JetStream stream; created with subjects <prefix>.up.> and <prefix>.events.> when missing' },
  { key: 'nats.subjectPrefix', flag: '--subject-prefix', env: 'FERRY_SUBJECT_PREFIX', kind: 'string', default: 'ferry', help: 'prefix of every subject Ferry uses (e.g. ferry.site1)' },
  { key: 'nats.maxInflight', flag: '--max-inflight', env: 'FERRY_MAX_INFLIGHT', kind: 'int', default: 2048, min: 1, max: 65_536, help: 'messages published to JetStream and not yet acknowledged' },
  { key: 'nats.maxInflightBytes', flag: '--max-inflight-bytes', env: 'FERRY_MAX_INFLIGHT_BYTES', kind: 'bytes', default: 16 * MiB, min: 64 * KiB, max: 1 * GiB, help: 'payload bytes published and not yet acknowledged' },
  { key: 'nats.ackTimeoutMs', flag: '--ack-timeout-ms', env: 'FERRY_ACK_TIMEOUT_MS', kind: 'int', default: 5000, min: 100, max: 120_000, help: 'resend a message without PubAck after this long, milliseconds (same Nats-Msg-Id)' },
  { key: 'nats.maxAttempts', flag: '--max-attempts', env: 'FERRY_MAX_ATTEMPTS', kind: 'int', default: 3, min: 1, max: 1000, help: 'JetStream rejections (4xx) of one message before it goes to the dead-letter file' },
  { key: 'nats.liveLane', flag: '--live-lane', env: 'FERRY_LIVE_LANE', kind: 'bool', default: true, help: 'while a backlog of 10,000+ records drains, forward new messages on topics without backlog at once (on|off)' },
  { key: 'codec.cbor', flag: '--cbor', env: 'FERRY_CBOR', kind: 'bool', default: true, help: 'send JSON payloads as CBOR (on|off)' },
  { key: 'codec.rawTopics', flag: '--raw-topics', env: 'FERRY_RAW_TOPICS', kind: 'topics', default: [], help: 'MQTT topic filters (comma separated, + and # allowed) whose payloads are always sent unchanged' },
  { key: 'logging.level', flag: '--log-level', env: 'FERRY_LOG_LEVEL', kind: 'enum', values: ['debug', 'info', 'warn', 'error'], default: 'info', help: 'least severe log level written' },
  { key: 'logging.format', flag: '--log-format', env: 'FERRY_LOG_FORMAT', kind: 'enum', values: ['auto', 'json', 'pretty'], default: 'auto', help: 'json lines, pretty text, or auto (pretty on a terminal)' },
  { key: 'shutdownTimeoutMs', flag: '--shutdown-timeout-ms', env: 'FERRY_SHUTDOWN_TIMEOUT_MS', kind: 'int', default: 10_000, min: 0, max: 600_000, help: 'deadline for a graceful stop, milliseconds' },
]

/** The validated, frozen configuration. Sizes in bytes, times in milliseconds. */
export interface Config {
  readonly gatewayId: string
  readonly mqtt: { readonly host: string; readonly port: number }
  readonly http: { readonly host: string; readonly port: number }
  readonly log: {
    readonly dataDir: string
    readonly maxBytes: number
    readonly segmentBytes: number
    readonly discard: 'old' | 'new'
    readonly fsync: 'always' | 'batch' | 'none'
    readonly fsyncIntervalMs: number
    readonly maxRecordBytes: number
    readonly checkpointIntervalMs: number
  }
  readonly nats: {
    readonly url: readonly string[]
    readonly stream: string
    readonly subjectPrefix: string
    readonly maxInflight: number
    readonly maxInflightBytes: number
    readonly ackTimeoutMs: number
    readonly maxAttempts: number
    readonly liveLane: boolean
  }
  readonly codec: { readonly cbor: boolean; readonly rawTopics: readonly string[] }
  readonly logging: { readonly level: 'debug' | 'info' | 'warn' | 'error'; readonly format: 'auto' | 'json' | 'pretty' }
  readonly shutdownTimeoutMs: number
}
