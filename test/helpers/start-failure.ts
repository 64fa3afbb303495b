// Child process of test/integration/lifecycle.test.ts (run with `node --import tsx`): starts a
// gateway whose start is meant to fail, prints one JSON line on stdout saying how it ended, then
// waits for its stdin to end. It never calls process.exit: once stdin has ended it exits only if
// the failed start left no socket, timer or connection behind. If it is still alive 3 s later, it
// lists on stderr what keeps it alive (the timer doing so is unref'd: it keeps nothing alive).
// Every timer of Ferry is unref'd, so "exits on its own" cannot see one left running: the report
// also lists the unref'd timers created during the start that are still scheduled after it failed.
import { createHook } from 'node:async_hooks'
import { parseConfig } from '../../src/config/index.js'
import type { RawValues } from '../../src/config/index.js'
import { Gateway } from '../../src/gateway.js'
import type { Stage } from '../../src/gateway.js'
import { silentLogger } from '../../src/logger.js'

const { values, failAfter } = JSON.parse(process.argv[2] ?? '{}') as { values: Record<string, unknown>; failAfter?: Stage }
const raw: RawValues = new Map(Object.entries(values).map(([k, v]) => [k, { value: v, source: 'flag' as const }]))
/** Timers created since the start began and not cleared or fired yet, with where each was created. */
const timers = new Map<number, { readonly timer: NodeJS.Timeout; readonly at: string }>()
const hook = createHook({
  init(id, type, _trigger, resource) {
    if (type !== 'Timeout') return
    const at = (new Error().stack ?? '').split('\n').find((l) => l.includes('/src/')) ?? 'outside src/'
    timers.set(id, { timer: resource as NodeJS.Timeout, at: at.trim() })
  },
  destroy(id) {
    timers.delete(id)
  },
})
hook.enable()
try {
  const gw = await Gateway.start(parseConfig(raw, 'test'), silentLogger, failAfter ? { failAfter } : {})
  process.stdout.write(JSON.stringify({ started: true }) + '\n')
  await gw.close(1000)
} catch (err) {
  // A cleared timer's destroy hook runs on a later turn of the loop: give it two.
  for (let i = 0; i < 2; i++) await new Promise((resolve) => setImmediate(resolve))
  hook.disable()
  const unrefTimers = [...timers.values()].filter((t) => !t.timer.hasRef()).map((t) => t.at)
  process.stdout.write(JSON.stringify({ failed: (err as Error).message, code: (err as { code?: string }).code, unrefTimers }) + '\n')
}
process.stdin.once('end', () => {
  setTimeout(() => process.stderr.write(`still alive, held by: ${JSON.stringify(process.getActiveResourcesInfo())}\n`), 3000).unref()
})
process.stdin.resume()
