// README stays true: every error code and every option is documented, and the README names nothing that does not exist.
import fs from 'node:fs'
import { describe, expect, it } from 'vitest'
import { OPTIONS } from '../../src/config/index.js'
import { ERROR_CODES } from '../../src/errors.js'

const readme = fs.readFileSync('README.md', 'utf8')

describe('docs', () => {
  it('docs - the README error table lists exactly the error codes in the catalogue', () => {
    const documented = new Set([...readme.matchAll(/^\| `(FERRY_ERR_[A-Z_]+)` \|/gm)].map((m) => m[1]))
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
})
