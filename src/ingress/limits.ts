// Limits in front of the MQTT core: connections (count and rate), TLS handshakes (in progress and rate) and the size of one MQTT packet.
//
// aedes 1.x buffers a packet until its announced remaining length has arrived, whatever that
// length: a PUBLISH announcing 200 MB makes it hold 200 MB. The frame check reads only the fixed
// headers of the byte stream (type byte and remaining length) as chunks arrive, before the parser
// sees them (aedes-seam.ts puts it in front of the parser), and says why as soon as a header
// announces more than the limit or a remaining length longer than 4 bytes (malformed).

/**
 * A checker for one connection's byte stream: call it with every chunk, in order; it returns why the
 * connection must be closed (then nothing of that chunk may be parsed), or undefined.
 */
export function frameCheck(maxPacketBytes: number): (buf: Buffer) => string | undefined {
  // 0: expecting a packet's first byte; 1: reading its remaining length; 2: skipping its body.
  let phase = 0
  let length = 0
  let multiplier = 1
  let lengthBytes = 0
  let remaining = 0
  return (buf: Buffer) => {
    for (let i = 0; i < buf.length; ) {
      if (phase === 2) {
        const skip = Math.min(remaining, buf.length - i)
        remaining -= skip
        i += skip
        if (remaining === 0) phase = 0
        continue
      }
      if (phase === 0) {
        phase = 1
        length = 0
        multiplier = 1
        lengthBytes = 0
        i++
        continue
      }
      const b = buf[i++]!
      length += (b & 0x7f) * multiplier
      multiplier *= 128
      lengthBytes++
      if (b & 0x80) {
        if (lengthBytes === 4) return 'remaining length longer than 4 bytes (malformed packet)'
        continue
      }
      const total = 1 + lengthBytes + length
      if (total > maxPacketBytes) return `packet of ${total} bytes announced; the limit is ${maxPacketBytes} (--max-packet-bytes)`
      remaining = length
      phase = remaining > 0 ? 2 : 0
    }
    return undefined
  }
}

/** A token bucket refilled at `rate` per second, holding at most `rate` tokens. */
class Bucket {
  private tokens: number
  private at: number

  constructor(
    private readonly rate: number,
    now: number,
  ) {
    this.tokens = rate
    this.at = now
  }

  take(now: number): boolean {
    this.tokens = Math.min(this.rate, this.tokens + ((now - this.at) / 1000) * this.rate)
    this.at = now
    if (this.tokens < 1) return false
    this.tokens--
    return true
  }

  full(now: number): boolean {
    return this.tokens + ((now - this.at) / 1000) * this.rate >= this.rate
  }

  /** Takes `n` more tokens, down to one second's worth of debt at most (so a penalty ends by itself). */
  charge(now: number, n: number): void {
    this.tokens = Math.max(-this.rate, Math.min(this.rate, this.tokens + ((now - this.at) / 1000) * this.rate) - n)
    this.at = now
  }
}

/** Most source addresses tracked at once (full buckets are forgotten first). */
const MAX_TRACKED_ADDRESSES = 100_000

/** Admission of new sockets: total open connections and new connections per second (all, and per address). */
export class ConnectionLimiter {
  private readonly total: Bucket
  private readonly perAddress = new Map<string, Bucket>()

  constructor(
    private readonly maxConnections: number,
    private readonly rate: number,
    private readonly ratePerAddress: number,
  ) {
    this.total = new Bucket(rate, performance.now())
  }

  /** Why a new socket from `address` must be closed now, or undefined to accept it. `open` counts it. */
  refuse(address: string, open: number): 'max_connections' | 'connection_rate' | 'connection_rate_per_address' | undefined {
    if (open > this.maxConnections) return 'max_connections'
    const now = performance.now()
    let b = this.perAddress.get(address)
    if (!b) {
      if (this.perAddress.size >= MAX_TRACKED_ADDRESSES) this.prune(now)
      b = new Bucket(this.ratePerAddress, now)
      this.perAddress.set(address, b)
    }
    if (!b.take(now)) return 'connection_rate_per_address'
    if (!this.total.take(now)) return 'connection_rate'
    return undefined
  }

  private prune(now: number): void {
    for (const [a, b] of this.perAddress) if (b.full(now)) this.perAddress.delete(a)
    // Still full of busy addresses: start over rather than grow (a flood from many addresses).
    if (this.perAddress.size >= MAX_TRACKED_ADDRESSES) this.perAddress.clear()
  }
}

/** Tokens a failed TLS handshake costs its address on top of the one its attempt took. */
export const FAILED_HANDSHAKE_COST = 4

/**
 * Admission of TLS handshakes, checked when the raw connection arrives (before the ClientHello is
 * read, so a refused one costs no key exchange): handshakes per second from one address, and
 * handshakes in progress. A failed handshake costs its address {@link FAILED_HANDSHAKE_COST} more
 * tokens. Beyond the in-progress bound the caller ends the oldest handshake rather than refusing
 * the newest: sockets that connect and stay silent then cannot hold every place for the length of
 * the handshake timeout, while an honest handshake (milliseconds) is rarely the oldest.
 */
export class HandshakeLimiter {
  private inProgress = 0
  private readonly perAddress = new Map<string, Bucket>()

  constructor(
    private readonly maxInProgress: number,
    private readonly ratePerAddress: number,
  ) {}

  /** 'tls_handshake_rate' when `address` is over its rate; otherwise the handshake started, and `done` must be called once when it ends. */
  refuse(address: string): 'tls_handshake_rate' | undefined {
    const now = performance.now()
    if (!this.bucket(address, now).take(now)) return 'tls_handshake_rate'
    this.inProgress++
    return undefined
  }

  /** Whether more handshakes are in progress than allowed: the caller ends the oldest ones. */
  get over(): boolean {
    return this.inProgress > this.maxInProgress
  }

  /** A handshake admitted by {@link refuse} ended (completed, failed or its socket closed). */
  done(): void {
    this.inProgress--
  }

  /** A handshake from `address` failed: its address pays more for the next ones. */
  failed(address: string): void {
    const now = performance.now()
    this.bucket(address, now).charge(now, FAILED_HANDSHAKE_COST)
  }

  private bucket(address: string, now: number): Bucket {
    let b = this.perAddress.get(address)
    if (!b) {
      if (this.perAddress.size >= MAX_TRACKED_ADDRESSES) {
        for (const [a, x] of this.perAddress) if (x.full(now)) this.perAddress.delete(a)
        if (this.perAddress.size >= MAX_TRACKED_ADDRESSES) this.perAddress.clear()
      }
      b = new Bucket(this.ratePerAddress, now)
      this.perAddress.set(address, b)
    }
    return b
  }
}
