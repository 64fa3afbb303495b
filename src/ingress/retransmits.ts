// Remembers recently stored QoS 1/2 publishes so a retransmission (DUP) is not stored twice.
//
// Key: client id + packet id; value: CRC-32 of the payload. A DUP publish whose key and payload
// checksum match was stored already (its PUBACK/PUBREC was lost, typically in a crash). Bounded:
// the oldest keys are forgotten first. The gateway fills it from the log's tail at start, so it
// also works across a kill -9.

export class RetransmitIndex {
  private readonly map = new Map<string, number>()

  constructor(private readonly capacity: number) {}

  private key(clientId: string, packetId: number): string {
    return `${packetId}\u0000${clientId}`
  }

  add(clientId: string, packetId: number, payloadCrc: number): void {
    if (this.capacity <= 0 || packetId === 0) return
    const k = this.key(clientId, packetId)
    this.map.delete(k)
    this.map.set(k, payloadCrc)
    if (this.map.size > this.capacity) {
      const oldest = this.map.keys().next()
      if (!oldest.done) this.map.delete(oldest.value)
    }
  }

  has(clientId: string, packetId: number, payloadCrc: number): boolean {
    return this.map.get(this.key(clientId, packetId)) === payloadCrc
  }

  get size(): number {
    return this.map.size
  }
}
