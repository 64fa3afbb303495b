// Public names of configuration.
export { OPTIONS, PRIORITY_CLASSES } from './schema.js'
export type { Config, DrainMaxRate, OptionSpec, OptionKind, PriorityClass, PriorityRule, TtlRule } from './schema.js'
export { parseConfig, parseBytes, parseDurationMs, parseSeconds, flattenFile, redactedConfig } from './parse.js'
export type { DurationUnit, RawValues, Source } from './parse.js'
export { loadConfig, parseFlags, readConfigFile } from './load.js'
export type { LoadInput } from './load.js'
