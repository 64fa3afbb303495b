// Report: reads bench/results/*.json and writes bench/RESULTS.md and bench/charts/*.svg (plain SVG text, no dependencies).
//
// Run: npx tsx bench/report.ts   (after the benchmarks; needs nothing else)
// Renders what exists and says what is missing: throughput.json and drain.json (tables with Ferry's
// ratio to each peer, latency CDFs, outage/drain time series), crash.json, compactness.json,
// footprint.json, startup.json (specific tables where their shape is known, every numeric field
// otherwise), and the targets of issue 3 with met / missed / not measured. Medians are those the
// benchmarks wrote (medians of their --runs); a file with fewer than 3 runs is flagged.
import fs from 'node:fs'
import path from 'node:path'
import { ROOT, fmt, runIfMain, shippedV8Flags } from './lib.js'

const RESULTS_DIR = path.join(ROOT, 'bench', 'results')
const OUT = path.join(ROOT, 'bench', 'RESULTS.md')
const CHART_DIR = path.join(ROOT, 'bench', 'charts')

/** Command each benchmark runs with by default, for result files that do not record theirs. */
const DEFAULT_COMMANDS: Record<string, string> = {
  throughput: 'npx tsx bench/throughput.ts --runs 3',
  drain: 'npx tsx bench/drain.ts',
  priority: 'npx tsx bench/priority.ts',
  startup: 'npx tsx bench/startup.ts',
  crash: 'npx tsx bench/crash.ts',
  compactness: 'npx tsx bench/compactness.ts',
  footprint: 'npx tsx bench/footprint.ts',
  downlink: 'npx tsx bench/downlink.ts',
  fleet: 'npx tsx bench/fleet.ts',
  micro: 'npm run bench:micro',
}
const ORDER = ['throughput', 'drain', 'priority', 'crash', 'compactness', 'footprint', 'startup', 'downlink', 'fleet', 'micro']

const PEERS: Record<string, string> = {
  'nats-mqtt': 'NATS MQTT listener',
  'mosquitto-tuned': 'Mosquitto → bridge, tuned',
  'mosquitto-defaults': 'Mosquitto → bridge, defaults',
  'raw-jetstream': 'raw nats.js JetStream publish',
}
const COLORS: Record<string, string> = {
  ferry: '#1f6fb4',
  'nats-mqtt': '#e8770e',
  'mosquitto-tuned': '#2a9d3a',
  'mosquitto-defaults': '#c9302c',
  'raw-jetstream': '#777777',
}

// ---------- small typed accessors over parsed JSON ----------

type Json = unknown

function get(v: Json, ...keys: (string | number)[]): Json {
  let cur = v
  for (const k of keys) {
    if (cur === null || typeof cur !== 'object') return undefined
    cur = (cur as Record<string, unknown>)[k]
  }
  return cur
}

function num(v: Json): number {
  return typeof v === 'number' ? v : v === null ? NaN : NaN
}

function obj(v: Json): Record<string, Json> {
  return v !== null && typeof v === 'object' && !Array.isArray(v) ? (v as Record<string, Json>) : {}
}

function arr(v: Json): Json[] {
  return Array.isArray(v) ? v : []
}

function str(v: Json): string {
  if (typeof v === 'string') return v
  if (typeof v === 'number' || typeof v === 'boolean') return String(v)
  return v === undefined || v === null ? '' : JSON.stringify(v)
}

// ---------- markdown helpers ----------

function table(rows: string[][]): string {
  const [head, ...body] = rows
  if (!head) return ''
  const esc = (c: string): string => c.replaceAll('|', '\\|')
  // Right-align a column when every cell in it starts like a number.
  const numeric = head.map((_, i) => i > 0 && body.every((r) => /^(\*\*)?[-–+\d.]|^$/.test(r[i] ?? '')))
  return [`| ${head.map(esc).join(' | ')} |`, `|${numeric.map((n) => (n ? '--:' : '---')).join('|')}|`, ...body.map((r) => `| ${r.map(esc).join(' | ')} |`)].join('\n')
}

/** `x` formatted, or `–` when not a number. */
function f(x: number, digits?: number): string {
  if (!Number.isFinite(x)) return '–'
  if (digits === undefined && Number.isInteger(x)) return x.toLocaleString('en-US')
  return digits === undefined ? fmt(x) : x.toLocaleString('en-US', { minimumFractionDigits: digits, maximumFractionDigits: digits })
}

function ratio(a: number, b: number): string {
  const r = a / b
  return Number.isFinite(r) ? `${r >= 10 ? r.toFixed(0) : r.toFixed(2)}×` : '–'
}

/** A peer's figure with Ferry's ratio to it: `75,845 (Ferry 0.56×)`. */
function withRatio(peer: number, ferry: number): string {
  if (!Number.isFinite(peer)) return '–'
  return `${f(peer)} (Ferry ${ratio(ferry, peer)})`
}

// ---------- SVG charts ----------

interface Line {
  label: string
  color: string
  points: [number, number][]
  dashed?: boolean
}

function xml(s: string): string {
  return s.replaceAll('&', '&amp;').replaceAll('<', '&lt;').replaceAll('>', '&gt;').replaceAll('"', '&quot;')
}

function niceTicks(min: number, max: number, count = 6): number[] {
  const span = max - min || 1
  const raw = span / count
  const mag = 10 ** Math.floor(Math.log10(raw))
  const step = ([1, 2, 2.5, 5, 10].find((m) => m * mag >= raw) ?? 10) * mag
  const out: number[] = []
  for (let t = Math.ceil(min / step) * step; t <= max + step * 1e-9; t += step) out.push(Number(t.toPrecision(12)))
  return out
}

function logTicks(min: number, max: number): number[] {
  const out: number[] = []
  for (let e = Math.floor(Math.log10(min)); e <= Math.ceil(Math.log10(max)); e++) for (const m of [1, 2, 5]) {
    const t = m * 10 ** e
    if (t >= min * 0.999 && t <= max * 1.001) out.push(Number(t.toPrecision(6)))
  }
  return out
}

function tickLabel(t: number): string {
  if (Math.abs(t) >= 1000) return t >= 1e6 ? `${t / 1e6}M` : `${t / 1000}k`
  return String(Number(t.toPrecision(6)))
}

function lineChart(opts: { title: string; xLabel: string; yLabel: string; lines: Line[]; xLog?: boolean; xMin?: number; xMax?: number; yMin?: number; yMax?: number; marks?: { x: number; label: string }[]; note?: string }): string {
  const W = 820
  // Legend below the plot: three entries per row, two when labels are long.
  const perRow = Math.max(...opts.lines.map((l) => l.label.length), 0) > 30 ? 2 : 3
  const legendRows = Math.ceil(opts.lines.length / perRow)
  const m = { l: 74, r: 20, t: 40, b: 72 + legendRows * 16 }
  const H = 300 + m.t + m.b
  const pw = W - m.l - m.r
  const ph = H - m.t - m.b
  const pts = opts.lines.flatMap((l) => l.points).filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.xLog || x > 0))
  let xMin = opts.xMin ?? Math.min(...pts.map((p) => p[0]))
  let xMax = opts.xMax ?? Math.max(...pts.map((p) => p[0]))
  const yMin = opts.yMin ?? 0
  let yMax = opts.yMax ?? Math.max(...pts.map((p) => p[1]))
  if (!Number.isFinite(xMin) || !Number.isFinite(xMax)) [xMin, xMax] = opts.xLog ? [0.1, 100] : [0, 1]
  if (xMax <= xMin) xMax = opts.xLog ? xMin * 10 : xMin + 1
  if (!Number.isFinite(yMax) || yMax <= yMin) yMax = yMin + 1
  const yTicks = niceTicks(yMin, yMax)
  yMax = Math.max(yMax, yTicks[yTicks.length - 1] ?? yMax)
  const xTicks = opts.xLog ? logTicks(xMin, xMax) : niceTicks(xMin, xMax)
  const sx = (x: number): number => m.l + (opts.xLog ? (Math.log10(x) - Math.log10(xMin)) / (Math.log10(xMax) - Math.log10(xMin)) : (x - xMin) / (xMax - xMin)) * pw
  const sy = (y: number): number => m.t + ph - ((y - yMin) / (yMax - yMin)) * ph
  const o: string[] = []
  o.push(`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="Helvetica, Arial, sans-serif" font-size="12">`)
  o.push(`<rect width="${W}" height="${H}" fill="#ffffff"/>`)
  o.push(`<text x="${W / 2}" y="22" text-anchor="middle" font-size="15" font-weight="bold">${xml(opts.title)}</text>`)
  for (const t of yTicks) {
    const y = sy(t).toFixed(1)
    o.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y}" y2="${y}" stroke="#e5e5e5"/>`)
    o.push(`<text x="${m.l - 6}" y="${y}" text-anchor="end" dominant-baseline="middle">${tickLabel(t)}</text>`)
  }
  for (const t of xTicks) {
    if (t < xMin || t > xMax) continue
    const x = sx(t).toFixed(1)
    o.push(`<line x1="${x}" x2="${x}" y1="${m.t}" y2="${m.t + ph}" stroke="#f0f0f0"/>`)
    o.push(`<text x="${x}" y="${m.t + ph + 16}" text-anchor="middle">${tickLabel(t)}</text>`)
  }
  o.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#888"/>`)
  o.push(`<text x="${m.l + pw / 2}" y="${m.t + ph + 36}" text-anchor="middle">${xml(opts.xLabel)}</text>`)
  o.push(`<text transform="translate(16 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle">${xml(opts.yLabel)}</text>`)
  for (const [i, mk] of (opts.marks ?? []).entries()) {
    if (!(mk.x >= xMin && mk.x <= xMax)) continue
    const x = sx(mk.x).toFixed(1)
    o.push(`<line x1="${x}" x2="${x}" y1="${m.t}" y2="${m.t + ph}" stroke="#555" stroke-dasharray="3 3"/>`)
    o.push(`<text x="${Number(x) + 3}" y="${m.t + 12 + (i % 3) * 13}" font-size="11" fill="#333">${xml(mk.label)}</text>`)
  }
  const clipId = `clip${Math.abs(hash(opts.title))}`
  o.push(`<clipPath id="${clipId}"><rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}"/></clipPath>`)
  for (const l of opts.lines) {
    const p = l.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!opts.xLog || x > 0))
    if (p.length === 0) continue
    const d = p.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)} ${sy(Math.min(y, yMax)).toFixed(1)}`).join(' ')
    o.push(`<path d="${d}" fill="none" stroke="${l.color}" stroke-width="2"${l.dashed ? ' stroke-dasharray="6 4"' : ''} clip-path="url(#${clipId})"/>`)
  }
  opts.lines.forEach((l, i) => {
    const x = m.l + (i % perRow) * (pw / perRow)
    const y = m.t + ph + 56 + Math.floor(i / perRow) * 16
    o.push(`<line x1="${x}" x2="${x + 26}" y1="${y}" y2="${y}" stroke="${l.color}" stroke-width="2"${l.dashed ? ' stroke-dasharray="6 4"' : ''}/>`)
    o.push(`<text x="${x + 32}" y="${y}" dominant-baseline="middle">${xml(l.label)}</text>`)
  })
  if (opts.note) o.push(`<text x="${W - m.r}" y="${H - 6}" text-anchor="end" font-size="10" fill="#666">${xml(opts.note)}</text>`)
  o.push('</svg>')
  return o.join('\n') + '\n'
}

function hash(s: string): number {
  let h = 0
  for (let i = 0; i < s.length; i++) h = (h * 31 + s.charCodeAt(i)) | 0
  return h
}

/** CDF points from a histogram (bucket upper edges); samples below the first edge are put at it. */
function cdf(h: Json): [number, number][] {
  const edges = arr(get(h, 'edgesMs')).map(num)
  const counts = arr(get(h, 'counts')).map(num)
  const n = num(get(h, 'n'))
  if (!(n > 0)) return []
  const out: [number, number][] = []
  let cum = 0
  for (let i = 0; i < edges.length; i++) {
    const c = counts[i] ?? 0
    if (c > 0 && cum === 0) out.push([i === 0 ? edges[0]! : edges[i - 1]!, 0])
    cum += c
    if (cum > 0) out.push([edges[i]!, cum / n])
    if (cum >= n) break
  }
  return out
}

// ---------- sections ----------

interface Ctx {
  files: Record<string, Json>
  charts: Record<string, string>
  targets: { target: string; measured: string; verdict: 'met' | 'missed' | 'not measured' }[]
}

function targetRow(ctx: Ctx, target: string, measured: string, ok: boolean | undefined): void {
  ctx.targets.push({ target, measured, verdict: ok === undefined ? 'not measured' : ok ? 'met' : 'missed' })
}

function runsNote(d: Json): string {
  const runs = num(get(d, 'runs'))
  if (!Number.isFinite(runs)) return ''
  return runs >= 3 ? `Medians of ${runs} runs.` : `**${runs} run${runs === 1 ? '' : 's'} only** (the report asks for medians of ≥ 3: rerun with \`--runs 3\`).`
}

function throughputSection(ctx: Ctx): string {
  const d = ctx.files.throughput
  if (!d) return '## Throughput and latency\n\nNo `bench/results/throughput.json` yet: run `npx tsx bench/throughput.ts --runs 3`.\n'
  const med = obj(get(d, 'medians'))
  const out: string[] = ['## Throughput and latency', '']
  const phased = Object.keys(med).some((k) => k.endsWith(' steady'))
  const gw = get(d, 'gateway')
  out.push(
    `${num(get(d, 'devices'))} devices (firmware-sim, one MQTT client each), QoS 1, ~${num(get(d, 'payloadBytes'))}-byte JSON. "max": closed loop, 10 in flight per device; "5k/s": ${f(num(get(d, 'fixedRatePerS')) || 5000)} msg/s in total for ${f(num(get(d, 'fixedSeconds')) || 10)} s. ` +
      (phased
        ? `Every run is one fresh server process measured twice: **cold** (no warm-up: max = ${f(num(get(d, 'countPerDevice')))} messages per device, 5k/s = ${f(num(get(d, 'fixedSeconds')) || 10)} s) and then **steady** (the same process after the cold phase as warm-up, at least ${f(num(get(d, 'warmupMessages')))} messages: max = ${f(num(get(d, 'sustainSeconds')))} s of sustained max load, counted as it stands at the end, so a forwarding backlog shows; 5k/s = another ${f(num(get(d, 'fixedSeconds')) || 10)} s). `
        : `${f(num(get(d, 'countPerDevice')))} messages per device at max, fresh processes (cold). `) +
      `Ferry runs with \`--fsync always\` (every PUBACK after an fdatasync); "Ferry, --fsync batch" syncs the log every 100 ms instead (NATS's listener stores into a stream whose file store syncs every 2 minutes by default). ` +
      `Gateway runtime: Node ${str(get(gw, 'node')).replace(/^v/, '') || str(get(d, 'environment', 'node'))}${arr(get(gw, 'nodeArgs')).length ? ` with \`${arr(get(gw, 'nodeArgs')).map(str).join(' ')}\`${arr(get(gw, 'nodeArgs')).map(str).join(' ') === shippedV8Flags().join(' ') ? ' (the V8 flags the single executables ship with, scripts/runtime.mjs: the figures are those of what ships)' : ''}` : ' (no V8 flags)'}. Load generator, edge broker and nats-server share the machine. ${runsNote(d)}${num(get(d, 'peerRuns')) < num(get(d, 'runs')) ? ` Ferry (both fsync policies) and NATS's listener run ${f(num(get(d, 'runs')))} times, the other peers ${f(num(get(d, 'peerRuns')))}.` : ''} Each peer's figure is followed by Ferry's figure divided by it (throughput: above 1× is better for Ferry; latency and CPU: below 1× is better for Ferry).`,
    '',
  )
  const figures: [string, string, (s: Json) => number][] = [
    ['acked msg/s', 'ackedPerS', (s) => num(get(s, 'ackedPerS'))],
    ['in JetStream msg/s', 'arrivedPerS', (s) => num(get(s, 'arrivedPerS'))],
    ['PUBACK p50 ms', 'pubackP50', (s) => num(get(s, 'pubackP50'))],
    ['PUBACK p99 ms', 'pubackP99', (s) => num(get(s, 'pubackP99'))],
    ['device→JetStream p50 ms', 'e2eP50', (s) => num(get(s, 'e2eP50'))],
    ['device→JetStream p99 ms', 'e2eP99', (s) => num(get(s, 'e2eP99'))],
    ['server CPU ms per 1k msgs', 'cpuMsPer1k', (s) => num(get(s, 'cpuMsPer1k'))],
    ['edge process RSS max MiB', 'rssMaxMiB', (s) => num(get(s, 'rssMaxMiB'))],
  ]
  const FERRY_VARIANTS: Record<string, string> = { 'ferry-batch': 'Ferry, --fsync batch', 'ferry-v5': 'Ferry, MQTT 5 devices' }
  for (const mode of ['max', '5k/s'] as const)
    for (const phase of phased ? (['steady', 'cold'] as const) : (['cold'] as const)) {
      const at = (t: string): Json => thr(ctx.files, t, mode, phase)
      const ferry = at('ferry')
      if (!ferry) continue
      const variants = Object.keys(FERRY_VARIANTS).filter((v) => at(v))
      const peers = Object.keys(PEERS).filter((p) => at(p))
      const title = mode === 'max' ? 'As fast as acknowledged' : '5,000 msg/s'
      out.push(`### ${title}${phased ? (phase === 'steady' ? (mode === 'max' ? `, steady state (${f(num(get(d, 'sustainSeconds')))} s sustained, after warm-up)` : ', steady state (after warm-up)') : ', cold (fresh process)') : ''}`, '')
      const rows: string[][] = [['figure', 'Ferry', ...variants.map((v) => FERRY_VARIANTS[v]!), ...peers.map((p) => PEERS[p]!)]]
      const cols = [...variants, ...peers]
      for (const [label, , pick] of figures) rows.push([label, f(pick(ferry)), ...cols.map((p) => withRatio(pick(at(p)), pick(ferry)))])
      const cpuSplit = (s: Json, edge: string): string => `${f(num(get(s, 'gatewayCpuMsPer1k')))} ${edge} + ${f(num(get(s, 'natsCpuMsPer1k')))} nats-server`
      rows.push(['  of which', cpuSplit(ferry, 'Ferry'), ...cols.map((p) => (p.startsWith('ferry') ? cpuSplit(at(p), 'Ferry') : p.startsWith('mosquitto') ? cpuSplit(at(p), 'Mosquitto') : `${f(num(get(at(p), 'natsCpuMsPer1k')))} nats-server`))])
      if (phase === 'steady' && mode === 'max') rows.push(["Ferry's forwarding lag max, s", f(num(get(ferry, 'lagMaxS'))), ...cols.map((p) => (p.startsWith('ferry') ? f(num(get(at(p), 'lagMaxS'))) : '–'))])
      const lossCell = (s: Json): string => (Number.isFinite(num(get(s, 'lost'))) ? `${f(num(get(s, 'lost')))}` : '–')
      rows.push([phased ? 'acknowledged, never in JetStream (whole process)' : 'acknowledged, never in JetStream', lossCell(ferry), ...cols.map((p) => lossCell(at(p)))])
      rows.push(['stored twice', f(num(get(ferry, 'duplicates'))), ...cols.map((p) => f(num(get(at(p), 'duplicates'))))])
      out.push(table(rows), '')
    }
  const lossy = Object.entries(med).filter(([, s]) => num(get(s, 'lost')) > 0)
  if (lossy.length) {
    out.push(
      `**Acknowledged messages lost** (PUBACK sent to the device, never stored in JetStream; read back from the stream): ${lossy.map(([k, s]) => `${k}: ${f(num(get(s, 'lost')))} of ${f(num(get(s, 'acked')))} (${((100 * num(get(s, 'lost'))) / num(get(s, 'acked'))).toFixed(1)} %)`).join('; ')}. Medians over the runs, per run in \`all\` of throughput.json.`,
      '',
    )
  }
  const variants = obj(get(d, 'peers', 'mosquittoVariants'))
  if (Object.keys(variants).length) {
    out.push(`Mosquitto (${str(get(d, 'peers', 'mosquitto'))}): persistence on, bridge \`topic devices/# out 1\`, \`cleansession false\`, \`try_private false\`, MQTT 3.1.1. Variants: ${Object.entries(variants).map(([k, v]) => `${k}: ${arr(v).length ? arr(v).map((x) => `\`${str(x)}\``).join(', ') : "Mosquitto's defaults (max_queued_messages 1000, max_inflight_messages 20, set_tcp_nodelay false)"}`).join('; ')}. Mosquitto's PUBACK means "queued in memory": with persistence on it writes its database every \`autosave_interval\` (1800 s by default) and at a clean shutdown, so a crash loses what arrived since the last save.`, '')
  }
  // Latency charts.
  const hist = obj(get(d, 'histograms'))
  for (const mode of ['max', '5k/s']) {
    const lines: Line[] = []
    for (const t of ['ferry', ...Object.keys(PEERS)]) {
      const h = hist[`${t} ${mode} steady`] ?? hist[`${t} ${mode}`]
      if (!h) continue
      const name = t === 'ferry' ? 'Ferry' : PEERS[t]!
      const color = COLORS[t] ?? '#000'
      if (get(h, 'puback')) lines.push({ label: `${name}: PUBACK`, color, points: cdf(get(h, 'puback')) })
      if (get(h, 'e2e')) lines.push({ label: `${name}: device→JetStream`, color, dashed: true, points: cdf(get(h, 'e2e')) })
    }
    if (!lines.length) continue
    const file = `latency-${mode === 'max' ? 'max' : '5k'}.svg`
    ctx.charts[file] = lineChart({
      title: `Latency distribution, ${mode === 'max' ? 'as fast as acknowledged' : '5,000 msg/s'} (all runs${hist[`ferry ${mode} steady`] ? ', steady state' : ''})`,
      xLabel: 'latency, ms (log scale)',
      yLabel: 'fraction of messages at or below',
      lines,
      xLog: true,
      xMin: 0.1,
      yMin: 0,
      yMax: 1,
      note: 'PUBACK: publish() to PUBACK at the device. device→JetStream: payload timestamp to a NATS subscriber (1 ms clock, every 5th message).',
    })
    out.push(`![Latency CDF, ${mode}](charts/${file})`, '')
  }
  return out.join('\n')
}

function drainSection(ctx: Ctx): string {
  const d = ctx.files.drain
  if (!d) return '## Backlog drain\n\nNo `bench/results/drain.json` yet: run `npx tsx bench/drain.ts`.\n'
  const out: string[] = ['## Backlog drain', '']
  const med = obj(get(d, 'medians'))
  // Older drain.json: Ferry's figures at the top level, no peers.
  const ferry = med.ferry ?? (get(d, 'drainPerS') !== undefined ? d : undefined)
  const ingest = med['nats-mqtt']
  const n = num(get(d, 'messagesRequested')) || num(get(ferry, 'messages')) || num(get(ferry, 'acked'))
  out.push(
    `${f(n)} messages (${f(num(get(d, 'devices')) || 50)} devices, QoS 1, closed loop, ~${f(num(get(d, 'payloadBytes')) || 200)}-byte JSON) acknowledged by the edge while nats-server was stopped; then nats-server starts again on the same store while one live device publishes ${f(num(get(d, 'liveRatePerS')) || 100)} msg/s. Drain rate = backlog messages stored in JetStream ÷ seconds from the upstream's return to the last of them. NATS MQTT: the same messages published straight to nats-server's MQTT listener with no outage (its ingest rate into JetStream). ${runsNote(d)}`,
    '',
  )
  const edges = ['ferry', 'mosquitto-tuned', 'mosquitto-defaults'].filter((k) => med[k] || (k === 'ferry' && ferry))
  const pick = (k: string): Json => (k === 'ferry' ? ferry : med[k])
  const name = (k: string): string => (k === 'ferry' ? 'Ferry' : PEERS[k]!)
  const fd = num(get(ferry, 'drainPerS'))
  const rows: string[][] = [['figure', ...edges.map(name), ...(ingest ? ['NATS MQTT, no outage'] : [])]]
  const row = (label: string, fn: (s: Json) => string, ing?: string): void => {
    rows.push([label, ...edges.map((k) => fn(pick(k))), ...(ingest ? [ing ?? ''] : [])])
  }
  row('acknowledged while upstream down', (s) => f(num(get(s, 'acked')) || num(get(s, 'messages'))), f(num(get(ingest, 'messages'))))
  row('fill msg/s (acked at devices)', (s) => f(num(get(s, 'fillPerS'))), f(num(get(ingest, 'ackedPerS'))))
  const drainCell = (k: string): string => {
    const s = pick(k)
    const cell = k === 'ferry' ? f(fd) : withRatio(num(get(s, 'drainPerS')), fd)
    return num(get(s, 'lost')) > 0 ? `${cell}, of the ${f(num(get(s, 'delivered')))} it kept` : cell
  }
  rows.push(['drain msg/s into JetStream', ...edges.map(drainCell), ...(ingest ? [`ingest ${withRatio(num(get(ingest, 'arrivedPerS')), fd)}`] : [])])
  row('time to empty, s', (s) => f(num(get(s, 'drainS'))), f(num(get(ingest, 'seconds'))))
  row('upstream back → first backlog message, s', (s) => f(num(get(s, 'firstArrivalS'))))
  row('msg/s once flowing', (s) => f(num(get(s, 'flowingPerS'))))
  row('acknowledged, never in JetStream', (s) => (Number.isFinite(num(get(s, 'lost'))) ? `**${f(num(get(s, 'lost')))}**` : '–'))
  row('stored twice', (s) => f(num(get(s, 'duplicates'))))
  row('RSS while buffering, MiB (min–max)', (s) => `${f(num(get(s, 'rssBacklogMiB', 'min')))}–${f(num(get(s, 'rssBacklogMiB', 'max')))}`)
  row('RSS while draining, max MiB', (s) => f(num(get(s, 'rssDuringDrainMaxMiB'))))
  row('live device p50 / p99 during drain, ms', (s) => `${f(num(get(s, 'liveDuringDrain', 'p50')))} / ${f(num(get(s, 'liveDuringDrain', 'p99')))}`)
  row('live device p50 / p99 after drain, ms', (s) => `${f(num(get(s, 'liveAfterDrain', 'p50')))} / ${f(num(get(s, 'liveAfterDrain', 'p99')))}`)
  row('device started once messages flow again, p50 / p99 during drain, ms', (s) => `${f(num(get(s, 'freshDuringDrain', 'p50')))} / ${f(num(get(s, 'freshDuringDrain', 'p99')))}`)
  out.push(table(rows), '')
  out.push('RSS is that of the edge process (Ferry or Mosquitto). Mosquitto holds its backlog in memory; Ferry holds it in its on-disk log.', '')
  const defaults = med['mosquitto-defaults']
  if (num(get(defaults, 'lost')) > 0) {
    out.push(`**Mosquitto with its default \`max_queued_messages 1000\` acknowledged ${f(num(get(defaults, 'acked')))} messages and delivered ${f(num(get(defaults, 'delivered')))}: ${f(num(get(defaults, 'lost')))} acknowledged messages (${((100 * num(get(defaults, 'lost'))) / num(get(defaults, 'acked'))).toFixed(1)} %) were dropped silently** (its log says only "Outgoing messages are being dropped for client local.…").`, '')
  }
  // Charts from the time series.
  const series = obj(get(d, 'series'))
  const rowsOf = (k: string): number[][] => arr(get(series, k, 'rows')).map((r) => arr(r).map(num))
  const marksOf = (k: string): { x: number; label: string }[] => arr(get(series, k, 'marks')).map((m) => ({ x: num(get(m, 'tS')), label: str(get(m, 'label')) }))
  if (series.ferry) {
    const r = rowsOf('ferry')
    ctx.charts['drain-ferry.svg'] = lineChart({
      title: `Ferry through an upstream outage and the drain (${f(n)} messages)`,
      xLabel: 'seconds',
      yLabel: 'messages per second',
      lines: [
        { label: 'acknowledged at devices', color: '#555555', points: r.map((x) => [x[0]!, x[1]!]) },
        { label: 'arriving in JetStream', color: COLORS.ferry!, points: r.map((x) => [x[0]!, x[2]!]) },
      ],
      marks: marksOf('ferry'),
      note: `per ${f(num(get(series, 'ferry', 'intervalMs')))} ms`,
    })
    out.push('![Ferry outage and drain](charts/drain-ferry.svg)', '')
  }
  const aligned: Line[] = []
  const rss: Line[] = []
  for (const k of ['ferry', 'mosquitto-tuned', 'mosquitto-defaults', 'nats-mqtt']) {
    if (!series[k]) continue
    const zeroLabel = k === 'nats-mqtt' ? 'devices start' : 'upstream up'
    const zero = marksOf(k).find((m) => m.label === zeroLabel)?.x ?? 0
    const label = k === 'nats-mqtt' ? 'NATS MQTT ingest, no outage (t = 0: devices start)' : `${k === 'ferry' ? 'Ferry' : PEERS[k]} drain`
    aligned.push({ label, color: COLORS[k] ?? '#000', dashed: k === 'nats-mqtt', points: rowsOf(k).filter((x) => x[0]! >= zero - 1).map((x) => [x[0]! - zero, x[2]!]) })
    if (k !== 'nats-mqtt') rss.push({ label: k === 'ferry' ? 'Ferry' : PEERS[k]!, color: COLORS[k] ?? '#000', points: rowsOf(k).map((x) => [x[0]!, x[3]!]) })
  }
  if (aligned.length > 1) {
    ctx.charts['drain-compare.svg'] = lineChart({ title: 'Messages per second arriving in JetStream after the upstream returns', xLabel: 'seconds after nats-server is back', yLabel: 'messages per second', lines: aligned, xMin: -1, marks: [{ x: 0, label: 'upstream up' }] })
    out.push('![Drain compared](charts/drain-compare.svg)', '')
  }
  if (rss.length) {
    ctx.charts['drain-rss.svg'] = lineChart({ title: 'RSS of the edge process through the outage and drain', xLabel: 'seconds after the upstream went down', yLabel: 'RSS, MiB', lines: rss })
    out.push('![RSS through outage and drain](charts/drain-rss.svg)', '')
  }
  return out.join('\n')
}

function prioritySection(ctx: Ctx): string {
  const d = ctx.files.priority
  if (!d) return '## Prioritised drain\n\nNo `bench/results/priority.json` yet: run `npm run bench -- --only priority`.\n'
  const m = obj(get(d, 'medians'))
  const names: [string, string][] = [
    ['ferry-classes', `Ferry \`--priority '${str(get(d, 'priority'))}'\``],
    ['ferry', 'Ferry, no classes'],
    ['mosquitto-tuned', 'Mosquitto → bridge, tuned'],
    ['nats-mqtt', 'NATS MQTT, no outage'],
  ]
  const cols = names.filter(([k]) => m[k] !== undefined)
  const row = (label: string, key: string, digits?: number): string[] => [label, ...cols.map(([k]) => f(num(get(m[k], key)), digits))]
  const out = ['## Prioritised drain', '']
  out.push(
    `${f(num(get(d, 'messages')))} QoS 1 messages (${f(num(get(d, 'devices')))} devices, closed loop, ~${f(num(get(d, 'payloadBytes')))}-byte JSON), every ${f(num(get(d, 'alarmEvery')))}th of each device to \`alarms/<device>\`, spread evenly through the backlog, the rest to \`sites/<device>/telemetry\`; acknowledged by the edge while nats-server was stopped, then nats-server starts again. Times from upstream's return (NATS MQTT: from the first publish, no outage: it cannot buffer while its server is down), read from the stream's timestamps after the drain. Ferry ${f(num(get(d, 'runs')))} run(s), peers ${f(num(get(d, 'peerRuns')))}; medians.`,
    '',
  )
  out.push(
    table([
      ['figure', ...cols.map(([, l]) => l)],
      row('acknowledged', 'acked'),
      row('fill msg/s (acked at devices)', 'fillPerS'),
      row('first message in JetStream, s', 'firstS', 2),
      row('first alarm, s', 'firstAlarmS', 2),
      row('first telemetry message, s', 'firstTelemetryS', 2),
      row('**last alarm, s**', 'lastAlarmS', 2),
      row('**last message, s**', 'lastMessageS', 2),
      ['last alarm ÷ last message', ...cols.map(([k]) => `${f(100 * num(get(m[k], 'lastAlarmShare')), 1)} %`)],
      row('last alarm − first message, s (without the reconnect delay)', 'alarmsAfterFirstS', 2),
      row('drain msg/s (stored ÷ time to last message)', 'drainPerS'),
      row('msg/s once flowing (from the first message stored)', 'flowingPerS'),
      row('steady msg/s (10 % → 90 % of the stream)', 'steadyPerS'),
      row('acknowledged, not in JetStream', 'missing'),
      row('stored beyond acknowledged', 'extra'),
    ]),
    '',
  )
  const r = obj(get(d, 'ratio'))
  if (Object.keys(r).length) {
    const steady = num(r.steadyClassesVsWithout)
    out.push(
      `Ferry with classes ÷ without, steady drain msg/s: **${f(steady, 3)}** (median of run pairs ${f(num(r.steadyClassesVsWithoutPairedMedian), 3)}; target ≥ ${f(num(r.target), 2)}: **${steady >= num(r.target) ? 'met' : 'missed'}**); once flowing ${f(num(r.flowingClassesVsWithout), 3)} (run pairs ${f(num(r.flowingClassesVsWithoutPairedMedian), 3)}); from upstream's return ${f(num(r.drainClassesVsWithout), 3)} (run pairs ${f(num(r.drainClassesVsWithoutPairedMedian), 3)}).`,
      '',
    )
  }
  return out.join('\n')
}

function crashSection(ctx: Ctx): string {
  const d = ctx.files.crash
  if (!d) return '## Crash\n\nNo `bench/results/crash.json` yet.\n'
  const s = obj(get(d, 'summary'))
  if (!Object.keys(s).length) return `## Crash\n\n${generic(d)}\n`
  const out = ['## Crash', '']
  out.push(`${f(num(get(d, 'rounds')))} × kill -9 of the gateway under load (${f(num(get(d, 'devices')))} devices, QoS 1, \`--fsync ${str(get(d, 'fsync')) || 'always'}\`), restarted on the same data directory; then every acknowledged (device, seq) is looked up in the stream.`, '')
  out.push(table([['figure', 'value'], ...Object.entries(s).map(([k, v]) => [k, typeof v === 'number' ? f(v) : str(v)])]), '')
  const restarts = arr(get(d, 'restarts'))
  if (restarts.length) {
    const keys = Object.keys(obj(restarts[0]))
    out.push(table([keys, ...restarts.map((r) => keys.map((k) => (typeof get(r, k) === 'number' ? f(num(get(r, k))) : str(get(r, k)))))]), '')
  }
  return out.join('\n')
}

function compactnessSection(ctx: Ctx): string {
  const d = ctx.files.compactness
  if (!d) return '## Bytes stored per message\n\nNo `bench/results/compactness.json` yet.\n'
  const rows = arr(get(d, 'rows'))
  if (!rows.length) return `## Bytes stored per message\n\n${generic(d)}\n`
  const nats = rows.find((r) => /nats/i.test(str(get(r, 'target'))))
  const fields: [string, string][] = [
    ['stored B/msg (stream state)', 'storedBytesPerMsg'],
    ['subject B', 'subjectBytes'],
    ['headers B', 'headerBytes'],
    ['payload B', 'payloadBytes'],
    ['store framing B', 'storeOverheadBytes'],
    ['JSON input B', 'inputJsonBytes'],
  ]
  const out = ['## Bytes stored per message', '', `${f(num(get(d, 'devices')) * num(get(d, 'countPerDevice')))} identical telemetry messages in a JetStream file store; Ferry's figures with their ratio to NATS MQTT's.`, '']
  const others = rows.filter((r) => r !== nats)
  const t: string[][] = [['figure', ...(nats ? [str(get(nats, 'target'))] : []), ...others.map((r) => str(get(r, 'target')))]]
  for (const [label, key] of fields) {
    const base = num(get(nats, key))
    t.push([label, ...(nats ? [f(base)] : []), ...others.map((r) => (nats ? `${f(num(get(r, key)))} (${ratio(num(get(r, key)), base)})` : f(num(get(r, key)))))])
  }
  out.push(table(t), '')
  return out.join('\n')
}

function footprintSection(ctx: Ctx): string {
  const d = ctx.files.footprint
  if (!d) return '## Footprint\n\nNo `bench/results/footprint.json` yet.\n'
  const out = ['## Footprint', '', `Gateway: ${sourceOf(ctx.files, 'footprint')} (commit, runtime and V8 flags).`, '']
  const conn = arr(get(d, 'connections'))
  if (conn.length) {
    const counts = [...new Set(conn.map((c) => num(get(c, 'devices'))))].sort((a, b) => a - b)
    const t: string[][] = [['devices connected', 'Ferry RSS MiB', 'NATS MQTT RSS MiB', 'Ferry KiB / connection', 'NATS KiB / connection']]
    for (const n of counts) {
      const fr = conn.find((c) => num(get(c, 'devices')) === n && str(get(c, 'target')) === 'ferry')
      const nm = conn.find((c) => num(get(c, 'devices')) === n && str(get(c, 'target')) === 'nats-mqtt')
      t.push([f(n), f(num(get(fr, 'rssMiB'))), withRatio(num(get(nm, 'rssMiB')), num(get(fr, 'rssMiB'))), f(num(get(fr, 'kibPerConnection'))), withRatio(num(get(nm, 'kibPerConnection')), num(get(fr, 'kibPerConnection')))])
    }
    out.push(table(t), '')
  }
  const load = obj(get(d, 'load'))
  if (Object.keys(load).length) {
    const fr = get(load, 'ferry', 'rss')
    const nm = get(load, 'nats-mqtt', 'rss')
    out.push(table([['under load', 'Ferry', 'NATS MQTT'], ['RSS median MiB', f(num(get(fr, 'median'))), withRatio(num(get(nm, 'median')), num(get(fr, 'median')))], ['RSS max MiB', f(num(get(fr, 'max'))), withRatio(num(get(nm, 'max')), num(get(fr, 'max')))]]), '')
  }
  const b = get(d, 'backlog')
  if (b) {
    out.push(`Backlog (Ferry, upstream down): ${f(num(get(b, 'messages')))} messages at ${f(num(get(b, 'fillPerS')))} msg/s; RSS min / median / max ${f(num(get(b, 'rss', 'min')))} / ${f(num(get(b, 'rss', 'median')))} / ${f(num(get(b, 'rss', 'max')))} MiB; at 10 % / 50 % / 100 % of the fill ${f(num(get(b, 'rssAt', 'p10')))} / ${f(num(get(b, 'rssAt', 'p50')))} / ${f(num(get(b, 'rssAt', 'p100')))} MiB.`, '')
  }
  const sizes = obj(get(d, 'sizes'))
  const starts = obj(get(d, 'coldStartMs'))
  if (Object.keys(sizes).length || Object.keys(starts).length) {
    const med = (v: Json): number => {
      const xs = arr(v).map(num).sort((a, b2) => a - b2)
      return xs.length ? (xs.length % 2 ? xs[xs.length >> 1]! : (xs[xs.length / 2 - 1]! + xs[xs.length / 2]!) / 2) : NaN
    }
    const mib = (x: number): string => (Number.isFinite(x) ? `${(x / 2 ** 20).toFixed(1)} MiB` : '–')
    out.push(
      table([
        ['artefact', 'size', 'cold start ms (median)'],
        ['dist/ferry.cjs', `${mib(num(sizes.bundleBytes))} (gzip ${mib(num(sizes.bundleGzipBytes))})`, f(med(starts.bundle))],
        ['dist/ferry (single executable)', mib(num(sizes.binaryBytes)), f(med(starts.binary))],
        ['nats-server (peer)', mib(num(sizes.natsServerBytes)), f(med(starts.natsMqtt))],
      ]),
      '',
    )
  }
  if (!conn.length && !Object.keys(load).length && !b) out.push(generic(d), '')
  return out.join('\n')
}

function startupSection(ctx: Ctx): string {
  const d = ctx.files.startup
  if (!d) return '## Startup\n\nNo `bench/results/startup.json` yet.\n'
  const meds = arr(get(d, 'medians'))
  if (!meds.length) return `## Startup\n\n${generic(d)}\n`
  const out = ['## Startup', '', `Spawn until MQTT accepts connections on a log of ${f(num(get(d, 'records')))} records (${((num(get(d, 'logBytes')) || NaN) / 2 ** 20).toFixed(0)} MiB). ${runsNote(d)}`, '']
  out.push(table([['state', 'start ms', 'recovery ms (logged)', 'RSS MiB'], ...meds.map((m) => [str(get(m, 'state')), f(num(get(m, 'startMs'))), f(num(get(m, 'recoveryMs'))), f(num(get(m, 'rssMiB')))])]), '')
  return out.join('\n')
}

/** Every numeric leaf of a result whose shape this report does not know (first 80). */
function downlinkSection(ctx: Ctx): string {
  const d = ctx.files.downlink
  if (!d) return '## Cloud to device\n\nNo `bench/results/downlink.json` yet: run `npx tsx bench/downlink.ts`.\n'
  const s = obj(get(d, 'summary'))
  const out = ['## Cloud to device', '']
  out.push(`${f(num(get(d, 'commands')))} durable commands round robin over ${f(num(get(d, 'devices')))} devices (JetStream → gateway → MQTT QoS 1 → PUBACK → JetStream ack), every device receiving its commands once and in order; ${f(num(get(d, 'requests')))} RPC requests (NATS request → device → reply) to one device. ${runsNote(d)}`, '')
  out.push(table([['figure', 'Ferry'], ...Object.entries(s).map(([k, v]) => [k, f(num(v), k.includes('ms') ? 2 : undefined)])]), '')
  out.push("NATS's MQTT listener has no counterpart: it delivers NATS-originated messages to devices at QoS 0 only, and keeps nothing for offline devices.", '')
  return out.join('\n')
}

/** fleet.ts runs once by default (its time budget): say so, without asking for 3 runs as runsNote does. */
function fleetRuns(d: Json): string {
  const runs = num(get(d, 'runs'))
  const asked = num(get(d, 'runsRequested'))
  if (!Number.isFinite(runs)) return ''
  const cut = asked > runs ? ` (${f(asked)} asked; the next would have ended after \`--max-seconds ${f(num(get(d, 'maxSeconds')))}\`)` : ''
  const took = Number.isFinite(num(get(d, 'seconds'))) ? ` The fleet bench took ${f(num(get(d, 'seconds')), 0)} s.` : ''
  return `${runs >= 2 ? `Medians of ${runs} runs, interleaved` : 'One run of each'}${cut}.${took}`
}

function fleetSection(ctx: Ctx): string {
  const d = ctx.files.fleet
  if (!d) return '## Fleet\n\nNo `bench/results/fleet.json` yet: run `npm run bench -- --only fleet` (or `npx tsx bench/fleet.ts`).\n'
  const load = obj(get(d, 'load'))
  const med = obj(get(d, 'medians'))
  const labels = obj(get(d, 'targets'))
  const out = ['## Fleet', '']
  out.push(
    `The same load into three upstreams: ${f(num(load.sites))} sites × ${f(num(load.devicesPerSite))} devices (${f(num(load.devices))} MQTT 3.1.1 clients, firmware-sim), QoS 1, ~${f(num(load.payloadBytes))}-byte telemetry JSON, closed loop with ${f(num(load.inflightPerDevice))} message in flight per device; ${f(num(load.warmupSeconds))} s of load after every device is connected, then a measured window of ${f(num(load.windowSeconds))} s. ` +
      "**1 gateway**: one gateway (`--fsync always`) holds all sites and forwards into one nats-server, stream R1. **3 gateways**: one gateway per site (distinct `--gateway-id`, one `--subject-prefix`, `--stream-replicas 3`, all three `--nats-url`s) into a 3-node JetStream cluster, stream R3; after the window one node gets kill -9 (below) and the load goes on until the cluster has recovered, then " +
      `${f(num(load.afterKillSeconds))} s more. **NATS MQTT**: the devices straight to NATS's MQTT listener on the same kind of cluster (site i → node i), a stream on \`devices.>\` R3. ` +
      `CPU per message stored, from /proc, of all gateways and of all nats-servers; the load generator runs on the same cores (its share of a core in the table). Every acknowledged (device, seq) is then looked up in the stream (a device that reconnects resends what it had unacknowledged, so reconnects can show as duplicates). ${fleetRuns(d)}`,
    '',
  )
  const rows: string[][] = [['target', 'acked msg/s', 'into JetStream msg/s', 'gateways CPU µs/msg', 'nats-servers CPU µs/msg', 'total CPU µs/msg', 'device→JetStream p50 / p99 ms', 'RSS max MiB: gateway / nats-server', 'load generator % of a core', 'acknowledged (per device)', 'device reconnects', 'lost', 'duplicates']]
  for (const [t, s] of Object.entries(med)) {
    rows.push([str(labels[t]) || t, f(num(get(s, 'ackedPerS')), 0), f(num(get(s, 'storedPerS')), 0), f(num(get(s, 'gatewaysCpuUsPerMsg')), 1), f(num(get(s, 'natsCpuUsPerMsg')), 1), f(num(get(s, 'cpuUsPerMsg')), 1), `${f(num(get(s, 'e2eP50')))} / ${f(num(get(s, 'e2eP99')))}`, `${f(num(get(s, 'gatewayRssMaxMiB')), 0)} / ${f(num(get(s, 'natsRssMaxMiB')), 0)}`, f(num(get(s, 'loadGenCpuPct')), 0), `${f(num(get(s, 'acked')))} (${f(num(get(s, 'ackedPerDevice')), 0)})`, f(num(get(s, 'reconnects'))), f(num(get(s, 'lost'))), f(num(get(s, 'duplicates')))])
  }
  out.push(table(rows), '')
  const ratios = obj(get(d, 'ratios'))
  if (Object.keys(ratios).length) {
    const figs: [string, string][] = [['ackedPerS', 'acked msg/s'], ['storedPerS', 'into JetStream msg/s'], ['gatewaysCpuUsPerMsg', 'gateways CPU/msg'], ['natsCpuUsPerMsg', 'nats-servers CPU/msg'], ['cpuUsPerMsg', 'total CPU/msg'], ['e2eP99', 'device→JetStream p99']]
    const names: Record<string, string> = { 'fleet/one-gateway': '3 gateways ÷ 1 gateway', 'fleet/nats-mqtt': '3 gateways ÷ NATS MQTT' }
    out.push(table([['ratio (same run)', ...figs.map(([, l]) => l)], ...Object.entries(ratios).map(([k, r]) => [names[k] ?? k, ...figs.map(([key]) => ratio(num(get(r, key)), 1))])]), '')
  }
  const fl = obj(med.fleet)
  if (str(get(d, 'kill')) !== 'none' && Object.keys(fl).length) {
    const killed = arr(get(d, 'all', 'fleet')).map((r) => get(r, 'notes', 'killed'))
    const which = killed.map((k) => `${str(get(k, 'node'))}${get(k, 'wasStreamLeader') === true ? ' (leader)' : ''}`).join(', ')
    out.push(`Node kill under load (3 gateways): kill -9 of ${str(get(d, 'kill')) === 'leader' ? "the stream's leader" : str(get(d, 'kill'))} (${which || '–'}); the gateways keep acknowledging devices from their logs while the stream has no leader. "Backlog back" is the gateways' summed \`ferry_log_backlog_records\` back at its largest value in the window before the kill.`, '')
    out.push(
      table([
        ['kill → stream grows again ms', 'kill → backlog back ms', 'backlog before → peak', 'acked msg/s while stalled', 'lost', 'duplicates'],
        [f(num(fl.killToGrowthMs), 0), f(num(fl.killToBacklogRecoveredMs), 0), `${f(num(fl.backlogBeforeKill))} → ${f(num(fl.backlogPeak))}`, f(num(fl.ackedPerSWhileStalled), 0), f(num(fl.lost)), f(num(fl.duplicates))],
      ]),
      '',
    )
  }
  return out.join('\n')
}

function microSection(ctx: Ctx): string {
  const d = ctx.files.micro
  if (!d) return '## Micro-benchmarks\n\nNo `bench/results/micro.json` yet: run `npm run bench:micro`.\n'
  const rs = arr(get(d, 'results'))
  const out = ['## Micro-benchmarks', '', `Each hot step in process (\`bench/micro.ts\`, \`npm run bench:micro\`), ~${f(num(get(d, 'payloadBytes')))}-byte telemetry JSON; median of ${f(num(get(d, 'rounds')))} rounds, each after a warm-up round; Node ${str(get(d, 'environment', 'node')).replace(/^v/, '')}. Ingress: parse → payload → encodeEntry → append → PUBACK; forward: read → decodeEntry → uplinkMessage → classifyPubAck. The end-to-end rows go through an in-process gateway against a real nats-server.`, '']
  out.push(table([['step', 'ns/op (wall)', 'CPU ns/op', 'note'], ...rs.map((r) => [str(get(r, 'step')), f(num(get(r, 'nsPerOp'))), f(num(get(r, 'cpuNsPerOp'))), str(get(r, 'note'))])]), '')
  return out.join('\n')
}

function generic(d: Json): string {
  const rows: string[][] = [['field', 'value']]
  const walk = (v: Json, p: string): void => {
    if (rows.length > 80) return
    if (typeof v === 'number' || typeof v === 'boolean') rows.push([p, typeof v === 'number' ? f(v) : String(v)])
    else if (Array.isArray(v)) v.slice(0, 10).forEach((x, i) => walk(x, `${p}[${i}]`))
    else if (v && typeof v === 'object') for (const [k, x] of Object.entries(v)) if (k !== 'environment' && k !== 'series' && k !== 'histograms') walk(x, p ? `${p}.${k}` : k)
  }
  walk(d, '')
  return table(rows)
}

// ---------- targets of issue 14 ----------

/** One target evaluated on one set of result files: what was measured, the verdict, and which commit measured it. */
interface TargetEval {
  target: string
  measured: string
  verdict: 'met' | 'missed' | 'not measured'
  /** `<git sha>, Node <version>` of the result file the figure comes from. */
  source: string
}

/** A throughput median by target, mode and phase; older files (no phases) hold the cold figure under `<target> <mode>`. */
function thr(files: Record<string, Json>, target: string, mode: 'max' | '5k/s', phase: 'cold' | 'steady'): Json {
  const med = obj(get(files.throughput, 'medians'))
  return med[`${target} ${mode} ${phase}`] ?? (phase === 'cold' ? med[`${target} ${mode}`] : undefined)
}

/** The commit and the gateway's Node of a result file. */
function sourceOf(files: Record<string, Json>, name: string): string {
  const d = files[name]
  if (!d) return '–'
  const node = str(get(d, 'gateway', 'node')) || str(get(d, 'environment', 'node'))
  const flags = arr(get(d, 'gateway', 'nodeArgs') ?? get(d, 'environment', 'gatewayNodeArgs')).map(str).join(' ')
  const known = get(d, 'gateway', 'nodeArgs') !== undefined || get(d, 'environment', 'gatewayNodeArgs') !== undefined
  return `${str(get(d, 'environment', 'gitSha'))}, Node ${node.replace(/^v/, '')}${flags ? ` ${flags}` : known ? ' (no V8 flags)' : ''}`
}

function evalRow(target: string, measured: string, ok: boolean | undefined, source: string): TargetEval {
  return { target, measured, verdict: ok === undefined ? 'not measured' : ok ? 'met' : 'missed', source }
}

/** The targets of issue 14 (all on `npm run bench`, Ferry with `--fsync always` unless said), evaluated on `files`. */
function issue14Targets(files: Record<string, Json>): TargetEval[] {
  const out: TargetEval[] = []
  const T = 'throughput'
  const fs1 = thr(files, 'ferry', 'max', 'steady')
  const fc = thr(files, 'ferry', 'max', 'cold')
  const ns = thr(files, 'nats-mqtt', 'max', 'steady')
  const nc = thr(files, 'nats-mqtt', 'max', 'cold')
  const steadyKnown = fs1 !== undefined
  // Gateway CPU per message at max load, steady state (cold when the file has no steady phase).
  const cpuRow = fs1 ?? fc
  const g = num(get(cpuRow, 'gatewayCpuMsPer1k'))
  out.push(evalRow(`Gateway CPU ≤ 10 µs/msg at max load, steady state${steadyKnown ? '' : ' (cold: no steady phase in this file)'}`, cpuRow ? `${f(g)} µs/msg${fc && fs1 ? ` (cold ${f(num(get(fc, 'gatewayCpuMsPer1k')))})` : ''}` : '–', cpuRow ? g <= 10 : undefined, sourceOf(files, T)))
  // End-to-end throughput into JetStream ÷ NATS's MQTT listener, steady state (cold reported too).
  const e2e = (a: Json, b: Json): string => `${ratio(num(get(a, 'arrivedPerS')), num(get(b, 'arrivedPerS')))} (${f(num(get(a, 'arrivedPerS')))} vs ${f(num(get(b, 'arrivedPerS')))} msg/s)`
  const tf = fs1 ?? fc
  const tn = fs1 ? ns : nc
  out.push(
    evalRow(
      `End-to-end into JetStream at max load, steady state, ≥ 1.3× NATS's MQTT listener (same run)${steadyKnown ? '' : ' (cold only)'}`,
      tf && tn ? `${steadyKnown ? 'steady ' : ''}${e2e(tf, tn)}${steadyKnown && fc && nc ? `; cold ${e2e(fc, nc)}` : ''}` : '–',
      tf && tn ? num(get(tf, 'arrivedPerS')) / num(get(tn, 'arrivedPerS')) >= 1.3 : undefined,
      sourceOf(files, T),
    ),
  )
  // Sustained max load: device→JetStream p99 within 3× NATS's listener's.
  const p99 = (x: Json): number => num(get(x, 'e2eP99'))
  out.push(
    evalRow(
      `Sustained max load: device→JetStream p99 ≤ 3× NATS's listener's${steadyKnown ? ` (${f(num(get(files.throughput, 'sustainSeconds')))} s)` : ' (cold only)'}`,
      tf && tn ? `${ratio(p99(tf), p99(tn))} (${f(p99(tf))} vs ${f(p99(tn))} ms; p50 ${f(num(get(tf, 'e2eP50')))} vs ${f(num(get(tn, 'e2eP50')))} ms${Number.isFinite(num(get(tf, 'lagMaxS'))) ? `; Ferry's forwarding lag max ${f(num(get(tf, 'lagMaxS')))} s` : ''})` : '–',
      tf && tn ? p99(tf) <= 3 * p99(tn) : undefined,
      sourceOf(files, T),
    ),
  )
  const f5 = thr(files, 'ferry', '5k/s', 'steady') ?? thr(files, 'ferry', '5k/s', 'cold')
  out.push(evalRow('At 5,000 msg/s: PUBACK p99 ≤ 5 ms', f5 ? `${f(num(get(f5, 'pubackP99')))} ms` : '–', f5 ? num(get(f5, 'pubackP99')) <= 5 : undefined, sourceOf(files, T)))
  out.push(evalRow('At 5,000 msg/s: device→JetStream p99 ≤ 5 ms', f5 ? `${f(num(get(f5, 'e2eP99')))} ms` : '–', f5 ? num(get(f5, 'e2eP99')) <= 5 : undefined, sourceOf(files, T)))

  const d = files.drain
  // Older drain.json files hold Ferry's figures at the top level.
  const fd = get(d, 'medians', 'ferry') ?? (get(d, 'drainPerS') !== undefined ? d : undefined)
  const ing = get(d, 'medians', 'nats-mqtt')
  out.push(
    evalRow(
      "Drain of a 1,000,000-message backlog ≥ 1.6× NATS's listener's ingest",
      fd && ing ? `${ratio(num(get(fd, 'drainPerS')), num(get(ing, 'arrivedPerS')))} (${f(num(get(fd, 'drainPerS')))} vs ${f(num(get(ing, 'arrivedPerS')))} msg/s, ${f(num(get(d, 'messagesRequested')))} messages)` : '–',
      fd && ing ? num(get(fd, 'drainPerS')) / num(get(ing, 'arrivedPerS')) >= 1.6 && num(get(d, 'messagesRequested')) >= 1e6 : undefined,
      sourceOf(files, 'drain'),
    ),
  )

  // RSS under max load: the largest of the sustained max-load phase (throughput.json), footprint.json's load shown beside.
  const rssLoad = num(get(fs1, 'rssMaxMiB'))
  const fl = get(files.footprint, 'load', 'ferry', 'rss')
  const footLoad = fl ? `footprint.json: median ${f(num(get(fl, 'median')))}, max ${f(num(get(fl, 'max')))} MiB` : ''
  const loadOk = Number.isFinite(rssLoad) ? rssLoad <= 100 : fl ? num(get(fl, 'max')) <= 100 : undefined
  out.push(
    evalRow(
      'RSS ≤ 100 MiB under max load',
      [Number.isFinite(rssLoad) ? `max ${f(rssLoad)} MiB over the sustained max load (throughput.json)` : '', footLoad].filter(Boolean).join('; ') || '–',
      loadOk,
      Number.isFinite(rssLoad) ? sourceOf(files, T) : sourceOf(files, 'footprint'),
    ),
  )
  const conn = arr(get(files.footprint, 'connections'))
  const c10k = conn.find((x) => str(get(x, 'target')) === 'ferry' && num(get(x, 'devices')) === 10_000)
  out.push(evalRow('RSS ≤ 150 MiB with 10,000 devices connected', c10k ? `${f(num(get(c10k, 'rssMiB')))} MiB (${f(num(get(c10k, 'kibPerConnection')))} KiB per connection)` : '–', c10k ? num(get(c10k, 'rssMiB')) <= 150 : undefined, sourceOf(files, 'footprint')))
  // During a 1M backlog: the highest RSS while it grows stays within 1.2× the RSS once 10 % of it was buffered (drain.json).
  const rb = get(fd, 'rssBacklogMiB')
  const at10 = num(get(rb, 'at10pct'))
  const max = num(get(rb, 'max'))
  const msgs = num(get(fd, 'acked'))
  out.push(
    evalRow(
      'RSS during a 1M-message backlog ≤ 1.2× RSS at 10 % of it',
      Number.isFinite(at10) ? `${f(at10)} MiB at 10 %, max ${f(max)} MiB (${ratio(max, at10)}) over ${f(msgs)} messages${msgs < 1e6 ? ' — fewer than 1M' : ''}` : '–',
      Number.isFinite(at10) && msgs >= 1e6 ? max <= 1.2 * at10 : undefined,
      sourceOf(files, 'drain'),
    ),
  )

  const rows = arr(get(files.compactness, 'rows'))
  const natsRow = rows.find((r) => /nats/i.test(str(get(r, 'target'))))
  const ferryRow = rows.find((r) => /ferry/i.test(str(get(r, 'target'))) && /default/i.test(str(get(r, 'target')))) ?? rows.find((r) => /ferry/i.test(str(get(r, 'target'))) && !/off/i.test(str(get(r, 'target'))))
  const fb = num(get(ferryRow, 'storedBytesPerMsg'))
  const nb = num(get(natsRow, 'storedBytesPerMsg'))
  // The best form Ferry offers for this telemetry (CBOR, --uplink-headers compact) is what the target is judged on; the default is shown beside it.
  const compactRow = rows.find((r) => /compact/i.test(str(get(r, 'target'))) && !/off/i.test(str(get(r, 'target'))))
  const cb = num(get(compactRow, 'storedBytesPerMsg'))
  const bestBytes = compactRow ? cb : fb
  const bytesText = ferryRow && natsRow
    ? `${compactRow ? `${f(cb)} vs ${f(nb)} B/msg (${ratio(cb, nb)}; ${str(get(compactRow, 'target'))}); default headers ${f(fb)} B/msg (${ratio(fb, nb)})` : `${f(fb)} vs ${f(nb)} B/msg (${ratio(fb, nb)}; ${str(get(ferryRow, 'target'))})`}`
    : '–'
  out.push(evalRow("Bytes stored per message ≤ NATS's listener's", bytesText, ferryRow && natsRow ? bestBytes <= nb : undefined, sourceOf(files, 'compactness')))

  const c = obj(get(files.crash, 'summary'))
  const lost = num(c.lost)
  const dup = num(c.duplicateCopies ?? c.duplicates)
  const rounds = num(get(files.crash, 'rounds'))
  out.push(
    evalRow(
      'Crash run: 0 lost, 0 duplicates over 5 kills (-9 under load)',
      Number.isFinite(lost) ? `${f(lost)} lost, ${f(dup)} duplicate copies of ${f(num(c.acknowledged))} acknowledged, ${f(rounds)} kills` : '–',
      Number.isFinite(lost) ? lost === 0 && dup === 0 && rounds >= 5 : undefined,
      sourceOf(files, 'crash'),
    ),
  )
  return out
}

function evaluateTargets(ctx: Ctx): void {
  for (const t of issue14Targets(ctx.files)) targetRow(ctx, t.target, t.measured, t.verdict === 'not measured' ? undefined : t.verdict === 'met')
}

/** Result files of the "before" measurement (bench/baseline/): the same benchmarks on the commit before issue 14. */
const BASELINE_DIR = path.join(ROOT, 'bench', 'baseline')

function readResults(dir: string): Record<string, Json> {
  const files: Record<string, Json> = {}
  const names = fs.existsSync(dir) ? fs.readdirSync(dir).filter((n) => n.endsWith('.json')) : []
  names.sort((a, b) => (ORDER.indexOf(a.slice(0, -5)) + 1 || 99) - (ORDER.indexOf(b.slice(0, -5)) + 1 || 99) || a.localeCompare(b))
  for (const n of names) {
    try {
      files[n.slice(0, -5)] = JSON.parse(fs.readFileSync(path.join(dir, n), 'utf8'))
    } catch (err) {
      process.stderr.write(`skipping ${n}: ${(err as Error).message}\n`)
    }
  }
  return files
}

/** Before / after of every target: bench/baseline/*.json (before) against bench/results/*.json (after), each with its commit. */
function beforeAfterSection(ctx: Ctx): string {
  const before = readResults(BASELINE_DIR)
  if (!Object.keys(before).length) return '## Before and after\n\nNo `bench/baseline/*.json`: nothing to compare with.\n'
  const b = issue14Targets(before)
  const a = issue14Targets(ctx.files)
  const readme = fs.existsSync(path.join(BASELINE_DIR, 'README.md')) ? fs.readFileSync(path.join(BASELINE_DIR, 'README.md'), 'utf8').trim() : ''
  const verdict = (v: TargetEval['verdict']): string => (v === 'met' ? 'met' : v === 'missed' ? 'missed' : '–')
  const rows: string[][] = [['target', 'before', 'before: commit, runtime', 'after', 'after: commit, runtime']]
  a.forEach((t, i) => {
    const p = b[i]
    rows.push([t.target, p ? `${p.measured} (${verdict(p.verdict)})` : '–', p?.source ?? '–', `${t.measured} (${verdict(t.verdict)})`, t.source])
  })
  // Throughput, cold and steady, before and after.
  const figs: [string, string][] = [
    ['in JetStream msg/s', 'arrivedPerS'],
    ['acked msg/s', 'ackedPerS'],
    ['gateway CPU µs/msg', 'gatewayCpuMsPer1k'],
    ['PUBACK p99 ms', 'pubackP99'],
    ['device→JetStream p99 ms', 'e2eP99'],
    ['RSS max MiB', 'rssMaxMiB'],
  ]
  const thrRows: string[][] = [['target, load, phase', ...figs.map(([l]) => `${l} before → after`)]]
  for (const target of ['ferry', 'ferry-batch', 'nats-mqtt'])
    for (const mode of ['max', '5k/s'] as const)
      for (const phase of ['cold', 'steady'] as const) {
        const x = thr(before, target, mode, phase)
        const y = thr(ctx.files, target, mode, phase)
        if (!x && !y) continue
        thrRows.push([`${target} ${mode} ${phase}`, ...figs.map(([, k]) => `${f(num(get(x, k)))} → ${f(num(get(y, k)))}`)])
      }
  return ['## Before and after', '', readme, '', table(rows), '', `Throughput figures (before: ${sourceOf(before, 'throughput')}; after: ${sourceOf(ctx.files, 'throughput')}):`, '', table(thrRows), ''].join('\n')
}

// ---------- main ----------

function environmentSection(ctx: Ctx): string {
  const rows: string[][] = [['result', 'date', 'git', 'Node', 'nats-server', 'mosquitto', 'CPU', 'cores', 'memory']]
  for (const [name, d] of Object.entries(ctx.files)) {
    const e = obj(get(d, 'environment'))
    rows.push([`${name}.json`, str(e.date).replace('T', ' ').slice(0, 19), str(e.gitSha), str(e.node), str(e.natsServer).replace('nats-server: ', ''), str(get(d, 'peers', 'mosquitto')).replace('mosquitto ', '') || '–', str(e.cpu), str(e.cores), e.memGiB !== undefined ? `${str(e.memGiB)} GiB` : ''])
  }
  const shas = new Set(Object.values(ctx.files).map((d) => str(get(d, 'environment', 'gitSha'))))
  const out = ['## Machine and versions', '', table(rows), '']
  if (shas.size > 1) out.push(`Note: the results come from ${shas.size} different commits (${[...shas].join(', ')}).`, '')
  out.push('The load generator (firmware-sim, in the benchmark process), the edge broker and nats-server run on the same machine and share its cores; every figure includes that contention. Compare ratios measured in the same run rather than absolute numbers across machines.', '')
  out.push('## Commands', '', '```sh', 'npm run build', ...Object.entries(ctx.files).map(([name, d]) => str(get(d, 'command')) || `${DEFAULT_COMMANDS[name] ?? `npx tsx bench/${name}.ts`}   # default options (this result file does not record its command)`), 'npx tsx bench/report.ts', '```', '')
  return out.join('\n')
}

export async function main(): Promise<void> {
  const files: Record<string, Json> = {}
  const names = fs.existsSync(RESULTS_DIR) ? fs.readdirSync(RESULTS_DIR).filter((n) => n.endsWith('.json')) : []
  names.sort((a, b) => (ORDER.indexOf(a.slice(0, -5)) + 1 || 99) - (ORDER.indexOf(b.slice(0, -5)) + 1 || 99) || a.localeCompare(b))
  for (const n of names) {
    try {
      files[n.slice(0, -5)] = JSON.parse(fs.readFileSync(path.join(RESULTS_DIR, n), 'utf8'))
    } catch (err) {
      process.stderr.write(`skipping ${n}: ${(err as Error).message}\n`)
    }
  }
  const ctx: Ctx = { files, charts: {}, targets: [] }
  evaluateTargets(ctx)
  const known = new Set(ORDER)
  const sections = [throughputSection(ctx), drainSection(ctx), prioritySection(ctx), crashSection(ctx), compactnessSection(ctx), footprintSection(ctx), startupSection(ctx), downlinkSection(ctx), fleetSection(ctx), microSection(ctx)]
  for (const [name, d] of Object.entries(files)) if (!known.has(name)) sections.push(`## ${name}\n\n${generic(d)}\n`)
  const targets = table([['target (issue 14)', 'measured', 'verdict'], ...ctx.targets.map((t) => [t.target, t.measured, t.verdict === 'met' ? '**met**' : t.verdict === 'missed' ? '**missed**' : 'not measured'])])
  const md = [
    '# Benchmark results',
    '',
    `Generated by \`npx tsx bench/report.ts\` from \`bench/results/*.json\` (${names.length ? names.join(', ') : 'none found'}); do not edit by hand. What each benchmark measures: \`bench/README.md\`.`,
    '',
    '## Targets',
    '',
    targets,
    '',
    beforeAfterSection(ctx),
    environmentSection(ctx),
    ...sections,
  ].join('\n')
  fs.mkdirSync(CHART_DIR, { recursive: true })
  for (const [file, svg] of Object.entries(ctx.charts)) fs.writeFileSync(path.join(CHART_DIR, file), svg)
  fs.writeFileSync(OUT, md.replace(/\n{3,}/g, '\n\n'))
  process.stdout.write(`wrote ${path.relative(ROOT, OUT)} and ${Object.keys(ctx.charts).length} chart(s) in ${path.relative(ROOT, CHART_DIR)}/\n`)
  for (const t of ctx.targets) process.stdout.write(`${t.verdict.padEnd(12)} ${t.target}: ${t.measured}\n`)
}

runIfMain(import.meta.url, main)
