// Payload encoding upstream: JSON payloads become plain RFC 8949 CBOR, everything else passes unchanged.
import { isUtf8 } from 'node:buffer'
import { Encoder } from 'cbor-x'

export const CONTENT_TYPE_CBOR = 'application/cbor'
export const CONTENT_TYPE_OCTETS = 'application/octet-stream'

// Plain CBOR: no record extension (non-standard tag 105), no structured clone, no shared
// structures; maps sized exactly. Firmware and any RFC 8949 decoder can read the output.
const encoder = new Encoder({
  useRecords: false,
  structuredClone: false,
  variableMapSize: true,
  mapsAsObjects: true,
  pack: false,
  tagUint8Array: false,
})

/** The result of encoding one device payload for upstream. */
export interface EncodedPayload {
  readonly data: Uint8Array
  readonly contentType: typeof CONTENT_TYPE_CBOR | typeof CONTENT_TYPE_OCTETS
}

// JSON.parse silently rounds integers beyond 2^53; such payloads stay as they are so no value changes.
function hasUnsafeInteger(value: unknown): boolean {
  if (typeof value === 'number') return Number.isInteger(value) && !Number.isSafeInteger(value)
  if (Array.isArray(value)) return value.some(hasUnsafeInteger)
  if (value !== null && typeof value === 'object') return Object.values(value).some(hasUnsafeInteger)
  return false
}

// An integer literal JSON.parse could round has at least 16 digits in a row.
const LONG_DIGITS = /\d{16,}/

const FIRST_JSON_BYTE = new Set([0x7b, 0x5b, 0x22, 0x2d, 0x74, 0x66, 0x6e, 0x20, 0x09, 0x0a, 0x0d].concat(
  Array.from({ length: 10 }, (_, i) => 0x30 + i),
))

/**
 * Encodes a device payload: when it parses as JSON (UTF-8) and survives the trip exactly, the CBOR
 * encoding of the parsed value (`application/cbor`); otherwise the bytes unchanged
 * (`application/octet-stream`). With `cbor` false, always unchanged.
 */
export function encodePayload(payload: Uint8Array, cbor: boolean): EncodedPayload {
  // Invalid UTF-8 would be replaced by U+FFFD when parsed, changing the value: such payloads stay as bytes.
  if (cbor && payload.length > 0 && FIRST_JSON_BYTE.has(payload[0] ?? 0) && isUtf8(payload)) {
    let value: unknown
    const text = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8')
    try {
      value = JSON.parse(text)
    } catch {
      return { data: payload, contentType: CONTENT_TYPE_OCTETS }
    }
    if (!(LONG_DIGITS.test(text) && hasUnsafeInteger(value))) return { data: encoder.encode(value), contentType: CONTENT_TYPE_CBOR }
  }
  return { data: payload, contentType: CONTENT_TYPE_OCTETS }
}

/** Decodes a CBOR payload produced by {@link encodePayload} (for consumers, tools and tests). */
export function decodeCbor(data: Uint8Array): unknown {
  return encoder.decode(data)
}
