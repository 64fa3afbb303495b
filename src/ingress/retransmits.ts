// Remembers recently stored QoS 1/2 publishes so that a retransmission is not stored twice.
//
// A device resends a PUBLISH whose PUBACK it did not get after reconnecting ([MQTT-4.4.0-1]), under
// the same packet id, in the order first sent ([MQTT-4.6.0-1]), and before anything new.
// Spec-following clients set DUP ([MQTT-3.3.1-1]) and resend only into a session they kept
// (CleanSession=0). MQTT.js 5 resends its in-flight publishes after every reconnect, clean session
// or not, without DUP, one at a time, and holds new publishes back until those are acknowledged; it
// sends DISCONNECT only once nothing is in flight (`end()` waits for `outgoingEmpty`).
//
// So a publish is taken for a retransmission of a remembered one when client id, packet id and the
// CRC-32 of topic and stored payload match, and either DUP is set, or all of:
//   1. it comes on another connection than the remembered one (or after a restart of the gateway);
//   2. it is among the first publishes of its connection: that connection has stored nothing new
//      yet (once a device sends something new, it has resent all it had to);
//   3. the remembered one is younger than `windowMs` (see "Time" below);
//   4. nothing showed that the device had the remembered one's PUBACK. It had it (the entry is
//      "settled") when:
//      a. the device ended that connection with DISCONNECT (see `ended`);
//      b. that connection carried a later publish from the device ACKED_AFTER_MS or more after the
//         PUBACK was written: the link worked meanwhile and TCP retransmits what it lost;
//      c. a later connection of the device stored something new (by 2, after resending all).
// A recognised resend belongs from then on to the connection it came on, at the time it came (its
// PUBACK may be lost again). Every one of these errs towards storing a resend twice (a duplicate upstream) rather than
// acknowledging a new message without storing it. The one misjudgement left the other way: a new
// message is dropped when, right after reconnecting and before anything else, the device sends
// the same bytes under the same packet id as a message of the last ACKED_AFTER_MS of an earlier
// connection it did not end with DISCONNECT, within the window (a deep-sleep device that restarts
// packet ids, sleeps without DISCONNECT and sends the same reading on its next wake). For entries
// read back from the log, DISCONNECTs before the restart are not known, and all of that run's
// connections count as one for 4b. The device's last publish time, for 4b, is kept for its two
// latest connections that published; an entry of an older one (possible after two reconnects that
// only resent) is not settled by 4b.
//
// Time. Entries of this run carry times on a monotonic clock (`performance.now()`, passed in by the
// caller): stepping the wall clock (NTP, a manual date) neither widens nor shrinks the window.
// Entries read back from the log (connection FROM_LOG) carry the wall-clock receive time of an
// earlier run; their age at our start is the wall clock at start minus that time, or, if the clock
// is now behind the log's newest receive time (set back, or restored from a stale saved time at
// boot), the log's newest receive time minus it (the downtime then counts as zero); from there it
// grows on the monotonic clock. One received after the log's newest (the clock was set back during
// that run) counts as outside the window. A wall clock set forward while the gateway was down counts
// as downtime.
//
// Bounded: entries are forgotten in the order they were first stored. Filled from the log's tail
// at start, so it works across a kill -9 of the gateway.

import { crc32 } from 'node:zlib'

/** Topic → CRC-32 of its UTF-8 bytes: devices publish on few topics each; bounded, cleared when full. */
const topicCrcs = new Map<string, number>()
const TOPIC_CRCS_MAX = 10_000
/** Longest topic whose CRC is cached, in UTF-16 units. */
const TOPIC_CRC_CHARS_MAX = 256

/** What identifies a retransmission besides client and packet id: CRC-32 of topic and stored payload. */
export function retransmitHash(topic: string, stored: Uint8Array): number {
  // A long topic is not cached: the cache stays within TOPIC_CRCS_MAX x TOPIC_CRC_CHARS_MAX.
  if (topic.length > TOPIC_CRC_CHARS_MAX) return crc32(stored, crc32(topic))
  let t = topicCrcs.get(topic)
  if (t === undefined) {
    t = crc32(topic)
    if (topicCrcs.size >= TOPIC_CRCS_MAX) topicCrcs.clear()
    topicCrcs.set(topic, t)
  }
  return crc32(stored, t)
}

/** Connection number of entries read back from the log at start (live connections count from 1). */
export const FROM_LOG = 0

/**
 * A remembered publish counts as acknowledged once its connection carried a later publish from the
 * device this long (ms) after the PUBACK was written.
 */
export const ACKED_AFTER_MS = 30_000

/** The clocks the index relates (a seam for tests). Read once, at construction. */
export interface RetransmitClock {
  /** Milliseconds on a clock that never steps: the clock of the times given to `add` and `find`. */
  monotonicMs(): number
  /** Milliseconds since the epoch: the clock of the receive times read back from the log. */
  wallMs(): number
}

const systemClock: RetransmitClock = { monotonicMs: () => performance.now(), wallMs: () => Date.now() }

/** A remembered publish. `pending` is set while its append is not yet stored. */
export interface Remembered {
  pending: Promise<unknown> | undefined
  crc: number
  /** The connection that stored it, or last resent it; FROM_LOG = a previous run of the gateway. */
  conn: number
  /**
   * When it was stored (its PUBACK written) or last resent: monotonic ms; for FROM_LOG, the wall-clock
   * receive time from the log.
   */
  at: number
}

/** The CRCs of the other forms a publish's payload may have been stored in (see RetransmitIndex.find). */
export type OtherCrcs = (topic: string, payload: Uint8Array) => number[]

const NO_PAYLOAD = new Uint8Array(0)

/** What is known of one client id. One object per client, none per publish. */
interface ClientState {
  readonly entries: Map<number, Remembered>
  /** Connection of the client's latest publish (stored or resent) and when it came. */
  lastConn: number
  lastAt: number
  /** The same for the connection before it (its resends may still follow). */
  prevConn: number
  prevAt: number
  /** The latest connection that stored something new: its resends are over. */
  freshConn: number
  /** Entries of connections below this number are settled (rules 4a and 4c). */
  settledBelow: number
}

export class RetransmitIndex {
  // client id → what is known of it; packet id → what was stored. Nested maps: no key string built per publish.
  private readonly byClient = new Map<string, ClientState>()
  // Every add takes the next slot, round-robin (O(1) eviction). A slot evicts its entry only if
  // that entry is still current: a key stored again took a newer slot and stays.
  private readonly ringClient: (string | undefined)[]
  /** The client's state when the slot was taken: eviction needs no lookup by client id. */
  private readonly ringState: (ClientState | undefined)[]
  private readonly ringPacket: Uint16Array
  private readonly ringRec: (Remembered | undefined)[]
  private pos = 0
  private count = 0
  private readonly startMonotonicMs: number
  private readonly startWallMs: number
  /** The receive time of the newest entry read back from the log (they are added in log order). */
  private logEndMs = -Infinity

  constructor(
    private readonly capacity: number,
    private readonly windowMs: number,
    clock: RetransmitClock = systemClock,
  ) {
    this.ringClient = new Array<string | undefined>(Math.max(0, capacity))
    this.ringState = new Array<ClientState | undefined>(Math.max(0, capacity))
    this.ringPacket = new Uint16Array(Math.max(0, capacity))
    this.ringRec = new Array<Remembered | undefined>(Math.max(0, capacity))
    this.startMonotonicMs = clock.monotonicMs()
    this.startWallMs = clock.wallMs()
  }

  /**
   * Remembers a publish being stored (`pending` until the append resolves) or stored, as something new
   * on connection `conn`. `at`: monotonic ms, or for `conn` FROM_LOG the wall-clock receive time
   * (records read back from the log, in log order).
   */
  add(clientId: string, packetId: number, payloadCrc: number, conn: number, at: number, pending?: Promise<unknown>): Remembered {
    const rec: Remembered = { pending, crc: payloadCrc, conn, at }
    if (this.capacity <= 0 || packetId === 0) return rec
    if (conn === FROM_LOG) this.logEndMs = at
    const pos = this.pos
    const evictRec = this.ringRec[pos]
    if (evictRec !== undefined) this.evict(this.ringState[pos]!, this.ringClient[pos]!, this.ringPacket[pos]!, evictRec)
    let st = this.byClient.get(clientId)
    if (!st) {
      st = { entries: new Map(), lastConn: conn, lastAt: at, prevConn: conn, prevAt: at, freshConn: conn, settledBelow: conn }
      this.byClient.set(clientId, st)
    }
    const size = st.entries.size
    st.entries.set(packetId, rec)
    if (st.entries.size !== size) this.count++
    this.seen(st, conn, at)
    if (conn !== st.freshConn) {
      st.freshConn = conn
      if (conn > st.settledBelow) st.settledBelow = conn
    }
    this.ringClient[pos] = clientId
    this.ringState[pos] = st
    this.ringPacket[pos] = packetId
    this.ringRec[pos] = rec
    this.pos = pos + 1 === this.capacity ? 0 : pos + 1
    return rec
  }

  /**
   * forget() for the entry of a ring slot, whose client state is known: if that state was dropped
   * (emptied) since, the entry is no longer in it, as forget() would find.
   */
  private evict(st: ClientState, clientId: string, packetId: number, rec: Remembered): void {
    if (st.entries.get(packetId) === rec) {
      st.entries.delete(packetId)
      this.count--
      if (st.entries.size === 0 && this.byClient.get(clientId) === st) this.byClient.delete(clientId)
    }
  }

  /** Forgets `rec` (evicted, or its append failed), unless a newer publish replaced it. */
  forget(clientId: string, packetId: number, rec: Remembered): void {
    const st = this.byClient.get(clientId)
    if (st?.entries.get(packetId) === rec) {
      st.entries.delete(packetId)
      this.count--
      if (st.entries.size === 0) this.byClient.delete(clientId)
    }
  }

  /**
   * The stored (or being stored) publish this one retransmits, if any; it is then taken as resent on
   * `conn` at `now` (monotonic ms). `otherCrcs(topic, payload)` gives the CRCs of the other forms the
   * payload may have been stored in (e.g. before a restart with other codec settings); it is called
   * only when everything but the CRC already matches (rare). `topic` and `payload` are only passed to
   * it: a plain function and its arguments, so that no closure is made per publish.
   */
  find(clientId: string, packetId: number, payloadCrc: number, conn: number, dup: boolean, now: number, otherCrcs?: OtherCrcs, topic = '', payload: Uint8Array = NO_PAYLOAD): Remembered | undefined {
    const st = this.byClient.get(clientId)
    const e = st?.entries.get(packetId)
    if (!st || !e || !(dup || this.mayBeResent(st, e, conn, now))) return undefined
    if (e.crc !== payloadCrc && !otherCrcs?.(topic, payload).includes(e.crc)) return undefined
    e.conn = conn
    e.at = now
    this.seen(st, conn, now)
    return e
  }

  /**
   * The device ended its connection with DISCONNECT: it had the PUBACK of everything it sent (MQTT.js
   * disconnects only then; clients that keep unacknowledged messages resend them with DUP).
   */
  ended(clientId: string): void {
    const st = this.byClient.get(clientId)
    if (st && st.lastConn >= st.settledBelow) st.settledBelow = st.lastConn + 1
  }

  get size(): number {
    return this.count
  }

  /** Rules 1 to 4 of the file comment, for a publish without DUP. */
  private mayBeResent(st: ClientState, e: Remembered, conn: number, now: number): boolean {
    if (e.conn === conn || st.freshConn === conn || e.conn < st.settledBelow) return false
    if ((e.conn === st.lastConn && st.lastAt - e.at >= ACKED_AFTER_MS) || (e.conn === st.prevConn && st.prevAt - e.at >= ACKED_AFTER_MS)) return false
    return this.ageMs(e, now) < this.windowMs
  }

  private ageMs(e: Remembered, now: number): number {
    if (e.conn !== FROM_LOG) return now - e.at
    if (e.at > this.logEndMs) return Infinity // received before the wall clock was set back
    return Math.max(this.startWallMs, this.logEndMs) - e.at + (now - this.startMonotonicMs)
  }

  /** Notes a publish from the client on `conn` at `at`. */
  private seen(st: ClientState, conn: number, at: number): void {
    if (conn > st.lastConn) {
      st.prevConn = st.lastConn
      st.prevAt = st.lastAt
      st.lastConn = conn
      st.lastAt = at
    } else if (conn === st.lastConn) {
      st.lastAt = at
    }
  }
}
