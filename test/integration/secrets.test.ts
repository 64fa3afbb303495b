// Secrets never appear in output: config errors of `run` and `check`, and credentials inside --nats-url.
import fs from 'node:fs'
import path from 'node:path'
import { afterAll, describe, expect, it } from 'vitest'
import { runFerry } from '../helpers/gateway.js'
import { tempDir } from '../helpers/log.js'

describe('secrets', () => {
  const dir = tempDir('ferry-secrets-')
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }))
  const base = ['--data-dir', path.join(dir, 'data'), '--mqtt-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0']

  it('secrets - a YAML password that parses as a number is named with its type, never printed, by run and by check', async () => {
    const file = path.join(dir, 'ferry.yaml')
    fs.writeFileSync(file, 'nats:\n  user: ferry\n  password: 98765432\n  token: 55501234\n')
    for (const cmd of ['run', 'check']) {
      const r = await runFerry([cmd, '--config', file, ...base])
      expect(r.code, cmd).toBe(2)
      const out = r.stdout + r.stderr
      expect(out).not.toContain('98765432')
      expect(out).not.toContain('55501234')
      expect(out).toContain(`'nats.password' (config file) must be a non-empty string, got a number (value redacted)`)
      expect(out).toContain(`'nats.token' (config file) must be a non-empty string, got a number (value redacted)`)
    }
  })

  it('secrets - a YAML syntax error does not quote the file', async () => {
    const file = path.join(dir, 'broken.yaml')
    fs.writeFileSync(file, 'nats:\n  password: "s3cr3t-in-yaml\n  x: [1\n')
    for (const cmd of ['run', 'check']) {
      const r = await runFerry([cmd, '--config', file, ...base])
      expect(r.code, cmd).toBe(2)
      expect(r.stdout + r.stderr).toContain('cannot parse config file')
      expect(r.stdout + r.stderr).not.toContain('s3cr3t')
    }
  })

  it('secrets - credentials inside --nats-url are refused (exit 2) pointing at --nats-user/--nats-password/--nats-token, and not printed', async () => {
    const cases: [string[], Record<string, string>][] = [
      [['--nats-url', 'nats://ferry:hunter2pw@127.0.0.1:4222'], {}],
      [['--nats-url', 'nats://127.0.0.1:4223,nats://tok3nvalue@127.0.0.1:4222'], {}],
      [[], { FERRY_NATS_URL: 'tls://ferry:hunter2pw@127.0.0.1:4222' }],
    ]
    for (const cmd of ['run', 'check']) {
      for (const [args, env] of cases) {
        const r = await runFerry([cmd, ...base, ...args], env)
        const out = r.stdout + r.stderr
        expect(r.code, `${cmd} ${args.join(' ')}`).toBe(2)
        expect(out).not.toMatch(/hunter2pw|tok3nvalue/)
        expect(out).toContain('must not contain credentials')
        expect(out).toContain('<redacted>@127.0.0.1:4222')
        expect(out).toMatch(/--nats-user.*--nats-password.*--nats-token/)
      }
    }
    // A URL that is invalid for another reason is printed without its userinfo too.
    const bad = await runFerry(['check', ...base, '--nats-url', 'nats://ferry:hunter2pw@127.0.0.1:4222 x'])
    expect(bad.code).toBe(2)
    expect(bad.stderr).not.toContain('hunter2pw')
  })

  it('secrets - the start-up config redacts the password and token given by flags', async () => {
    const r = await runFerry(['check', ...base, '--nats-user', 'ferry', '--nats-password', 'pw-Zq81'])
    expect(r.code).toBe(0)
    expect(r.stdout).not.toContain('pw-Zq81')
    expect(r.stdout).toContain('"password": "<redacted>"')
  })
})
