// Help texts of the command line, generated from the option table so they never drift.
import { OPTIONS } from '../config/index.js'

export { VERSION } from '../version.js'
import { VERSION } from '../version.js'

function defaultText(v: unknown): string {
  if (Array.isArray(v)) return v.length === 0 ? '(none)' : v.join(',')
  if (v === '') return '(see text)'
  return String(v)
}

/**
 * `ferry version`: Ferry's version first (scripts read it), then the Node runtime it runs on, which for the single
 * executables is the one embedded in them, e.g. `0.1.0 (node v26.12.1, linux-arm64)`.
 */
export function versionText(): string {
  return `${VERSION} (node ${process.version}, ${process.platform}-${process.arch})`
}

/** `ferry --help`. */
export function mainHelp(): string {
  return `ferry ${VERSION} - edge MQTT gateway: MQTT in, durable ring log, NATS JetStream out

Usage:
  ferry run [options]      run the gateway (see 'ferry run --help')
  ferry passwd FILE DEVICE add or change a device's password in a credentials file (--auth-file);
                           asks on a terminal, else reads the first line of stdin
  ferry devices [--http HOST:PORT] [--json]
                           devices connected to a running gateway (its --http-listen)
  ferry devices --fleet [--json] [--config FILE] [NATS flags]
                           every device of the fleet, from the registry bucket in NATS
  ferry check [--config FILE] [options]
                           validate a configuration and the files it names, printing every problem
  ferry log stat DIR       segments, positions, backlog and damage of a data directory
  ferry log dump DIR [--from SEQ] [--limit N] [--json]
                           records with topic, time, size and a payload preview
  ferry dlq list|show|replay|purge DIR [--seq SEQ]
                           dead letters: list, show one, put back in line, remove (replay and purge:
                           gateway stopped)
  ferry replay [--data-dir DIR] --from SEQ | --since TIME
                           forward acknowledged history still on disk again (gateway stopped)
                           With --priority the logs of classes high and low are DIR/high and DIR/low:
                           log stat/dump show each class log; --class high|normal|low picks one (log
                           stat, log dump, replay; for dlq the dead letters of that class); dlq replay
                           puts each dead letter back in its class's log; replay --from needs --class
  ferry version            print the version and the Node runtime it runs on
  ferry help               this text

Exit codes: 0 clean stop, 1 runtime failure, 2 invalid configuration, 130 second signal.
Signals: SIGTERM/SIGINT stop gracefully; SIGHUP reloads --auth-file and --acl-file.
`
}

/** `ferry run --help`: every option with flag, environment variable and default. */
export function runHelp(): string {
  const lines = [
    'Usage: ferry run [options]',
    '',
    'Precedence: flags > FERRY_* environment > --config FILE (JSON or YAML) > defaults.',
    '',
    '  --config FILE  (FERRY_CONFIG)',
    '      configuration file; keys are the names below, nested (log: {maxBytes: 2GiB}) or dotted',
  ]
  for (const o of OPTIONS) {
    lines.push(`  ${o.flag} <${o.kind}>  (${o.env}; file key ${o.key}; default ${defaultText(o.default)})`)
    lines.push(`      ${o.help}`)
  }
  return lines.join('\n') + '\n'
}
