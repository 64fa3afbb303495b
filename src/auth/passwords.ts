// The credentials file: one device per line, `device:$scrypt$ln=14,r=8,p=1$<salt>$<hash>` (base64).
//
// Passwords are hashed with scrypt (node:crypto) and a random 16-byte salt; the file never holds
// them in plain text. Verification takes the same work whether the device is unknown or the
// password wrong: an unknown device is checked against a dummy hash. Hashing runs on libuv's
// thread pool, which the ring log's fdatasync shares, so at most HASH_CONCURRENCY hashes run at once
// and a storm of logins queues here instead of in front of the fsyncs. A password that verified
// once is remembered as an HMAC under a key that lives only in this process, so a reconnect storm
// of known devices costs microseconds per login, not a hash each; failures are never remembered.
import crypto from 'node:crypto'
import fs from 'node:fs'
import { FerryError } from '../errors.js'
import { readGuardedFile } from './file-mode.js'

const SALT_BYTES = 16
const KEY_BYTES = 32
/** scrypt cost: N = 2^14, r = 8, p = 1 (16 MiB of memory per hash, ~20-50 ms on a small CPU). */
export const DEFAULT_COST = { ln: 14, r: 8, p: 1 } as const
/** Memory scrypt may use for one hash. */
const SCRYPT_MAXMEM = 256 * 1024 * 1024
/** Hashes running at once (libuv's pool has 4 threads; the log's fdatasync needs one). */
const HASH_CONCURRENCY = 1
/** Logins waiting for a hash beyond this are refused at once ("server unavailable"). */
export const MAX_WAITING_HASHES = 256

interface Cost {
  readonly ln: number
  readonly r: number
  readonly p: number
}

interface Entry {
  readonly cost: Cost
  readonly salt: Buffer
  readonly hash: Buffer
}

const LINE = /^\$scrypt\$ln=(\d{1,2}),r=(\d{1,2}),p=(\d{1,2})\$([A-Za-z0-9+/=]+)\$([A-Za-z0-9+/=]+)$/
/** Device names: anything printable except ":" (the separator). */
const DEVICE = /^[^:\x00-\x1f\x7f]{1,255}$/

function scrypt(password: Buffer, salt: Buffer, cost: Cost): Promise<Buffer> {
  return new Promise((resolve, reject) =>
    crypto.scrypt(password, salt, KEY_BYTES, { N: 2 ** cost.ln, r: cost.r, p: cost.p, maxmem: SCRYPT_MAXMEM }, (err, key) => (err ? reject(err) : resolve(key))),
  )
}

/** Hashes a password into the file's format. */
export async function hashPassword(password: string, cost: Cost = DEFAULT_COST): Promise<string> {
  const salt = crypto.randomBytes(SALT_BYTES)
  const hash = await scrypt(Buffer.from(password, 'utf8'), salt, cost)
  return `$scrypt$ln=${cost.ln},r=${cost.r},p=${cost.p}$${salt.toString('base64')}$${hash.toString('base64')}`
}

/** Why a device name cannot be stored, or undefined. */
export function deviceNameProblem(device: string): string | undefined {
  return DEVICE.test(device) ? undefined : `device name ${JSON.stringify(device)} must be 1-255 characters without ":" or control characters`
}

/** Parses a credentials file's text; throws FERRY_ERR_AUTH_FILE naming the line of every problem. */
export function parsePasswordFile(text: string, file: string): Map<string, Entry> {
  const out = new Map<string, Entry>()
  const problems: string[] = []
  text.split('\n').forEach((raw, i) => {
    const line = raw.trim()
    if (line === '' || line.startsWith('#')) return
    const colon = line.indexOf(':')
    const device = line.slice(0, colon)
    const m = LINE.exec(line.slice(colon + 1))
    if (colon <= 0 || !m || deviceNameProblem(device)) {
      problems.push(`line ${i + 1}: expected "device:$scrypt$ln=N,r=R,p=P$salt$hash" (write entries with 'ferry passwd ${file} DEVICE')`)
      return
    }
    const cost = { ln: Number(m[1]), r: Number(m[2]), p: Number(m[3]) }
    // scrypt needs about 128 * N * r bytes; more than SCRYPT_MAXMEM would fail at every login.
    if (cost.ln < 10 || cost.ln > 20 || cost.r < 1 || cost.p < 1 || cost.p > 4 || 128 * 2 ** cost.ln * cost.r > SCRYPT_MAXMEM / 2) {
      problems.push(`line ${i + 1}: scrypt cost ln=${cost.ln},r=${cost.r},p=${cost.p} out of range (ln 10-20, r >= 1, p 1-4, 128 * 2^ln * r at most ${SCRYPT_MAXMEM / 2 / 2 ** 20} MiB)`)
      return
    }
    if (out.has(device)) problems.push(`line ${i + 1}: device ${JSON.stringify(device)} appears twice`)
    out.set(device, { cost, salt: Buffer.from(m[4]!, 'base64'), hash: Buffer.from(m[5]!, 'base64') })
  })
  if (problems.length > 0) throw new FerryError('FERRY_ERR_AUTH_FILE', `credentials file ${file}: ${problems.join('; ')}`)
  return out
}

/** Adds or replaces `device` in the credentials file (created with mode 0600), atomically. */
export async function setPassword(file: string, device: string, password: string): Promise<'added' | 'changed'> {
  const problem = deviceNameProblem(device)
  if (problem) throw new FerryError('FERRY_ERR_AUTH_FILE', problem)
  let text = ''
  try {
    text = fs.readFileSync(file, 'utf8')
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code !== 'ENOENT') throw new FerryError('FERRY_ERR_AUTH_FILE', `cannot read ${file}: ${(err as Error).message}`, { cause: err })
  }
  parsePasswordFile(text, file) // refuse to rewrite a file we cannot read back
  const line = `${device}:${await hashPassword(password)}`
  let found = false
  const lines = text.split('\n').filter((l, i, all) => !(i === all.length - 1 && l === ''))
  const next = lines.map((l) => {
    if (l.trim().startsWith(`${device}:`)) {
      found = true
      return line
    }
    return l
  })
  if (!found) next.push(line)
  const tmp = `${file}.tmp-${process.pid}`
  fs.writeFileSync(tmp, next.join('\n') + '\n', { mode: 0o600 })
  fs.renameSync(tmp, file)
  return found ? 'changed' : 'added'
}

/** Credentials loaded from a file, with bounded, serialised verification. */
export class Passwords {
  private running = 0
  private readonly waiting: (() => void)[] = []
  private readonly dummy: Entry
  private readonly verified = new Map<string, Buffer>()
  private readonly cacheKey = crypto.randomBytes(32)

  constructor(private readonly entries: Map<string, Entry>) {
    this.dummy = { cost: DEFAULT_COST, salt: crypto.randomBytes(SALT_BYTES), hash: crypto.randomBytes(KEY_BYTES) }
  }

  private mac(device: string, password: Buffer): Buffer {
    return crypto.createHmac('sha256', this.cacheKey).update(device).update('\0').update(password).digest()
  }

  /**
   * Reads and parses `file`; throws FERRY_ERR_AUTH_FILE when it cannot be read, is writable by group
   * or others, or has an invalid line. `warning` is set when others can read it (hashes, not passwords).
   */
  static load(file: string): Passwords {
    const { bytes, warning } = readGuardedFile(file, '--auth-file', 'FERRY_ERR_AUTH_FILE', true, `cannot read credentials file ${file} (--auth-file)`)
    const p = new Passwords(parsePasswordFile(bytes.toString('utf8'), file))
    p.warning = warning
    return p
  }

  /** Set when others can read the file: logged at start and reload, printed by `ferry check`. */
  warning: string | undefined

  get size(): number {
    return this.entries.size
  }

  /** What identifies the device's current entry (its salt and hash), or undefined when it has none. */
  fingerprint(device: string): string | undefined {
    const e = this.entries.get(device)
    return e && `${e.salt.toString('base64')}$${e.hash.toString('base64')}`
  }

  /** Logins waiting for the hasher. */
  get queued(): number {
    return this.waiting.length
  }

  /**
   * Whether `password` is the device's. Unknown devices cost the same hash as wrong passwords.
   * Resolves 'busy' without hashing when MAX_WAITING_HASHES logins already wait.
   */
  async verify(device: string, password: Buffer): Promise<boolean | 'busy'> {
    const seen = this.verified.get(device)
    if (seen && crypto.timingSafeEqual(seen, this.mac(device, password))) return true
    if (this.running >= HASH_CONCURRENCY && this.waiting.length >= MAX_WAITING_HASHES) return 'busy'
    const known = this.entries.get(device)
    const e = known ?? this.dummy
    if (this.running >= HASH_CONCURRENCY) await new Promise<void>((r) => this.waiting.push(r))
    this.running++
    try {
      const key = await scrypt(password, e.salt, e.cost)
      const ok = known !== undefined && key.length === e.hash.length && crypto.timingSafeEqual(key, e.hash)
      if (ok) this.verified.set(device, this.mac(device, password))
      return ok
    } finally {
      this.running--
      this.waiting.shift()?.()
    }
  }
}
