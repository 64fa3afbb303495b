// Runs every benchmark scenario in turn, then the report (npm run bench); each also runs alone with `npx tsx bench/<name>.ts`.
// `npm run bench -- --only fleet` (comma separated part names, e.g. `--only fleet,report`) runs just those parts, each
// with its default options; the report only when named, so a partial run leaves bench/RESULTS.md as it is.
// Prints how long each part took. footprint.ts and fleet.ts run in a child process whose open-files limit is raised to
// the hard limit (10,000 devices need ~11,000 descriptors, the fleet ~7,000; `ulimit -n` is often 1,024), so
// `npm run bench` needs no ulimit first.
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { parseArgs } from 'node:util'
import { ROOT, openFilesLimit } from './lib.js'

const { values } = parseArgs({ options: { only: { type: 'string' } } })
const ONLY = values.only?.split(',').filter(Boolean)
// The parts parse process.argv themselves when imported (strict: unknown options throw): they get none.
process.argv.splice(2)

/** A benchmark in its own process under `ulimit -n <hard limit>` (it keeps thousands of client sockets open itself). */
function underRaisedFdLimit(script: string): () => Promise<void> {
  return async () => {
    const { hard } = openFilesLimit()
    const limit = Number.isFinite(hard) ? hard : 65_536
    const tsx = path.join(ROOT, 'node_modules', '.bin', 'tsx')
    const r = spawnSync('sh', ['-c', `ulimit -n ${limit} 2>/dev/null || true; exec "$0" ${script}`, tsx], { cwd: ROOT, stdio: 'inherit' })
    if (r.status !== 0) throw new Error(`${script} failed (${r.status ?? r.signal})`)
  }
}

/** A part's main(), imported only when the part runs. */
function part(file: string): () => Promise<unknown> {
  return async () => ((await import(file)) as { main: () => Promise<unknown> }).main()
}

async function run(): Promise<void> {
  const parts: [string, () => Promise<unknown>][] = [
    ['throughput', part('./throughput.js')],
    ['drain', part('./drain.js')],
    ['priority', part('./priority.js')],
    ['startup', part('./startup.js')],
    ['footprint', underRaisedFdLimit('bench/footprint.ts')],
    ['compactness', part('./compactness.js')],
    ['crash', part('./crash.js')],
    ['downlink', part('./downlink.js')],
    ['fleet', underRaisedFdLimit('bench/fleet.ts')],
    ['micro', part('./micro.js')],
    ['report', part('./report.js')],
  ]
  const unknown = ONLY?.filter((o) => !parts.some(([name]) => name === o)) ?? []
  if (unknown.length) throw new Error(`--only: no part named ${unknown.join(', ')} (parts: ${parts.map(([n]) => n).join(', ')})`)
  const took: string[] = []
  const t0 = performance.now()
  for (const [name, fn] of parts) {
    if (ONLY && !ONLY.includes(name)) continue
    const t = performance.now()
    await fn()
    took.push(`${name} ${((performance.now() - t) / 1000).toFixed(0)} s`)
    process.stderr.write(`== ${name} done in ${((performance.now() - t) / 1000).toFixed(0)} s\n`)
  }
  process.stderr.write(`npm run bench: ${took.join(', ')}; total ${((performance.now() - t0) / 60_000).toFixed(1)} min\n`)
}

run().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${String((err as Error).stack ?? err)}\n`)
    process.exit(1)
  },
)
