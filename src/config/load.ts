// Collects raw values from flags, FERRY_* environment and a JSON/YAML file, with that precedence.
import fs from 'node:fs'
import { parse as parseYaml } from 'yaml'
import { ConfigError, FerryError } from '../errors.js'
import { flattenFile, parseConfig } from './parse.js'
import type { RawValues } from './parse.js'
import { OPTIONS } from './schema.js'
import type { Config } from './schema.js'

/** Inputs of {@link loadConfig}: argv after the subcommand, the environment and the host name. */
export interface LoadInput {
  readonly argv: readonly string[]
  readonly env: Readonly<Record<string, string | undefined>>
  readonly hostname: string
}

const BOOL_WORD = /^(true|false|on|off|yes|no|1|0)$/i

/**
 * Parses `--flag value` / `--flag=value` arguments; a boolean flag alone means true. `--config FILE` names the file. Unknown flags,
 * missing values and positional arguments are problems.
 */
export function parseFlags(argv: readonly string[], problems: string[]): { values: RawValues; configFile?: string } {
  const byFlag = new Map(OPTIONS.map((o) => [o.flag, o]))
  const values: RawValues = new Map()
  let configFile: string | undefined
  for (let i = 0; i < argv.length; i++) {
    const arg = argv[i]!
    if (!arg.startsWith('--')) {
      problems.push(`unexpected argument ${JSON.stringify(arg)}; options look like --name value`)
      continue
    }
    const eq = arg.indexOf('=')
    const flag = eq > 0 ? arg.slice(0, eq) : arg
    let value: string | undefined = eq > 0 ? arg.slice(eq + 1) : undefined
    if (value === undefined && byFlag.get(flag)?.kind === 'bool' && !BOOL_WORD.test(argv[i + 1] ?? '')) {
      value = 'true' // a bare switch: --allow-anonymous
    }
    if (value === undefined) {
      const next = argv[i + 1]
      if (next === undefined || next.startsWith('--')) {
        problems.push(`flag ${flag} needs a value`)
        continue
      }
      value = next
      i++
    }
    if (flag === '--config') {
      configFile = value
      continue
    }
    const spec = byFlag.get(flag)
    if (!spec) {
      problems.push(`unknown flag ${flag}; see 'ferry run --help'`)
      continue
    }
    values.set(spec.key, { value, source: 'flag' })
  }
  return configFile === undefined ? { values } : { values, configFile }
}

/** Reads a config file: JSON when it ends in .json, otherwise YAML (a superset of JSON). */
export function readConfigFile(file: string): unknown {
  let text: string
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    throw new FerryError('FERRY_ERR_CONFIG_FILE', `cannot read config file ${file}: ${(err as Error).message}`, { cause: err })
  }
  try {
    return file.endsWith('.json') ? JSON.parse(text) : parseYaml(text)
  } catch (err) {
    // Only the first line: the parser's excerpt of the file may hold a secret.
    throw new FerryError('FERRY_ERR_CONFIG_FILE', `cannot parse config file ${file}: ${(err as Error).message.split('\n')[0]?.replace(/:$/, '')}`)
  }
}

/** Builds the Config: flags > FERRY_* environment > file > defaults. Throws ConfigError with every problem. */
export function loadConfig(input: LoadInput): Config {
  const problems: string[] = []
  const flags = parseFlags(input.argv, problems)
  const configFile = flags.configFile ?? input.env.FERRY_CONFIG
  const raw: RawValues = configFile ? flattenFile(readConfigFile(configFile), problems) : new Map()
  const knownEnv = new Set(OPTIONS.map((o) => o.env).concat('FERRY_CONFIG'))
  for (const [name, value] of Object.entries(input.env)) {
    if (!name.startsWith('FERRY_') || value === undefined) continue
    if (!knownEnv.has(name)) problems.push(`unknown environment variable ${name}; see 'ferry run --help' for FERRY_* names`)
  }
  for (const spec of OPTIONS) {
    const v = input.env[spec.env]
    if (v !== undefined) raw.set(spec.key, { value: v, source: 'env' })
  }
  for (const [k, v] of flags.values) raw.set(k, v)
  try {
    const config = parseConfig(raw, input.hostname)
    if (problems.length > 0) throw new ConfigError(problems)
    return config
  } catch (err) {
    if (err instanceof ConfigError && problems.length > 0 && err.problems !== problems) {
      throw new ConfigError([...problems, ...err.problems])
    }
    throw err
  }
}
