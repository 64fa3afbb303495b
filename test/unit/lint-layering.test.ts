// The layering rules of .oxlintrc.json bite: a probe tree laid out like src/ is linted with the
// repository's config (no type information needed for no-restricted-imports), and every import that
// crosses a layer is reported, also into a subfolder of the forbidden layer, while allowed ones are not.
import { spawnSync } from 'node:child_process'
import fs from 'node:fs'
import os from 'node:os'
import path from 'node:path'
import { describe, expect, it, onTestFinished } from 'vitest'

const ROOT = path.resolve(import.meta.dirname, '../..')
const OXLINT = path.join(ROOT, 'node_modules', '.bin', 'oxlint')

/** Lints `files` (path under the probe root → content) with a copy of the repository's config; returns the restricted specifiers reported. */
function restricted(files: Record<string, string>): string[] {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-lint-layering-'))
  onTestFinished(() => fs.rmSync(dir, { recursive: true, force: true }))
  fs.copyFileSync(path.join(ROOT, '.oxlintrc.json'), path.join(dir, '.oxlintrc.json'))
  for (const [name, content] of Object.entries(files)) {
    fs.mkdirSync(path.dirname(path.join(dir, name)), { recursive: true })
    fs.writeFileSync(path.join(dir, name), content)
  }
  const r = spawnSync(OXLINT, ['-c', '.oxlintrc.json', '--format', 'unix', 'src'], { cwd: dir, encoding: 'utf8' })
  const out = `${r.stdout}${r.stderr}`
  return [...out.matchAll(/'([^']+)' import is restricted/g)].map((m) => m[1]!).sort()
}

const imports = (...specs: string[]): string => specs.map((s, i) => `import { x${i} } from '${s}'\n`).join('') + `export const all = [${specs.map((_s, i) => `x${i}`).join(', ')}]\n`

describe('lint layering', () => {
  it('lint layering - ingress and forward never import each other, also through a subfolder', () => {
    expect(
      restricted({
        'src/ingress/probe.ts': imports('../forward/index.js', '../forward/upstream/connection.js', '../log/index.js', './devices.js'),
        'src/forward/probe.ts': imports('../ingress/index.js', '../ingress/seam/aedes.js', '../codec/index.js'),
      }),
    ).toEqual(['../forward/index.js', '../forward/upstream/connection.js', '../ingress/index.js', '../ingress/seam/aedes.js'])
  })

  it('lint layering - the log imports neither codec nor the metrics catalogue, also through a subfolder; its own metrics.ts is fine', () => {
    expect(
      restricted({
        'src/log/probe.ts': imports('../codec/index.js', '../codec/cbor/entry.js', '../metrics/catalogue.js', '../metrics/sub/catalogue.js', './metrics.js', '../lifecycle.js'),
      }),
    ).toEqual(['../codec/cbor/entry.js', '../codec/index.js', '../metrics/catalogue.js', '../metrics/sub/catalogue.js'])
  })

  it('lint layering - only gateway.ts wires the fleet registry: ingress, forward, downlink and log never import src/fleet', () => {
    expect(
      restricted({
        'src/ingress/probe.ts': imports('../fleet/index.js'),
        'src/ingress/aedes-seam.ts': imports('../fleet/registry.js'),
        'src/forward/probe.ts': imports('../fleet/index.js'),
        'src/downlink/probe.ts': imports('../fleet/keys.js', '../ingress/index.js'),
        'src/log/probe.ts': imports('../fleet/index.js'),
        'src/fleet/probe.ts': imports('../ingress/index.js', '../metrics/index.js'),
        'src/gateway.ts': imports('./fleet/index.js'),
      }),
    ).toEqual(['../fleet/index.js', '../fleet/index.js', '../fleet/index.js', '../fleet/keys.js', '../fleet/registry.js'])
  })
})
