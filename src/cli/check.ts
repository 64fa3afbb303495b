// `ferry check [--config FILE] [flags]`: validates a configuration (flags, FERRY_* environment, file)
// and the files it names (credentials, ACL, certificates, NATS credentials) without starting.
// Prints every problem (and warnings: a credentials file others can read); exit 0 when there is no problem, 2 otherwise.
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { Acl, Passwords, readPem, serverTlsOptions } from '../auth/index.js'
import { loadConfig, redactedConfig } from '../config/index.js'
import type { Config } from '../config/index.js'
import { ConfigError } from '../errors.js'
import { upstreamOptions } from '../forward/index.js'

const EMPTY_UPSTREAM = { token: '', user: '', password: '', nkeyFile: '', credsFile: '', tlsCa: '', tlsCert: '', tlsKey: '' }

function fileProblems(c: Config, warnings: string[]): string[] {
  const problems: string[] = []
  const attempt = (what: string, fn: () => unknown): void => {
    try {
      fn()
    } catch (err) {
      problems.push(`${what}: ${(err as Error).message}`)
    }
  }
  // Each file on its own, so that every unreadable one is reported.
  if (c.auth.file) {
    attempt('credentials', () => {
      const { warning } = Passwords.load(c.auth.file)
      if (warning) warnings.push(`credentials: ${warning}`)
    })
  }
  if (c.auth.aclFile) attempt('ACL', () => Acl.load(c.auth.aclFile))
  if (c.mqtts) {
    for (const [file, flag] of [[c.tls.cert, '--tls-cert'], [c.tls.key, '--tls-key'], [c.tls.ca, '--tls-ca']] as const) if (file) attempt('MQTTS', () => readPem(file, flag))
    if (problems.length === 0) attempt('MQTTS', () => serverTlsOptions(c.tls))
  }
  if (c.nats.nkeyFile) attempt('NATS', () => upstreamOptions({ ...EMPTY_UPSTREAM, nkeyFile: c.nats.nkeyFile }))
  if (c.nats.credsFile) attempt('NATS', () => upstreamOptions({ ...EMPTY_UPSTREAM, credsFile: c.nats.credsFile }))
  for (const [file, flag] of [[c.nats.tlsCa, '--nats-tls-ca'], [c.nats.tlsCert, '--nats-tls-cert'], [c.nats.tlsKey, '--nats-tls-key']] as const) if (file) attempt('NATS', () => readPem(file, flag))
  // The data directory: existing and writable, or creatable.
  let dir = path.resolve(c.log.dataDir)
  while (!fs.existsSync(dir) && path.dirname(dir) !== dir) dir = path.dirname(dir)
  attempt(`'log.dataDir' ${c.log.dataDir}`, () => fs.accessSync(dir, fs.constants.W_OK))
  return problems
}

export async function check(argv: string[]): Promise<number> {
  let config: Config
  try {
    config = loadConfig({ argv, env: process.env, hostname: os.hostname() })
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`ferry check: ${err.problems.length} problem(s):\n${err.problems.map((p) => `  - ${p}`).join('\n')}\n`)
      return 2
    }
    process.stderr.write(`ferry check: ${(err as Error).message}\n`)
    return 2
  }
  const warnings: string[] = []
  const problems = fileProblems(config, warnings)
  if (warnings.length > 0) process.stderr.write(`ferry check: ${warnings.length} warning(s):\n${warnings.map((w) => `  - ${w}`).join('\n')}\n`)
  if (problems.length > 0) {
    process.stderr.write(`ferry check: ${problems.length} problem(s):\n${problems.map((p) => `  - ${p}`).join('\n')}\n`)
    return 2
  }
  process.stdout.write(`configuration is valid\n${JSON.stringify(redactedConfig(config), null, 2)}\n`)
  return 0
}
