// Runs every benchmark scenario in turn, then the report (npm run bench); each also runs alone with `npx tsx bench/<name>.ts`.
// Prints how long each part took. footprint.ts runs in a child process whose open-files limit is raised to the hard
// limit (10,000 devices need ~11,000 descriptors; `ulimit -n` is often 1,024), so `npm run bench` needs no ulimit first.
import { spawnSync } from 'node:child_process'
import path from 'node:path'
import { main as compactness } from './compactness.js'
import { main as crash } from './crash.js'
import { main as downlink } from './downlink.js'
import { main as drain } from './drain.js'
import { ROOT, openFilesLimit } from './lib.js'
import { main as micro } from './micro.js'
import { main as report } from './report.js'
import { main as startup } from './startup.js'
import { main as throughput } from './throughput.js'

/** footprint.ts in its own process under `ulimit -n <hard limit>` (it keeps 10,000 client sockets open itself). */
async function footprint(): Promise<void> {
  const { hard } = openFilesLimit()
  const limit = Number.isFinite(hard) ? hard : 65_536
  const tsx = path.join(ROOT, 'node_modules', '.bin', 'tsx')
  const r = spawnSync('sh', ['-c', `ulimit -n ${limit} 2>/dev/null || true; exec "$0" bench/footprint.ts`, tsx], { cwd: ROOT, stdio: 'inherit' })
  if (r.status !== 0) throw new Error(`bench/footprint.ts failed (${r.status ?? r.signal})`)
}

async function run(): Promise<void> {
  const parts: [string, () => Promise<unknown>][] = [
    ['throughput', throughput],
    ['drain', drain],
    ['startup', startup],
    ['footprint', footprint],
    ['compactness', compactness],
    ['crash', crash],
    ['downlink', downlink],
    ['micro', micro],
    ['report', report],
  ]
  const took: string[] = []
  const t0 = performance.now()
  for (const [name, fn] of parts) {
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
