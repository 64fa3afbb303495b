// Review of --uplink-headers (issue 14): consumers must tell an absent Content-Type (compact: CBOR)
// from one the device declared empty (MQTT 5 allows a zero-length Content Type; mqtt-packet keeps it).
import { MsgHdrsImpl } from '@nats-io/nats-core'
import { describe, expect, it } from 'vitest'
import { PayloadPolicy, UplinkHeaderEncoder, decodeEntry, encodeEntry, uplinkContentType, uplinkMessage } from '../../src/codec/index.js'

const base = { gatewayId: 'gw-1', stream: 'FERRY', subjectPrefix: 'ferry', payloads: new PayloadPolicy(true, []) }

describe('review fwd - uplink headers consumers', () => {
  it('review fwd - an empty Content-Type the device declared is not read as application/cbor (full and compact)', () => {
    // Ingest keeps the declared type and the payload unchanged (declared, not CBOR: octets).
    const e = decodeEntry(
      encodeEntry({ clientId: 'd', topic: 'devices/d/t', qos: 1, retain: false, packetId: 1, encoding: 3, payload: Buffer.from('{"a":1}'), properties: { contentType: '' } }),
    )
    for (const mode of ['full', 'compact'] as const) {
      const m = uplinkMessage(e, 1, 1, { ...base, headerMode: mode, headerEncoder: new UplinkHeaderEncoder('gw-1', 'FERRY', mode) })
      const h = MsgHdrsImpl.decode(m.headers)
      // The header is there, empty: the device's declaration, not the compact "absent = CBOR".
      expect(h.has('Content-Type')).toBe(true)
      const stored: Record<string, string> = {}
      for (const [k, v] of h) stored[k] = v[0] ?? ''
      expect(uplinkContentType(stored['Content-Type'])).toBe('')
    }
  })
})
