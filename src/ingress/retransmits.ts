// Remembers recently stored QoS 1/2 publishes so that a retransmission is not stored twice.
//
// A client resends an unacknowledged QoS 1/2 PUBLISH after reconnecting ([MQTT-4.4.0-1]) with the
// same packet id. Spec-following clients set DUP; common ones (MQTT.js) do not. So a publish is
// taken for a retransmission of a stored message when the client id, packet id and payload CRC-32
// match a remembered one AND either DUP is set, or the remembered one was stored on an earlier
// connection (or before a restart) less than `windowMs` ago. A new message can only be mistaken
// for a retransmission if, right after reconnecting, the device sends a byte-identical payload
// under the same packet id within the window; telemetry with a timestamp or counter never does.
// Bounded: the oldest entries are forgotten first. Filled from the log's tail at start, so it
// works across a kill -9 of the gateway.

interface Remembered {
  readonly crc: number
  /** Connection that stored it; 0 = a previous run of the gateway. */
  readonly conn: number
  readonly at: number
}

export class RetransmitIndex {
  private readonly map = new Map<string, Remembered>()

  constructor(
    private readonly capacity: number,
    private readonly windowMs: number,
  ) {}

  private key(clientId: string, packetId: number): string {
    return `${packetId}\u0000${clientId}`
  }

  /** Remembers a stored publish. `conn` identifies the connection (0 for records read back at start). */
  add(clientId: string, packetId: number, payloadCrc: number, conn: number, at: number): void {
    if (this.capacity <= 0 || packetId === 0) return
    const k = this.key(clientId, packetId)
    this.map.delete(k)
    this.map.set(k, { crc: payloadCrc, conn, at })
    if (this.map.size > this.capacity) {
      const oldest = this.map.keys().next()
      if (!oldest.done) this.map.delete(oldest.value)
    }
  }

  /** True when this publish is a retransmission of one already stored. */
  isRetransmit(clientId: string, packetId: number, payloadCrc: number, conn: number, dup: boolean, now: number): boolean {
    const e = this.map.get(this.key(clientId, packetId))
    if (!e || e.crc !== payloadCrc) return false
    return dup || (e.conn !== conn && now - e.at < this.windowMs)
  }

  get size(): number {
    return this.map.size
  }
}
