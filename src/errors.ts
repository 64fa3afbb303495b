// FerryError and the one catalogue of error codes; every code is documented in README's error table.

/** Every error code Ferry can raise, with a one-line meaning. README's "Errors" table lists exactly these. */
export const ERROR_CODES = {
  FERRY_ERR_CONFIG_INVALID: 'the configuration (flags, FERRY_* environment, file) has one or more invalid values',
  FERRY_ERR_CONFIG_FILE: 'the configuration file cannot be read or parsed',
  FERRY_ERR_LOG_FULL: 'the ring log is at --log-max-bytes and --discard new refuses the append',
  FERRY_ERR_LOG_CLOSED: 'the ring log was used after close()',
  FERRY_ERR_LOG_IO: 'a write or fdatasync on the ring log failed; the segment is not trusted again',
  FERRY_ERR_LOG_LOCKED: 'another Ferry process uses the data directory',
  FERRY_ERR_LOG_RECORD_TOO_LARGE: 'a record is larger than the log accepts',
  FERRY_ERR_CODEC_SUBJECT: 'a NATS subject is not one Ferry produced (cannot be decoded to an MQTT topic)',
  FERRY_ERR_CODEC_ENTRY: 'a log entry cannot be decoded',
  FERRY_ERR_FORWARD_STREAM: 'the JetStream stream cannot be created or does not capture the uplink subjects',
  FERRY_ERR_INGRESS_LISTEN: 'the MQTT listener cannot bind its address',
  FERRY_ERR_HTTP_LISTEN: 'the HTTP (metrics) listener cannot bind its address',
  FERRY_ERR_AUTH_FILE: 'the credentials file (--auth-file) cannot be read or has an invalid line',
  FERRY_ERR_ACL_FILE: 'the ACL file (--acl-file) cannot be read or has an invalid rule',
  FERRY_ERR_TLS: 'a TLS certificate, key or CA file cannot be read or used',
  FERRY_ERR_INGRESS_REFUSED: 'a device publish was refused (topic, size or log full)',
} as const

export type ErrorCode = keyof typeof ERROR_CODES

/** Base class of every error Ferry raises on purpose. `cause` chains the underlying error. */
export class FerryError extends Error {
  readonly code: ErrorCode
  constructor(code: ErrorCode, message: string, options?: ErrorOptions) {
    super(message, options)
    this.name = 'FerryError'
    this.code = code
  }
}

/** Configuration problems, all of them collected into one error. */
export class ConfigError extends FerryError {
  readonly problems: readonly string[]
  constructor(problems: readonly string[], options?: ErrorOptions) {
    super('FERRY_ERR_CONFIG_INVALID', `invalid configuration:\n  - ${problems.join('\n  - ')}`, options)
    this.name = 'ConfigError'
    this.problems = problems
  }
}

/** The log refused an append because it is full under `discard: "new"`. */
export class LogFullError extends FerryError {
  /** True when the file system is full (ENOSPC), false when the log is at --log-max-bytes. */
  readonly diskFull: boolean
  constructor(message: string, diskFull = false) {
    super('FERRY_ERR_LOG_FULL', message)
    this.diskFull = diskFull
    this.name = 'LogFullError'
  }
}

/** The log was closed. */
export class LogClosedError extends FerryError {
  constructor() {
    super('FERRY_ERR_LOG_CLOSED', 'ring log is closed')
    this.name = 'LogClosedError'
  }
}

/** A write or sync failed; the batch was not acknowledged. */
export class LogIoError extends FerryError {
  constructor(message: string, options?: ErrorOptions) {
    super('FERRY_ERR_LOG_IO', message, options)
    this.name = 'LogIoError'
  }
}
