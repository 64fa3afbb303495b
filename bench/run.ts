// Runs every benchmark scenario in turn (npm run bench); each also runs alone with `npx tsx bench/<name>.ts`.
import { main as drain } from './drain.js'
import { main as startup } from './startup.js'
import { main as throughput } from './throughput.js'

async function run(): Promise<void> {
  await throughput()
  await drain()
  await startup()
}

run().then(
  () => process.exit(0),
  (err: unknown) => {
    process.stderr.write(`${String((err as Error).stack ?? err)}\n`)
    process.exit(1)
  },
)
