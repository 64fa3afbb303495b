// Runs every benchmark scenario in turn, then the report (npm run bench); each also runs alone with `npx tsx bench/<name>.ts`.
import { main as compactness } from './compactness.js'
import { main as crash } from './crash.js'
import { main as downlink } from './downlink.js'
import { main as drain } from './drain.js'
import { main as footprint } from './footprint.js'
import { main as report } from './report.js'
import { main as startup } from './startup.js'
import { main as throughput } from './throughput.js'

async function run(): Promise<void> {
  await throughput()
  await drain()
  await startup()
  await footprint()
  await compactness()
  await crash()
  await downlink()
  await report()
}

run().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${String((err as Error).stack ?? err)}\n`)
    process.exit(1)
  },
)
