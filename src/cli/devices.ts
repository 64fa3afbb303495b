// `ferry devices [--http HOST:PORT] [--json]`: the devices connected to a running gateway, from its
// HTTP endpoint (GET /devices).
import type { DeviceInfo } from '../ingress/index.js'
import { printable, printableJson } from './log-tools.js'

export const DEVICES_USAGE = 'Usage: ferry devices [--http HOST:PORT] [--json]   (default 127.0.0.1:9464, the gateway\'s --http-listen)\n'

function duration(ms: number): string {
  const s = Math.floor(ms / 1000)
  if (s < 120) return `${s}s`
  if (s < 7200) return `${Math.floor(s / 60)}m`
  return `${Math.floor(s / 3600)}h${String(Math.floor((s % 3600) / 60)).padStart(2, '0')}m`
}

/** Runs the command; returns the exit code. */
export async function devices(args: string[]): Promise<number> {
  let http = process.env.FERRY_HTTP_LISTEN || '127.0.0.1:9464'
  let json = false
  for (let i = 0; i < args.length; i++) {
    if (args[i] === '--json') json = true
    else if (args[i] === '--http' && args[i + 1]) http = args[++i]!
    else {
      process.stderr.write(DEVICES_USAGE)
      return 2
    }
  }
  let list: DeviceInfo[]
  try {
    const res = await fetch(`http://${http}/devices`, { signal: AbortSignal.timeout(5000) })
    if (!res.ok) throw new Error(`HTTP ${res.status}`)
    list = ((await res.json()) as { devices: DeviceInfo[] }).devices
  } catch (err) {
    process.stderr.write(`ferry devices: cannot reach the gateway at http://${http}/devices: ${(err as Error).message} (is it running? see --http)\n`)
    return 1
  }
  if (json) {
    process.stdout.write(printableJson(list, 2) + '\n')
    return 0
  }
  const now = Date.now()
  const rows = [['DEVICE', 'ADDRESS', 'CONNECTED', 'FOR', 'SESSION', 'IN', 'OUT']]
  for (const d of list.sort((a, b) => a.clientId.localeCompare(b.clientId))) {
    rows.push([printable(d.clientId), printable(d.address), new Date(d.connectedAt).toISOString().replace('T', ' ').slice(0, 19), duration(now - d.connectedAt), d.clean ? 'clean' : 'persistent', String(d.messagesIn), String(d.messagesOut)])
  }
  const widths = rows[0]!.map((_, i) => Math.max(...rows.map((r) => r[i]!.length)))
  for (const r of rows) process.stdout.write(r.map((c, i) => (i >= 5 ? c.padStart(widths[i]!) : c.padEnd(widths[i]!))).join('  ').trimEnd() + '\n')
  process.stdout.write(`${list.length} device${list.length === 1 ? '' : 's'} connected\n`)
  return 0
}
