// Fair shares (--device-max-bytes): per device, the bytes of its records not yet acknowledged
// upstream, all classes together, so that one device cannot take the whole log.
//
// Accounting. Each class log is a FIFO of records by seq; a record leaves the share of its device
// when the class log's `acked` passes its seq (JetStream's PubAck, an expiry the forwarder skipped,
// an eviction under discard "old": all move `acked`). So each class keeps a queue of its records
// not yet released, in seq order, and releasing is popping from the head while the head's seq is
// <= acked: O(1) per record, nothing to search.
//
// Memory. Consecutive records of one device in a class are one queue entry (a run): its last seq,
// its bytes and the device (16 bytes in typed arrays, no object per entry). A run grows up to
// RUN_MAX_BYTES (a fraction of the share) and is released whole, when its last record is
// acknowledged: a device is charged at most one run's bytes too long (it may be refused up to
// that much early, never let past its share). Worst case (no two consecutive records from one
// device) 16 bytes per unacknowledged record, plus the queue's spare capacity (at most as much
// again); devices with something unacknowledged cost one small record each.
//
// Bytes in flight. A publish being appended is not in a queue yet (its seq is not known): ingress
// `reserve`s its bytes when it appends and `settle`s them (add or drop) when the append ends, so a
// device's burst of appends is charged from the start.

/** What releases a class's records: its log's acknowledged position (every seq <= acked is done). */
export interface AckedPosition {
  readonly acked: number
}

/** Smallest run (bytes) whatever the share: keeps tiny shares from making one entry per record. */
const RUN_MIN_BYTES = 4096
/** A run holds at most this share of --device-max-bytes (the most a device is over-charged). */
const RUN_SHARE_DIVISOR = 64
/** Largest run (Uint32 bytes per entry). */
const RUN_MAX_BYTES = 0x7fff_ffff

/** One class's queue of runs, a ring of typed arrays that doubles (and halves) as needed. */
class RunQueue {
  lastSeq: Float64Array
  bytes: Uint32Array
  device: Int32Array
  head = 0
  size = 0

  constructor(
    readonly log: AckedPosition | undefined,
    capacity = 64,
  ) {
    this.lastSeq = new Float64Array(capacity)
    this.bytes = new Uint32Array(capacity)
    this.device = new Int32Array(capacity)
  }

  get capacity(): number {
    return this.lastSeq.length
  }

  /** Index of the i-th entry from the head. */
  at(i: number): number {
    return (this.head + i) % this.lastSeq.length
  }

  push(seq: number, bytes: number, device: number): void {
    if (this.size === this.lastSeq.length) this.resize(this.lastSeq.length * 2)
    const i = this.at(this.size)
    this.lastSeq[i] = seq
    this.bytes[i] = bytes
    this.device[i] = device
    this.size++
  }

  shift(): void {
    this.head = (this.head + 1) % this.lastSeq.length
    this.size--
    if (this.size === 0) this.head = 0
    if (this.lastSeq.length > 1024 && this.size * 4 < this.lastSeq.length) this.resize(this.lastSeq.length / 2)
  }

  private resize(capacity: number): void {
    const seqs = new Float64Array(capacity)
    const bytes = new Uint32Array(capacity)
    const devices = new Int32Array(capacity)
    for (let k = 0; k < this.size; k++) {
      const i = this.at(k)
      seqs[k] = this.lastSeq[i]!
      bytes[k] = this.bytes[i]!
      devices[k] = this.device[i]!
    }
    this.lastSeq = seqs
    this.bytes = bytes
    this.device = devices
    this.head = 0
  }
}

/**
 * Per-device bytes of records not yet acknowledged upstream. Feed it every stored device record
 * with `add` (in seq order per class; at start, the gateway adds the logs' unacknowledged records),
 * tell it each class's log with `track`; `over(clientId)` releases what was acknowledged and says
 * whether the device is at or over its share.
 */
export class DeviceShares {
  private readonly classes = new Map<string, RunQueue>()
  private readonly index = new Map<string, number>()
  private ids: (string | undefined)[] = []
  /** Unacknowledged bytes in the queues, by device index. */
  private stored: number[] = []
  /** Bytes being appended, by device index. */
  private pending: number[] = []
  /** Queue entries naming the device, by device index (it is forgotten at 0 with nothing pending). */
  private refs: number[] = []
  private readonly free: number[] = []
  private total = 0
  /** Largest run, bytes. */
  private readonly runMaxBytes: number

  /**
   * `maxBytes`: the share (--device-max-bytes); 0 = accounting only, nobody is over. `logs`: every
   * class log by class name (the same as calling `track` for each): a class whose records were
   * added at start must be tracked, or they are never released.
   */
  constructor(
    readonly maxBytes: number,
    logs: Iterable<readonly [string, AckedPosition]> = [],
  ) {
    this.runMaxBytes = Math.min(RUN_MAX_BYTES, Math.max(RUN_MIN_BYTES, Math.floor(maxBytes / RUN_SHARE_DIVISOR)))
    for (const [name, log] of logs) this.track(name, log)
  }

  /** Names the log of a class: its `acked` releases that class's records. Call once per class log. */
  track(className: string, log: AckedPosition): void {
    const q = this.classes.get(className)
    if (q?.log === log) return
    const next = new RunQueue(log)
    // Records added before the log was named keep their place.
    if (q) for (let k = 0; k < q.size; k++) next.push(q.lastSeq[q.at(k)]!, q.bytes[q.at(k)]!, q.device[q.at(k)]!)
    this.classes.set(className, next)
  }

  /** Whether a log was named for `className`. */
  tracks(className: string): boolean {
    return this.classes.get(className)?.log !== undefined
  }

  /**
   * Charges `clientId` for the stored record `seq` of `className` (`bytes`: the stored entry's
   * length). Records of one class are added in seq order (one added out of order is released no
   * earlier than the run before it).
   */
  add(className: string, seq: number, clientId: string, entryBytes: number): void {
    // An entry is far smaller than 4 GiB (--max-packet-bytes); clamped so the queue's Uint32 holds it.
    const bytes = Math.min(entryBytes, 0xffff_ffff)
    let q = this.classes.get(className)
    if (!q) {
      q = new RunQueue(undefined)
      this.classes.set(className, q)
    }
    const d = this.deviceIndex(clientId)
    this.stored[d]! += bytes
    this.total += bytes
    if (q.size > 0) {
      const tail = q.at(q.size - 1)
      if (q.device[tail] === d && q.bytes[tail]! + bytes <= this.runMaxBytes) {
        q.bytes[tail]! += bytes
        if (seq > q.lastSeq[tail]!) q.lastSeq[tail] = seq
        return
      }
    }
    q.push(seq, bytes, d)
    this.refs[d]!++
  }

  /** Notes `bytes` of `clientId` being appended (not yet in a queue). */
  reserve(clientId: string, bytes: number): void {
    const d = this.deviceIndex(clientId)
    this.pending[d]! += bytes
  }

  /** The append `reserve`d ended: stored as `seq` of `className` (then charged as `add`), or not stored (`seq` undefined). */
  settle(clientId: string, bytes: number, className: string, seq: number | undefined): void {
    const d = this.index.get(clientId)
    if (d === undefined) return
    this.pending[d] = Math.max(0, this.pending[d]! - bytes)
    if (seq !== undefined) this.add(className, seq, clientId, bytes)
    else this.forgetIfIdle(d)
  }

  /** Releases, in every class, the records its log has acknowledged. */
  release(): void {
    for (const q of this.classes.values()) {
      if (!q.log || q.size === 0) continue
      const acked = q.log.acked
      while (q.size > 0) {
        const h = q.head
        if (q.lastSeq[h]! > acked) break
        const d = q.device[h]!
        const b = q.bytes[h]!
        q.shift()
        this.stored[d]! -= b
        this.total -= b
        this.refs[d]!--
        this.forgetIfIdle(d)
      }
    }
  }

  /** Unacknowledged bytes of `clientId`, appends in progress included (releases what was acknowledged first). */
  bytesOf(clientId: string): number {
    this.release()
    return this.held(clientId)
  }

  private held(clientId: string): number {
    const d = this.index.get(clientId)
    return d === undefined ? 0 : this.stored[d]! + this.pending[d]!
  }

  /**
   * Releases what was acknowledged; true when `clientId` is at or over the share (never with a share
   * of 0). Released on every call (O(classes) plus what is released): were it released only when a
   * device reaches its share, devices all under theirs would keep every record ever acknowledged.
   */
  over(clientId: string): boolean {
    this.release()
    if (this.maxBytes <= 0) return false
    return this.held(clientId) >= this.maxBytes
  }

  /** Unacknowledged bytes of all devices (in the queues). */
  get totalBytes(): number {
    return this.total
  }

  /** Devices with unacknowledged or in-progress bytes. */
  get devices(): number {
    return this.index.size
  }

  /** Queue entries (runs) held, all classes. */
  get entries(): number {
    let n = 0
    for (const q of this.classes.values()) n += q.size
    return n
  }

  /** Bytes of the typed arrays held (the queues' capacity), for the memory figures. */
  get queueBytes(): number {
    let n = 0
    for (const q of this.classes.values()) n += q.capacity * 16
    return n
  }

  /** The device with the most unacknowledged bytes (O(devices): for scrapes and the status page). */
  largest(): { clientId: string; bytes: number } | undefined {
    let best: { clientId: string; bytes: number } | undefined
    for (const [clientId, d] of this.index) {
      const b = this.stored[d]! + this.pending[d]!
      if (!best || b > best.bytes) best = { clientId, bytes: b }
    }
    return best
  }

  private deviceIndex(clientId: string): number {
    let d = this.index.get(clientId)
    if (d !== undefined) return d
    d = this.free.pop() ?? this.ids.length
    this.ids[d] = clientId
    this.stored[d] = 0
    this.pending[d] = 0
    this.refs[d] = 0
    this.index.set(clientId, d)
    return d
  }

  private forgetIfIdle(d: number): void {
    if (this.refs[d] !== 0 || this.pending[d] !== 0) return
    const id = this.ids[d]
    if (id === undefined) return
    this.index.delete(id)
    this.ids[d] = undefined
    this.stored[d] = 0
    this.free.push(d)
  }
}
