// Raw MQTT packet reading for tests that speak the protocol themselves (mqtt-packet): the packets
// received so far and a wait for the first one that matches.
import mqttPacket from 'mqtt-packet'
import type { Packet } from 'mqtt-packet'

export interface PacketLog {
  /** Every packet received so far, in order. */
  readonly got: Packet[]
  /** Feeds bytes received from the broker to the parser. */
  parse: (b: Buffer) => void
  /** Records a packet that did not come from the parser (e.g. a marker for a closed connection). */
  push: (p: Packet) => void
  /** Resolves with the first packet received (from now or before) that `match` accepts. */
  next: (match: (p: Packet) => boolean, ms?: number) => Promise<Packet>
}

/** A parser for `protocolVersion` that records what it parses; `onPacket` sees each packet before the waiters do. */
export function packetLog(protocolVersion: 4 | 5, defaultMs = 2000, onPacket: (p: Packet) => void = () => {}): PacketLog {
  const parser = mqttPacket.parser({ protocolVersion })
  const got: Packet[] = []
  const waiters = new Set<() => void>()
  const push = (p: Packet): void => {
    got.push(p)
    onPacket(p)
    for (const w of [...waiters]) w()
  }
  parser.on('packet', push)
  return {
    got,
    parse: (b) => void parser.parse(b),
    push,
    next: (match, ms = defaultMs) =>
      new Promise((resolve, reject) => {
        const check = (): void => {
          const p = got.find(match)
          if (!p) return
          waiters.delete(check)
          clearTimeout(t)
          resolve(p)
        }
        const t = setTimeout(() => (waiters.delete(check), reject(new Error(`no matching packet within ${ms} ms; got ${got.map((p) => p.cmd).join(',')}`))), ms)
        waiters.add(check)
        check()
      }),
  }
}
