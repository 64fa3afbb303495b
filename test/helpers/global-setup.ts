// Integration suite setup: the real servers must be installed; the suite fails (never skips) without them.
import fs from 'node:fs'
import { natsServerPath } from './nats.js'

export default function setup(): void {
  if (!natsServerPath()) {
    throw new Error('integration tests need nats-server: apt-get update && apt-get install -y nats-server')
  }
  if (!fs.existsSync('dist/ferry.cjs')) {
    throw new Error('integration tests need the bundle: run `npm run build` first (npm test does)')
  }
}
