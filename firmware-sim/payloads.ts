// Device payloads of the four profiles, and the FSIM header that makes binary payloads identifiable upstream.
//
// Every payload names its device and seq, so `firmware-sim verify` can match what arrived in JetStream against the
// ack ledger: JSON payloads have "device" and "seq" fields; binary payloads start with the FSIM header:
//
// | offset | size | field |
// |---|---|---|
// | 0 | 4 | magic `FSIM` |
// | 4 | 2 | n: length of the device id in bytes (u16, little-endian) |
// | 6 | n | device id, UTF-8 |
// | 6+n | 4 | seq (u32, little-endian) |
// | 10+n | 4 | CRC-32/IEEE of the body (u32, little-endian) |
// | 14+n | … | body |
//
// 'F' (0x46) cannot start a JSON text, so the gateway always forwards these unchanged (application/octet-stream).
import { randomBytes } from 'node:crypto'
import { crc32 } from 'node:zlib'
import { randomExp, randomInt, type Rng } from './random.js'

/** The kinds of simulated device. */
export type ProfileName = 'telemetry' | 'alarm' | 'binary' | 'large'

/** Every profile, in the order used for weights and reports. */
export const PROFILE_NAMES: readonly ProfileName[] = ['telemetry', 'alarm', 'binary', 'large']

/** Relative weights of profiles in a fleet, e.g. `{telemetry: 80, alarm: 10, binary: 5, large: 5}`. */
export type ProfileWeights = Partial<Record<ProfileName, number>>

/** Magic bytes at the start of every binary payload. */
export const FSIM_MAGIC = Buffer.from('FSIM', 'latin1')

/** A binary payload's identity, as read from its FSIM header. */
export interface FsimHeader {
  readonly device: string
  readonly seq: number
  /** Whether the body's CRC-32 matches the header (false: the payload was changed on the way). */
  readonly intact: boolean
}

/** Builds `FSIM | idLen | id | seq | crc32(body) | body`. */
export function encodeFsim(device: string, seq: number, body: Uint8Array): Buffer {
  const id = Buffer.from(device, 'utf8')
  if (id.length > 0xffff) throw new RangeError(`device id too long for the FSIM header: ${id.length} bytes`)
  const out = Buffer.allocUnsafe(14 + id.length + body.length)
  FSIM_MAGIC.copy(out, 0)
  out.writeUInt16LE(id.length, 4)
  id.copy(out, 6)
  out.writeUInt32LE(seq >>> 0, 6 + id.length)
  out.writeUInt32LE(crc32(body), 10 + id.length)
  out.set(body, 14 + id.length)
  return out
}

/** Reads the FSIM header; undefined when `data` does not start with one. */
export function decodeFsim(data: Uint8Array): FsimHeader | undefined {
  if (data.length < 14 || data[0] !== 0x46 || data[1] !== 0x53 || data[2] !== 0x49 || data[3] !== 0x4d) return undefined
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength)
  const n = buf.readUInt16LE(4)
  if (data.length < 14 + n) return undefined
  const device = buf.toString('utf8', 6, 6 + n)
  const seq = buf.readUInt32LE(6 + n)
  const crc = buf.readUInt32LE(10 + n)
  return { device, seq, intact: crc32(buf.subarray(14 + n)) === crc }
}

/**
 * Assigns a profile to each of `n` devices in proportion to `weights`, deterministically and evenly interleaved
 * (smooth weighted round robin): 80/10/5/5 over 20 devices gives exactly 16/2/1/1.
 */
export function assignProfiles(weights: ProfileWeights, n: number): ProfileName[] {
  const entries = PROFILE_NAMES.map((p) => [p, weights[p] ?? 0] as const).filter(([, w]) => w > 0)
  const total = entries.reduce((s, [, w]) => s + w, 0)
  if (entries.length === 0 || !(total > 0)) throw new RangeError('profile weights must have a positive total')
  const current = entries.map(() => 0)
  const out: ProfileName[] = []
  for (let i = 0; i < n; i++) {
    let best = 0
    for (let k = 0; k < entries.length; k++) {
      current[k] = (current[k] ?? 0) + (entries[k]?.[1] ?? 0)
      if ((current[k] ?? 0) > (current[best] ?? 0)) best = k
    }
    current[best] = (current[best] ?? 0) - total
    out.push(entries[best]?.[0] ?? 'telemetry')
  }
  return out
}

/** Drifting sensor state of one telemetry device (a random walk around a per-device baseline). */
export interface Sensors {
  temp: number
  tempBase: number
  hum: number
  humBase: number
  bat: number
  rssiBase: number
  lat: number
  lon: number
  bootedAt: number
}

export function initialSensors(rng: Rng): Sensors {
  const tempBase = 18 + rng() * 8
  const humBase = 35 + rng() * 25
  return {
    temp: tempBase + (rng() - 0.5),
    tempBase,
    hum: humBase + (rng() - 0.5) * 4,
    humBase,
    bat: 3.75 + rng() * 0.4,
    rssiBase: -55 - rng() * 30,
    lat: 47 + rng() * 8,
    lon: 5 + rng() * 10,
    bootedAt: Date.now() - Math.floor(rng() * 86_400_000),
  }
}

function round(v: number, digits: number): number {
  const f = 10 ** digits
  return Math.round(v * f) / f
}

function clamp(v: number, lo: number, hi: number): number {
  return v < lo ? lo : v > hi ? hi : v
}

const FIRMWARE_VERSIONS = ['2.4.1', '2.4.3', '2.5.0-rc1'] as const

/**
 * Periodic telemetry. `rich` (the `telemetry` profile): numbers, integers, booleans, strings, a nested object and
 * small arrays, ~250 bytes. Not rich (the default of a fleet started without `profiles`): the original eight
 * fields, ~130 bytes, kept so that benchmark figures stay comparable. With `padBytes` a `"pad"` string field brings
 * the text to about that many bytes (never shorter than the unpadded text).
 */
export function telemetryPayload(s: Sensors, device: string, seq: number, rng: Rng, padBytes: number | undefined, rich: boolean): string {
  s.temp += (s.tempBase - s.temp) * 0.02 + (rng() - 0.5) * 0.2
  s.hum = clamp(s.hum + (s.humBase - s.hum) * 0.02 + (rng() - 0.5) * 0.6, 0, 100)
  s.bat -= 0.00002 + rng() * 0.00003
  if (s.bat < 3.3) s.bat = 4.15 // "recharged"
  const bat = s.bat + (rng() - 0.5) * 0.01
  const rssi = Math.round(s.rssiBase + (rng() - 0.5) * 8)
  const status = bat < 3.45 ? 'low_battery' : s.temp > 40 ? 'overheat' : 'ok'
  const now = Date.now()
  const json = rich
    ? JSON.stringify({
        device,
        seq,
        ts: now,
        fw: FIRMWARE_VERSIONS[seq % FIRMWARE_VERSIONS.length],
        uptime_s: Math.floor((now - s.bootedAt) / 1000),
        temp: round(s.temp, 2),
        hum: round(s.hum, 1),
        bat: round(bat, 2),
        rssi,
        status,
        charging: s.bat > 4.1,
        door_open: rng() < 0.05,
        gps: { lat: round(s.lat + (rng() - 0.5) * 1e-4, 5), lon: round(s.lon + (rng() - 0.5) * 1e-4, 5), fix: rng() < 0.9 ? 3 : 2 },
        errors: rng() < 0.02 ? ['E_SENSOR_TIMEOUT'] : [],
        accel: [randomInt(rng, -20, 20), randomInt(rng, -20, 20), randomInt(rng, 990, 1010)],
      })
    : JSON.stringify({ device, seq, ts: now, temp: round(s.temp, 2), hum: round(s.hum, 1), bat: round(bat, 2), rssi, status })
  if (padBytes === undefined) return json
  const padLen = padBytes - json.length - ',"pad":""'.length
  if (padLen < 0) return json
  return `${json.slice(0, -1)},"pad":"${'x'.repeat(padLen)}"}`
}

/** Progress of one device through its current alarm burst. */
export interface BurstState {
  /** Burst number on this device (1, 2, …). */
  id: number
  /** Messages of the burst already produced. */
  index: number
  /** Messages in this burst. */
  size: number
}

const ALARM_CODES = [
  ['E_OVERTEMP', 3],
  ['E_DOOR_FORCED', 2],
  ['E_TAMPER', 3],
  ['W_LOW_BATTERY', 1],
  ['W_SIGNAL_LOST', 1],
] as const

/** One message of an alarm burst: the alarm (nested), where it is in its burst, and whether it is still active. */
export function alarmPayload(device: string, seq: number, burst: BurstState, rng: Rng): string {
  const [code, severity] = ALARM_CODES[(burst.id * 7 + device.length) % ALARM_CODES.length] ?? ALARM_CODES[0]
  return JSON.stringify({
    device,
    seq,
    ts: Date.now(),
    alarm: { code, severity, value: round(40 + rng() * 50, 1), acked: false },
    burst: { id: burst.id, index: burst.index, size: burst.size },
    active: burst.index + 1 < burst.size,
  })
}

/** Shortest and longest alarm burst, in messages. */
export const ALARM_BURST_MIN = 3
export const ALARM_BURST_MAX = 12
/** Gap between the messages of one burst, ms (before jitter). */
export const ALARM_BURST_GAP_MS = 50
const ALARM_BURST_MEAN = (ALARM_BURST_MIN + ALARM_BURST_MAX) / 2

/** Size of the next burst. */
export function alarmBurstSize(rng: Rng): number {
  return randomInt(rng, ALARM_BURST_MIN, ALARM_BURST_MAX)
}

/**
 * Quiet time before the next burst, so that a device's long-run average is `ratePerSec` messages per second:
 * bursts start as a Poisson process with mean gap (mean burst size / rate) minus the time a burst takes.
 */
export function alarmQuietMs(rng: Rng, ratePerSec: number): number {
  const cycleMs = (ALARM_BURST_MEAN * 1000) / ratePerSec
  const mean = Math.max(ALARM_BURST_GAP_MS, cycleMs - (ALARM_BURST_MEAN - 1) * ALARM_BURST_GAP_MS)
  return randomExp(rng, mean)
}

// Bodies are slices of one shared random pool: no per-message random generation, no per-device buffers.
const POOL_BYTES = 1024 * 1024
let pool: Buffer | undefined
function bodyPool(): Buffer {
  pool ??= randomBytes(POOL_BYTES)
  return pool
}

/** A compact binary reading: FSIM header, then a small frame of int16 samples (about 40–300 bytes). */
export function binaryPayload(device: string, seq: number, rng: Rng): Buffer {
  const samples = randomInt(rng, 12, 140)
  const body = Buffer.allocUnsafe(4 + samples * 2)
  body.writeUInt16LE(samples, 0)
  body.writeUInt16LE(randomInt(rng, 100, 8000), 2) // sample rate, Hz
  let v = randomInt(rng, -2000, 2000)
  for (let i = 0; i < samples; i++) {
    v = clamp(v + randomInt(rng, -300, 300), -32768, 32767)
    body.writeInt16LE(v, 4 + i * 2)
  }
  return encodeFsim(device, seq, body)
}

/** Largest payload `largePayload` makes, bytes. */
export const MAX_LARGE_BYTES = POOL_BYTES

/** Default size range of large payloads, bytes. */
export const DEFAULT_LARGE_BYTES: readonly [number, number] = [8 * 1024, 64 * 1024]

/** A large binary upload (a log chunk, an image tile): FSIM header, then `min..max` bytes in total. */
export function largePayload(device: string, seq: number, rng: Rng, minBytes: number, maxBytes: number): Buffer {
  const total = randomInt(rng, minBytes, maxBytes)
  const headerBytes = 14 + Buffer.byteLength(device, 'utf8')
  const bodyLen = Math.max(0, Math.min(total - headerBytes, POOL_BYTES))
  const p = bodyPool()
  const at = randomInt(rng, 0, POOL_BYTES - bodyLen)
  return encodeFsim(device, seq, p.subarray(at, at + bodyLen))
}
