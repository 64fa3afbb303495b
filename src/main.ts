// Process entry: argv and environment → config → gateway; signals; the only place that exits the process.
import fs from 'node:fs'
import os from 'node:os'
import { mainHelp, runHelp, VERSION, versionText } from './cli/help.js'
import { check } from './cli/check.js'
import { devices } from './cli/devices.js'
import { logTools } from './cli/log-tools.js'
import { passwd } from './cli/passwd.js'
import { loadConfig, redactedConfig } from './config/index.js'
import { ConfigError, FerryError } from './errors.js'
import { Gateway, classBoundProblem } from './gateway.js'
import { createLogger } from './logger.js'

/** Descriptors Ferry needs besides its MQTT and HTTP connections: log segments, checkpoint, NATS, dead letters, listeners, Node's own. */
const OWN_DESCRIPTORS = 64

/** The soft limit on open files of this process (from /proc/self/limits), undefined when unknown or unlimited. */
function descriptorSoftLimit(): number | undefined {
  try {
    const m = /^Max open files\s+(\d+|unlimited)\s/m.exec(fs.readFileSync('/proc/self/limits', 'utf8'))
    return m?.[1] === undefined || m[1] === 'unlimited' ? undefined : Number(m[1])
  } catch {
    return undefined // not Linux
  }
}

async function run(args: string[]): Promise<number> {
  if (args.includes('--help') || args.includes('-h')) {
    process.stdout.write(runHelp())
    return 0
  }
  let config
  try {
    config = loadConfig({ argv: args, env: process.env, hostname: os.hostname() })
  } catch (err) {
    if (err instanceof ConfigError || (err instanceof FerryError && err.code === 'FERRY_ERR_CONFIG_FILE')) {
      process.stderr.write(`ferry: ${err.message}\n`)
      return 2
    }
    throw err
  }
  // The class logs on disk (an earlier --priority) count too: only known here, not by the config check.
  const bound = classBoundProblem(config)
  if (bound) {
    process.stderr.write(`ferry: invalid configuration:\n  - ${bound}\n`)
    return 2
  }
  const format = config.logging.format === 'auto' ? (process.stderr.isTTY ? 'pretty' : 'json') : config.logging.format
  const logger = createLogger({ level: config.logging.level, format, write: (l) => process.stderr.write(l) })
  // A bug must not leave a half-working gateway: log it structured and exit for the supervisor.
  process.on('unhandledRejection', (err) => {
    logger.error('unhandled rejection; exiting', { error: err })
    process.exit(1)
  })
  // Signals are handled from the start: a SIGTERM during recovery stops right after it, gracefully.
  let gateway: Gateway | undefined
  let stopRequested: string | undefined
  let stop: (signal: string) => void = (signal) => {
    if (stopRequested) process.exit(130)
    stopRequested = signal
    logger.info('stop requested while starting; stopping once started', { signal })
  }
  process.on('SIGINT', () => stop('SIGINT'))
  process.on('SIGTERM', () => stop('SIGTERM'))
  // SIGHUP reloads the credentials and ACL files (without it, SIGHUP would end the process).
  let reload = (): void => logger.warn('SIGHUP while starting: nothing reloaded; send it again once started')
  process.on('SIGHUP', () => reload())
  logger.info('starting', { version: VERSION, node: process.version, pid: process.pid, config: redactedConfig(config) })
  // Descriptors are a budget: every connection holds one, and a log that cannot open its next segment refuses publishes.
  const softLimit = descriptorSoftLimit()
  const needed = config.limits.maxConnections + config.http.maxConnections + OWN_DESCRIPTORS
  if (softLimit !== undefined && needed > softLimit) {
    logger.warn('--max-connections does not fit the open-files limit: at the limit, new connections are refused and publishes wait for a descriptor. Raise the limit (ulimit -n, systemd LimitNOFILE=) or lower --max-connections', {
      maxConnections: config.limits.maxConnections,
      httpMaxConnections: config.http.maxConnections,
      ownDescriptors: OWN_DESCRIPTORS,
      needed,
      softLimit,
      suggestedMaxConnections: Math.max(0, softLimit - config.http.maxConnections - OWN_DESCRIPTORS),
    })
  }
  try {
    // On a terminal, a long recovery shows its progress; otherwise the "ring log recovered" line says it all.
    const tty = process.stderr.isTTY && format === 'pretty'
    let shown = false
    gateway = await Gateway.start(config, logger, {
      onRecoveryProgress: (done, total) => {
        if (!tty || total < 8) return
        shown = true
        process.stderr.write(`\rrecovering the ring log: segment ${done + 1} of ${total}`)
      },
    })
    if (shown) process.stderr.write('\n')
  } catch (err) {
    logger.error('failed to start', { error: err })
    // A credentials, ACL or certificate file that cannot be used is a configuration error.
    const code = (err as FerryError).code
    if (code === 'FERRY_ERR_AUTH_FILE' || code === 'FERRY_ERR_ACL_FILE' || code === 'FERRY_ERR_TLS') {
      process.stderr.write(`ferry: ${(err as Error).message}\n`)
      return 2
    }
    return 1
  }
  const started = gateway
  reload = () => started.admission.reload()
  started.metrics.processRss.collect(() => process.memoryUsage.rss())
  started.metrics.processHeap.collect(() => process.memoryUsage().heapUsed)
  return new Promise<number>((resolve) => {
    let stopping = false
    stop = (signal: string): void => {
      if (stopping) {
        logger.warn('second signal: exiting at once', { signal })
        resolve(130)
        return
      }
      stopping = true
      logger.info('stopping', { signal, timeoutMs: config.shutdownTimeoutMs })
      const timer = setTimeout(() => {
        logger.error('graceful stop exceeded its deadline; exiting')
        resolve(1)
      }, config.shutdownTimeoutMs + 2000)
      timer.unref()
      started.close().then(
        () => resolve(0),
        (err: unknown) => {
          logger.error('error while stopping', { error: err })
          resolve(1)
        },
      )
    }
    if (stopRequested) stop(stopRequested)
    // A component that stops on its own failure (a failed write or fdatasync stops the ring log)
    // ends the process: a supervisor restarts Ferry, and recovery runs from what is on disk.
    void started.closed().then((err) => {
      if (!err) return // closed by a signal
      if (started.failure?.component === 'log') logger.error('ring log failed; exiting so a supervisor restarts Ferry and recovery runs', { error: err })
      else logger.error(`${started.failure?.component ?? 'a component'} failed; exiting so a supervisor restarts Ferry`, { error: err })
      resolve(1)
    })
  })
}

async function main(argv: string[]): Promise<number> {
  const [cmd, ...rest] = argv
  switch (cmd) {
    case 'run':
      return run(rest)
    case 'passwd':
      return passwd(rest)
    case 'devices':
      return devices(rest)
    case 'log':
    case 'dlq':
    case 'replay':
      return logTools(cmd, rest)
    case 'check':
      return check(rest)
    case 'version':
    case '--version':
      process.stdout.write(`${versionText()}\n`)
      return 0
    case undefined:
    case 'help':
    case '--help':
    case '-h':
      process.stdout.write(mainHelp())
      return 0
    default:
      process.stderr.write(`ferry: unknown command ${JSON.stringify(cmd)}\n\n${mainHelp()}`)
      return 2
  }
}

/**
 * Exits once what was written to stdout and stderr has been handed to the OS: `ferry log dump | slow-reader` must
 * not lose the end of its output. A reader that never drains gets 5 s.
 */
function exitAfterFlush(code: number): void {
  let waiting = 2
  const done = (): void => {
    if (--waiting === 0) process.exit(code)
  }
  setTimeout(() => process.exit(code), 5000).unref()
  process.stdout.write('', done)
  process.stderr.write('', done)
}

main(process.argv.slice(2)).then(
  (code) => exitAfterFlush(code),
  (err: unknown) => {
    process.stderr.write(`ferry: fatal: ${err instanceof Error ? (err.stack ?? err.message) : String(err)}\n`)
    process.exit(1)
  },
)
