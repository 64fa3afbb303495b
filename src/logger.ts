// Structured logger: JSON lines by default, a compact human format on terminals.

export type LogLevel = 'debug' | 'info' | 'warn' | 'error'
const LEVELS: Record<LogLevel, number> = { debug: 10, info: 20, warn: 30, error: 40 }

/** Fields attached to one log line. Errors are expanded to message, code and cause. */
export type LogFields = Record<string, unknown>

export interface Logger {
  debug(msg: string, fields?: LogFields): void
  info(msg: string, fields?: LogFields): void
  warn(msg: string, fields?: LogFields): void
  error(msg: string, fields?: LogFields): void
  child(component: string): Logger
}

export interface LoggerOptions {
  /** Minimum level written. Default "info". */
  level: LogLevel
  /** "json" (one object per line) or "pretty" (for terminals). */
  format: 'json' | 'pretty'
  /** Where lines go; default process.stderr-like sink supplied by main. */
  write: (line: string) => void
}

function plain(value: unknown): unknown {
  if (value instanceof Error) {
    const out: Record<string, unknown> = { message: value.message }
    const code = (value as { code?: unknown }).code
    if (code !== undefined) out.code = code
    if (value.cause !== undefined) out.cause = plain(value.cause)
    return out
  }
  if (typeof value === 'bigint') return value.toString()
  return value
}

/** Creates a logger. `component` names the stage that logs ("log", "forward", ...). */
export function createLogger(opts: LoggerOptions, component = 'ferry'): Logger {
  const min = LEVELS[opts.level]
  const emit = (level: LogLevel, msg: string, fields?: LogFields): void => {
    if (LEVELS[level] < min) return
    if (opts.format === 'json') {
      const rec: Record<string, unknown> = { t: new Date().toISOString(), level, c: component, msg }
      if (fields) for (const [k, v] of Object.entries(fields)) rec[k] = plain(v)
      opts.write(JSON.stringify(rec) + '\n')
    } else {
      let line = `${new Date().toISOString().slice(11, 23)} ${level.toUpperCase().padEnd(5)} ${component}: ${msg}`
      if (fields) for (const [k, v] of Object.entries(fields)) line += ` ${k}=${JSON.stringify(plain(v))}`
      opts.write(line + '\n')
    }
  }
  return {
    debug: (m, f) => emit('debug', m, f),
    info: (m, f) => emit('info', m, f),
    warn: (m, f) => emit('warn', m, f),
    error: (m, f) => emit('error', m, f),
    child: (c) => createLogger(opts, c),
  }
}

/** A logger that drops everything (tests and tools). */
export const silentLogger: Logger = createLogger({ level: 'error', format: 'json', write: () => {} })
