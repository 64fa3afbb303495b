// The import-cycle gate (scripts/check-cycles.mjs) on small trees with and without a cycle, so it cannot pass by finding nothing.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it, onTestFinished } from 'vitest'
import { findCycles, importsOf } from '../../scripts/check-cycles.mjs'

const SCRIPT = path.resolve(import.meta.dirname, '../../scripts/check-cycles.mjs')

/** A temporary tree of files (path → content), removed when the test ends. */
function tree(files: Record<string, string>): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-cycles-'))
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }))
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    fs.writeFileSync(path.join(dir, name), content)
  }
  return dir
}

// The shape of the cycle issue 12 names: log/ring-log.ts → metrics → metrics/health.ts → log, partly through type imports.
const CYCLIC = {
  'log/index.ts': "export { RingLog } from './ring-log.js'\n",
  'log/ring-log.ts': "import type { Metrics } from '../metrics/index.js'\nexport class RingLog { m?: Metrics }\n",
  'metrics/index.ts': "export type { Metrics } from './catalogue.js'\nexport { health } from './health.js'\n",
  'metrics/catalogue.ts': 'export interface Metrics { n: number }\n',
  'metrics/health.ts': "import { RingLog } from '../log'\nexport const health = (l: RingLog) => l\n",
  'codec/entry.ts': "import fs from 'node:fs'\nexport const f = fs\n",
}

describe('check-cycles', () => {
  it('check-cycles - reports the cycle through folders and type-only imports, with its path', () => {
    const { files, cycles } = findCycles(tree(CYCLIC))
    expect(files).toBe(6)
    expect(cycles).toEqual([['log/index.ts', 'log/ring-log.ts', 'metrics/index.ts', 'metrics/health.ts', 'log/index.ts']])
  })

  it('check-cycles - a tree without a cycle has none, and a self-import is one', () => {
    const acyclic = { ...CYCLIC, 'metrics/health.ts': 'export const health = (l: unknown) => l\n' }
    expect(findCycles(tree(acyclic)).cycles).toEqual([])
    expect(findCycles(tree({ 'a.ts': "export * from './a.js'\n" })).cycles).toEqual([['a.ts', 'a.ts']])
  })

  it('check-cycles - every edge of a component with two loops is shown', () => {
    const dir = tree({
      'a.ts': "import { b } from './b.js'\nimport { c } from './c.js'\nexport const a = [b, c]\n",
      'b.ts': "import { a } from './a.js'\nexport const b = () => a\n",
      'c.ts': "import { a } from './a.js'\nexport const c = () => a\n",
    })
    expect(findCycles(dir).cycles).toEqual([
      ['a.ts', 'b.ts', 'a.ts'],
      ['a.ts', 'c.ts', 'a.ts'],
    ])
  })

  it('check-cycles - reads multi-line, side-effect and dynamic imports, not comments', () => {
    const src = [
      '// import { x } from "./commented.js"',
      '/* export { y } from "./also-commented.js" */',
      "import {\n  one,\n  type Two,\n} from './one.js'",
      "import './side-effect.js'",
      "export type { Three } from '../three.js'",
      "const url = 'http://example/*' + `${'//'}`",
      "const later = await import('./dynamic.js')",
      "export * as four from './four/index.js'",
    ].join('\n')
    expect(importsOf(src)).toEqual(['./one.js', './side-effect.js', '../three.js', './dynamic.js', './four/index.js'])
  })

  it('check-cycles - a regular expression literal holding "/*", a quote or a backtick hides no import after it', () => {
    const src = [
      "const leadingSlashes = /^\\/*/",
      "const quoted = /['\"`]/g",
      "export const trim = (s: string) => s.replace(leadingSlashes, '').replace(quoted, '') / 1",
      "export { later } from './later.js'",
      "const lazy = await import('./lazy.js')",
      '/** a doc comment: its end is where a "comment" opened by the first regex would have stopped */',
    ].join('\n')
    expect(importsOf(src)).toEqual(['./later.js', './lazy.js'])
    const dir = tree({
      'a.ts': "const leadingSlashes = /^\\/*/\nexport const trim = (s: string) => s.replace(leadingSlashes, '')\nexport { later } from './b.js'\n/** doc */\n",
      'b.ts': "import { trim } from './a.js'\nexport const later = trim\n",
    })
    expect(findCycles(dir).cycles).toEqual([['a.ts', 'b.ts', 'a.ts']])
  })

  it('check-cycles - the script exits 1 and prints the path on a cycle, 0 without', () => {
    const bad = spawnSync(process.execPath, [SCRIPT, tree(CYCLIC)], { encoding: 'utf8' })
    expect(bad.status).toBe(1)
    expect(bad.stderr).toContain('log/index.ts → log/ring-log.ts → metrics/index.ts → metrics/health.ts → log/index.ts')
    const good = spawnSync(process.execPath, [SCRIPT, tree({ 'a.ts': "import { b } from './b.js'\nexport const a = b\n", 'b.ts': 'export const b = 1\n' })], { encoding: 'utf8' })
    expect(good.status).toBe(0)
    expect(good.stdout).toContain('no import cycle')
  })
})
