// Public names of configuration.
export { OPTIONS } from './schema.js'
export type { Config, OptionSpec, OptionKind } from './schema.js'
export { parseConfig, parseBytes, parseDurationMs, parseSeconds, flattenFile, redactedConfig } from './parse.js'
export type { DurationUnit, RawValues, Source } from './parse.js'
export { loadConfig, parseFlags, readConfigFile } from './load.js'
export type { LoadInput } from './load.js'
