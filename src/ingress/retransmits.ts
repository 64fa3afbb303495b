// Remembers recently stored QoS 1/2 publishes so that a retransmission is not stored twice.
//
// A client resends an unacknowledged QoS 1/2 PUBLISH after reconnecting ([MQTT-4.4.0-1]) with the
// same packet id. Spec-following clients set DUP; common ones (MQTT.js) do not. So a publish is
// taken for a retransmission of a stored message when the client id, packet id and payload CRC-32
// match a remembered one AND either DUP is set, or the remembered one was stored on an earlier
// connection (or before a restart) less than `windowMs` ago. A new message can only be mistaken
// for a retransmission if, right after reconnecting, the device sends a byte-identical payload
// under the same packet id within the window; telemetry with a timestamp or counter never does.
// Bounded: entries are forgotten in the order they were first stored. Filled from the log's tail at start, so it
// works across a kill -9 of the gateway.

/** A remembered publish. `pending` is set while its append is not yet stored. */
export interface Remembered {
  pending: Promise<unknown> | undefined
  crc: number
  /** Connection that stored it; 0 = a previous run of the gateway. */
  conn: number
  at: number
}

export class RetransmitIndex {
  // client id → packet id → what was stored. Nested maps: no key string built per publish.
  private readonly byClient = new Map<string, Map<number, Remembered>>()
  // Every add takes the next slot, round-robin (O(1) eviction). A slot evicts its entry only if
  // that entry is still current: a key stored again took a newer slot and stays.
  private readonly ringClient: (string | undefined)[]
  private readonly ringPacket: Uint16Array
  private readonly ringRec: (Remembered | undefined)[]
  private pos = 0
  private count = 0

  constructor(
    private readonly capacity: number,
    private readonly windowMs: number,
  ) {
    this.ringClient = new Array<string | undefined>(Math.max(0, capacity))
    this.ringPacket = new Uint16Array(Math.max(0, capacity))
    this.ringRec = new Array<Remembered | undefined>(Math.max(0, capacity))
  }

  /**
   * Remembers a publish being stored (`pending` until the append resolves) or stored. `conn`
   * identifies the connection (0 for records read back at start).
   */
  add(clientId: string, packetId: number, payloadCrc: number, conn: number, at: number, pending?: Promise<unknown>): Remembered {
    const rec: Remembered = { pending, crc: payloadCrc, conn, at }
    if (this.capacity <= 0 || packetId === 0) return rec
    const evictRec = this.ringRec[this.pos]
    if (evictRec !== undefined) this.forget(this.ringClient[this.pos]!, this.ringPacket[this.pos]!, evictRec)
    let perClient = this.byClient.get(clientId)
    if (!perClient) {
      perClient = new Map()
      this.byClient.set(clientId, perClient)
    }
    if (!perClient.has(packetId)) this.count++
    perClient.set(packetId, rec)
    this.ringClient[this.pos] = clientId
    this.ringPacket[this.pos] = packetId
    this.ringRec[this.pos] = rec
    this.pos = (this.pos + 1) % this.capacity
    return rec
  }

  /** Forgets `rec` (evicted, or its append failed), unless a newer publish replaced it. */
  forget(clientId: string, packetId: number, rec: Remembered): void {
    const m = this.byClient.get(clientId)
    if (m?.get(packetId) === rec) {
      m.delete(packetId)
      this.count--
      if (m.size === 0) this.byClient.delete(clientId)
    }
  }

  /**
   * The stored (or being stored) publish this one retransmits, if any. `otherCrcs` gives the CRCs
   * of the other forms the payload may have been stored in (e.g. before a restart with other codec
   * settings); it is called only when everything but the CRC already matches (rare).
   */
  find(clientId: string, packetId: number, payloadCrc: number, conn: number, dup: boolean, now: number, otherCrcs?: () => number[]): Remembered | undefined {
    const e = this.byClient.get(clientId)?.get(packetId)
    if (!e || !(dup || (e.conn !== conn && now - e.at < this.windowMs))) return undefined
    return e.crc === payloadCrc || otherCrcs?.().includes(e.crc) ? e : undefined
  }

  get size(): number {
    return this.count
  }
}
