// Quick start (`npm start`): a local nats-server, the gateway on embedded defaults, 5 simulated devices, and what arrives in JetStream.
import { spawn, spawnSync, execFileSync } from 'node:child_process'
import fs from 'node:fs'
import net from 'node:net'
import os from 'node:os'
import path from 'node:path'
import { connect } from '@nats-io/transport-node'
import { jetstreamManager } from '@nats-io/jetstream'
import { decode } from 'cbor-x'

const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..')
process.chdir(root)
const children = []
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'ferry-quickstart-'))

function say(msg) {
  process.stdout.write(`\x1b[1mquickstart:\x1b[0m ${msg}\n`)
}

function natsServer() {
  for (const p of ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) if (fs.existsSync(p)) return p
  try {
    return execFileSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' }).trim() || undefined
  } catch {
    return undefined
  }
}

function portFree(port) {
  return new Promise((resolve) => {
    const s = net.createServer()
    s.once('error', () => resolve(false))
    s.listen(port, '127.0.0.1', () => s.close(() => resolve(true)))
  })
}

async function freePort(preferred) {
  if (await portFree(preferred)) return preferred
  return new Promise((resolve) => {
    const s = net.createServer()
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address()
      s.close(() => resolve(port))
    })
  })
}

async function waitPort(port, ms) {
  const until = Date.now() + ms
  while (Date.now() < until) {
    const ok = await new Promise((resolve) => {
      const c = net.connect(port, '127.0.0.1')
      c.once('connect', () => (c.destroy(), resolve(true)))
      c.once('error', () => resolve(false))
    })
    if (ok) return true
    await new Promise((r) => setTimeout(r, 100))
  }
  return false
}

function start(name, cmd, args, show) {
  const child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] })
  children.push(child)
  const prefix = (chunk) => {
    if (!show) return
    for (const line of chunk.toString().split('\n')) if (line.trim()) process.stdout.write(`\x1b[2m[${name}]\x1b[0m ${line}\n`)
  }
  child.stdout.on('data', prefix)
  child.stderr.on('data', prefix)
  child.on('exit', (code, signal) => {
    if (!stopping) say(`${name} exited (${code ?? signal})`)
  })
  return child
}

let stopping = false
async function stop() {
  if (stopping) return
  stopping = true
  say('stopping')
  // Newest first: the simulator, then the gateway (which drains to NATS), then nats-server. A Ctrl-C
  // on a terminal already signalled the whole process group, so give each a moment before SIGTERM.
  for (const c of children.reverse()) {
    const exited = () => c.exitCode !== null || c.signalCode !== null
    const gone = new Promise((r) => (exited() ? r() : c.once('exit', r)))
    await Promise.race([gone, new Promise((r) => setTimeout(r, 3000))])
    if (!exited()) c.kill('SIGTERM')
    await Promise.race([gone, new Promise((r) => setTimeout(r, 5000))])
    if (!exited()) c.kill('SIGKILL')
  }
  fs.rmSync(tmp, { recursive: true, force: true })
  process.exit(0)
}
process.on('SIGINT', () => void stop())
process.on('SIGTERM', () => void stop())

if (!fs.existsSync('dist/ferry.cjs') || !fs.existsSync('dist/firmware-sim.cjs')) {
  say('building dist/ferry.cjs')
  if (spawnSync(process.execPath, ['scripts/build.mjs'], { stdio: 'inherit' }).status !== 0) process.exit(1)
}

const bin = natsServer()
const natsPort = await freePort(4222)
let natsUrl = `nats://127.0.0.1:${natsPort}`
if (bin) {
  start('nats', bin, ['-a', '127.0.0.1', '-p', String(natsPort), '-js', '-sd', path.join(tmp, 'js')], false)
  if (!(await waitPort(natsPort, 10_000))) {
    say('nats-server did not start')
    await stop()
  }
  say(`nats-server with JetStream on ${natsUrl} (store in ${tmp})`)
} else {
  natsUrl = 'nats://127.0.0.1:4222'
  say('nats-server is not installed (Debian: apt-get install -y nats-server); the gateway buffers until one listens on 4222')
}

const mqttPort = await freePort(1883)
const httpPort = await freePort(9464)
const gatewayArgs = ['dist/ferry.cjs', 'run', '--nats-url', natsUrl, '--data-dir', path.join(tmp, 'data'), '--log-format', 'pretty']
if (httpPort !== 9464) gatewayArgs.push('--http-listen', `127.0.0.1:${httpPort}`)
if (mqttPort !== 1883) {
  say(`port 1883 is taken; the gateway listens on ${mqttPort} instead`)
  gatewayArgs.push('--mqtt-listen', `127.0.0.1:${mqttPort}`)
}
say(`gateway: node ${gatewayArgs.join(' ')}  (status page: http://127.0.0.1:${httpPort}/, metrics: /metrics, readiness: /readyz)`)
start('ferry', process.execPath, gatewayArgs, true)
if (!(await waitPort(mqttPort, 15_000))) {
  say('the gateway did not start')
  await stop()
}
say('5 simulated devices publishing 2 msg/s each (QoS 1)')
start('sim', process.execPath, ['dist/firmware-sim.cjs', '--url', `mqtt://127.0.0.1:${mqttPort}`, '--devices', '5', '--rate', '2'], false)

if (bin) {
  const nc = await connect({ servers: natsUrl, maxReconnectAttempts: -1 })
  const shown = new Map()
  nc.subscribe('ferry.up.>', {
    callback: (_err, m) => {
      const n = (shown.get(m.subject) ?? 0) + 1
      shown.set(m.subject, n)
      if (n % 10 !== 1) return
      const ct = m.headers?.get('Content-Type')
      const body = ct === 'application/cbor' ? JSON.stringify(decode(m.data)) : `${m.data.length} bytes`
      process.stdout.write(`\x1b[32m[jetstream]\x1b[0m ${m.subject} (${ct}, ${m.data.length} B) ${body}\n`)
    },
  })
  const jsm = await jetstreamManager(nc)
  setInterval(() => void (async () => {
    try {
      const s = (await jsm.streams.info('FERRY')).state
      say(`stream FERRY: ${s.messages} messages, ${s.bytes} bytes. Ctrl-C to stop.`)
    } catch {
      // the stream appears once the gateway connected
    }
  })(), 5000)
}
