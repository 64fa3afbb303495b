// --drain-max-rate: one token bucket for the whole uplink, shared by the forwarders of every class.
//
// Two measures, each capped on its own (0 = no cap on it): messages per second, and payload bytes per
// second (the message's data as published; not the subject, headers, NATS protocol or TLS overhead). Burst: one second's worth (at least one message), so a
// drain that starts after a quiet time sends at most about one second's worth at once.
//
// Who waits: the main reader of a paced forwarder (classes normal and low; their resends after a
// reconnect or refusal too, except the single probe) waits until the bucket holds a chunk's worth
// (`allowance`, `waitMs`), then takes at most that much. Who does not: the live lane and unpaced
// forwarders (class high) send at once but are debited (`debit`), so the link total stays near the
// cap and the backlog yields to them. The debit may take the bucket below zero: a paced record larger
// than what is left owes all of it (the sender waits it off, so even records larger than a burst drain
// at the cap); unpaced traffic takes it down to one burst of debt at most, so the backlog then waits
// that much longer. Unpaced traffic alone above the cap is not held back (the cap then is not kept); the
// backlog waits for as long as it lasts.
//
// Pure apart from the clock (injectable): the forwarder does the waiting (forwarder.ts).

/** The cap, as parsed from --drain-max-rate (0 = no cap on that measure). */
export interface DrainRate {
  readonly messagesPerSecond: number
  readonly bytesPerSecond: number
}

/** What a paced sender may take now. */
export interface DrainAllowance {
  /** Records (0: wait, see waitMs; Infinity: no message cap). */
  readonly messages: number
  /** About this many payload bytes (the last record may go past it; Infinity: no byte cap). */
  readonly bytes: number
}

/** A paced sender waits until at least this share of a second's worth has come (fewer, larger steps). */
const CHUNK_SECONDS = 1 / 50
/** Most records a paced sender waits for per step. */
const MAX_CHUNK_RECORDS = 16
/** Longest single wait waitMs() gives. */
const MAX_WAIT_MS = 60_000

export class DrainPacer {
  readonly messagesPerSecond: number
  readonly bytesPerSecond: number
  private readonly msgBurst: number
  private readonly byteBurst: number
  /** Tokens a paced sender waits for before it takes a step. */
  private readonly msgChunk: number
  private readonly byteChunk: number
  private msgTokens: number
  private byteTokens: number
  private lastMs: number
  /** Messages and payload bytes debited (decayed), for averagePayloadBytes. */
  private debitedMessages = 0
  private debitedBytes = 0

  /** `now`: a monotonic clock in ms (performance.now by default). */
  constructor(
    rate: DrainRate,
    private readonly now: () => number = () => performance.now(),
  ) {
    for (const [k, v] of Object.entries(rate)) {
      if (!(Number.isFinite(v) && v >= 0)) throw new RangeError(`drain rate ${k} must be a finite number >= 0, got ${String(v)}`)
    }
    this.messagesPerSecond = rate.messagesPerSecond
    this.bytesPerSecond = rate.bytesPerSecond
    this.msgBurst = Math.max(1, this.messagesPerSecond)
    this.byteBurst = Math.max(1, this.bytesPerSecond)
    this.msgChunk = Math.max(1, Math.min(MAX_CHUNK_RECORDS, Math.floor(this.messagesPerSecond * CHUNK_SECONDS)))
    this.byteChunk = Math.max(1, Math.floor(this.bytesPerSecond * CHUNK_SECONDS))
    this.msgTokens = this.msgBurst
    this.byteTokens = this.byteBurst
    this.lastMs = now()
  }

  /** True when neither measure is capped (then nobody ever waits). */
  get unlimited(): boolean {
    return this.messagesPerSecond === 0 && this.bytesPerSecond === 0
  }

  /**
   * The drain rate in messages per second the cap allows for messages of `avgBytesPerMessage` payload
   * bytes: the smaller of the two caps; Infinity when nothing is capped. For health's
   * drain estimate.
   */
  capMessagesPerSecond(avgBytesPerMessage: number): number {
    const byMessages = this.messagesPerSecond > 0 ? this.messagesPerSecond : Infinity
    const byBytes = this.bytesPerSecond > 0 && avgBytesPerMessage > 0 ? this.bytesPerSecond / avgBytesPerMessage : Infinity
    return Math.min(byMessages, byBytes)
  }

  private refill(): void {
    const t = this.now()
    const dt = (t - this.lastMs) / 1000
    if (dt <= 0) return
    this.lastMs = t
    if (this.messagesPerSecond > 0) this.msgTokens = Math.min(this.msgBurst, this.msgTokens + dt * this.messagesPerSecond)
    if (this.bytesPerSecond > 0) this.byteTokens = Math.min(this.byteBurst, this.byteTokens + dt * this.bytesPerSecond)
  }

  /** What a paced sender may take now: nothing (messages 0) until a chunk's worth has come on every capped measure. */
  allowance(): DrainAllowance {
    if (this.unlimited) return { messages: Infinity, bytes: Infinity }
    this.refill()
    const msgCapped = this.messagesPerSecond > 0
    const byteCapped = this.bytesPerSecond > 0
    if ((msgCapped && this.msgTokens < this.msgChunk) || (byteCapped && this.byteTokens < this.byteChunk)) return { messages: 0, bytes: 0 }
    return { messages: msgCapped ? Math.floor(this.msgTokens) : Infinity, bytes: byteCapped ? Math.floor(this.byteTokens) : Infinity }
  }

  /** Milliseconds until allowance() gives something (0: now). */
  waitMs(): number {
    if (this.unlimited) return 0
    this.refill()
    let s = 0
    if (this.messagesPerSecond > 0 && this.msgTokens < this.msgChunk) s = Math.max(s, (this.msgChunk - this.msgTokens) / this.messagesPerSecond)
    if (this.bytesPerSecond > 0 && this.byteTokens < this.byteChunk) s = Math.max(s, (this.byteChunk - this.byteTokens) / this.bytesPerSecond)
    // At most MAX_WAIT_MS (the caller asks again): a paced debt may be hours at a tiny cap, and a timer above 2^31-1 ms fires at once.
    return s === 0 ? 0 : Math.min(MAX_WAIT_MS, Math.max(1, Math.ceil(s * 1000)))
  }

  /**
   * Payload bytes per message of what went recently (0 before anything went): the measure a byte cap
   * counts, for capMessagesPerSecond (a record in the log is larger: topic, envelope, framing).
   */
  get averagePayloadBytes(): number {
    return this.debitedMessages > 0 ? this.debitedBytes / this.debitedMessages : 0
  }

  /**
   * `messages` records of `bytes` payload bytes went: taken from the bucket. Unpaced traffic (live lane,
   * probe, class high) takes it down to one burst of debt at most; a paced sender (`paced`: it took
   * what allowance() gave) owes all of it, so records larger than a burst still drain at the cap.
   */
  debit(messages: number, bytes: number, paced = false): void {
    if (this.unlimited || (messages <= 0 && bytes <= 0)) return
    if (messages > 0) {
      // A recent average: the older half is let go every 10,000 messages.
      if (this.debitedMessages > 10_000) {
        this.debitedMessages /= 2
        this.debitedBytes /= 2
      }
      this.debitedMessages += messages
      this.debitedBytes += Math.max(0, bytes)
    }
    this.refill()
    // The floor of an unpaced debit never lifts a debt already deeper (a paced sender's).
    if (this.messagesPerSecond > 0) this.msgTokens = paced ? this.msgTokens - messages : Math.max(Math.min(this.msgTokens, -this.msgBurst), this.msgTokens - messages)
    if (this.bytesPerSecond > 0) this.byteTokens = paced ? this.byteTokens - bytes : Math.max(Math.min(this.byteTokens, -this.byteBurst), this.byteTokens - bytes)
  }
}
