// Preload for a spawned gateway (NODE_OPTIONS=--require <this file>): shifts the process's wall clock
// by TEST_CLOCK_SKEW_MS milliseconds (not FERRY_*: the gateway refuses unknown FERRY_ variables), as a host clock running fast (+) or slow (-) would.
// Date.now(), new Date() and Date() are shifted; new Date(value), Date.parse and performance.now()
// (a monotonic clock, not wall time) are not.
'use strict'
const skewMs = Number(process.env.TEST_CLOCK_SKEW_MS || 0)
if (!Number.isFinite(skewMs)) throw new Error(`TEST_CLOCK_SKEW_MS must be a number of ms, got "${process.env.TEST_CLOCK_SKEW_MS}"`)
const RealDate = Date
const realNow = RealDate.now.bind(RealDate)
const now = () => realNow() + skewMs
globalThis.Date = new Proxy(RealDate, {
  construct: (target, args, newTarget) => Reflect.construct(target, args.length === 0 ? [now()] : args, newTarget),
  apply: () => new RealDate(now()).toString(),
  get: (target, prop, receiver) => (prop === 'now' ? now : Reflect.get(target, prop, receiver)),
})
