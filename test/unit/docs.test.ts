// README stays true: every error code and every option is documented, and the README names nothing that does not exist.
import fs from 'node:fs'
import { describe, expect, it } from 'vitest'
import os from 'node:os'
import path from 'node:path'
import { OPTIONS, loadConfig } from '../../src/config/index.js'
import { ERROR_CODES } from '../../src/errors.js'

const readme = fs.readFileSync('README.md', 'utf8')

describe('docs', () => {
  it('docs - the README error table lists exactly the error codes in the catalogue', () => {
    const documented = new Set([...readme.matchAll(/^\| `(FERRY_ERR_[A-Z_]+)` \|/gm)].map((m) => m[1] ?? ''))
    expect([...documented].sort()).toEqual(Object.keys(ERROR_CODES).sort())
    const mentioned = new Set([...readme.matchAll(/FERRY_ERR_[A-Z_]+/g)].map((m) => m[0]))
    for (const code of mentioned) expect(Object.keys(ERROR_CODES)).toContain(code)
  })

  it('docs - the README configuration table lists every option with its flag, variable and key', () => {
    for (const o of OPTIONS) {
      expect(readme).toContain(`| \`${o.flag}\` | \`${o.env}\` | \`${o.key}\` |`)
    }
    const flags = [...readme.matchAll(/^\| `(--[a-z-]+)` \|/gm)].map((m) => m[1])
    for (const f of flags) expect(OPTIONS.map((o) => o.flag).concat('--config')).toContain(f)
  })

  it('docs - the hardened example configuration in README is valid', () => {
    const yaml = /\*\*Hardened example\*\*[\s\S]*?```yaml\n([\s\S]*?)```/.exec(readme)?.[1]
    expect(yaml).toBeDefined()
    const file = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-docs-')), 'ferry.yaml')
    fs.writeFileSync(file, yaml!)
    const c = loadConfig({ argv: ['--config', file], env: {}, hostname: 'x' })
    expect(c.tls.requireClientCert).toBe(true)
    expect(c.mqtts).toEqual({ host: '0.0.0.0', port: 8883 })
  })

  it('docs - contrib/ferry.service uses only flags and commands that exist', () => {
    const unit = fs.readFileSync('contrib/ferry.service', 'utf8')
    const flags = new Set(OPTIONS.map((o) => o.flag).concat('--config'))
    for (const line of unit.split('\n').filter((l) => /^Exec(Start|StartPre)=/.test(l))) {
      for (const f of line.match(/--[a-z-]+/g) ?? []) expect(flags, `${f} in ${line}`).toContain(f)
      expect(line).toMatch(/ferry (run|check) /)
    }
    expect(unit).toContain('RestartPreventExitStatus=2')
  })
})
