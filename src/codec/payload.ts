// Payload encoding upstream: JSON payloads become plain RFC 8949 CBOR, everything else passes unchanged.
import type { MessageProperties } from './properties.js'
import { isUtf8 } from 'node:buffer'
import { Encoder } from 'cbor-x'
import { jsonToCbor } from './json-cbor.js'
import { topicMatches } from './topic-filter.js'

export const CONTENT_TYPE_CBOR = 'application/cbor'
export const CONTENT_TYPE_OCTETS = 'application/octet-stream'
export const CONTENT_TYPE_JSON = 'application/json'

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

/** Plain RFC 8949 CBOR of a value (Ferry's own event bodies). */
export function encodeCbor(value: unknown): Buffer {
  return encoder.encode(value)
}

/** The result of encoding one device payload for upstream. */
export interface EncodedPayload {
  readonly data: Uint8Array
  readonly contentType: typeof CONTENT_TYPE_CBOR | typeof CONTENT_TYPE_JSON | typeof CONTENT_TYPE_OCTETS
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

// The bytes a JSON text can start with (whitespace, a value), as a lookup table.
const FIRST_JSON_BYTE = new Uint8Array(256)
for (const c of [0x7b, 0x5b, 0x22, 0x2d, 0x74, 0x66, 0x6e, 0x20, 0x09, 0x0a, 0x0d, 0x30, 0x31, 0x32, 0x33, 0x34, 0x35, 0x36, 0x37, 0x38, 0x39]) FIRST_JSON_BYTE[c] = 1

/**
 * Encodes a device payload. Valid UTF-8 that parses as JSON becomes the CBOR encoding of the parsed
 * value (`application/cbor`), except when that would be larger than the text or would change a
 * value (integers beyond 2^53): then the text goes unchanged as `application/json`. Anything else
 * goes unchanged as `application/octet-stream`; with `cbor` false, everything does.
 */
export function encodePayload(payload: Uint8Array, cbor: boolean): EncodedPayload {
  // Invalid UTF-8 would be replaced by U+FFFD when parsed, changing the value: such payloads stay as bytes.
  if (cbor && payload.length > 0 && FIRST_JSON_BYTE[payload[0] ?? 0] === 1 && isUtf8(payload)) {
    // The common case in one pass over the bytes (json-cbor.ts), byte for byte what the parse path gives.
    const direct = jsonToCbor(payload, payload.length)
    if (direct === 'larger') return { data: payload, contentType: CONTENT_TYPE_JSON }
    if (direct !== undefined) return { data: direct, contentType: CONTENT_TYPE_CBOR }
    return encodeParsed(payload)
  }
  return { data: payload, contentType: CONTENT_TYPE_OCTETS }
}

/** encodePayload for texts the one-pass transcoder leaves: JSON.parse, then cbor-x. */
function encodeParsed(payload: Uint8Array): EncodedPayload {
  let value: unknown
  const text = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8')
  try {
    value = JSON.parse(text)
  } catch {
    return { data: payload, contentType: CONTENT_TYPE_OCTETS }
  }
  if (LONG_DIGITS.test(text) && hasUnsafeInteger(value)) return { data: payload, contentType: CONTENT_TYPE_JSON }
  const data = encoder.encode(value)
  // Rarely CBOR is larger (e.g. arrays of short decimals become 9-byte floats): keep the text, so
  // that what goes upstream is never larger than what the device sent.
  return data.length <= payload.length ? { data, contentType: CONTENT_TYPE_CBOR } : { data: payload, contentType: CONTENT_TYPE_JSON }
}

/** The stored encoding of a payload whose Content Type the device declared (kept as sent). */
function declaredEncoding(contentType: string): EncodedPayload['contentType'] {
  return contentType === CONTENT_TYPE_CBOR || contentType === CONTENT_TYPE_JSON ? contentType : CONTENT_TYPE_OCTETS
}

/**
 * The payload rule of one configuration (`--cbor`, `--raw-topics`), with the per-topic filter
 * match memoised (bounded), so the hot path does not test every filter for every publish.
 */
export class PayloadPolicy {
  private readonly raw = new Map<string, boolean>()

  constructor(
    private readonly cbor: boolean,
    private readonly rawTopics: readonly string[],
  ) {}

  /**
   * Encodes `payload` published on `topic` for upstream. `props`: the MQTT 5 properties the device
   * sent. A device that declares a Content Type gets its payload stored as sent, never re-encoded
   * (upstream, the message's Content-Type is the declared one: codec/nats-message.ts); the code
   * returned is the declared type when it is one of the three Ferry knows, else octet-stream.
   * The Payload Format Indicator (utf8) needs nothing here: UTF-8 JSON is transcoded as always,
   * and other UTF-8 text goes as sent, labelled text/plain upstream (codec/nats-message.ts).
   */
  encode(topic: string, payload: Uint8Array, props?: MessageProperties): EncodedPayload {
    const declared = props?.contentType
    if (declared !== undefined) return { data: payload, contentType: declaredEncoding(declared) }
    if (!this.cbor) return { data: payload, contentType: CONTENT_TYPE_OCTETS }
    let raw = this.raw.get(topic)
    if (raw === undefined) {
      raw = this.rawTopics.some((f) => topicMatches(f, topic))
      if (this.raw.size >= 10_000) this.raw.clear()
      this.raw.set(topic, raw)
    }
    return encodePayload(payload, !raw)
  }
}

// Maps decode as Map (cbor-x renames a "__proto__" key when it builds objects itself).
const mapDecoder = new Encoder({ useRecords: false, structuredClone: false, mapsAsObjects: false, pack: false, tagUint8Array: false })

function toPlain(v: unknown): unknown {
  if (v instanceof Map) {
    const o: Record<string, unknown> = {}
    for (const [k, x] of v) Object.defineProperty(o, String(k), { value: toPlain(x), enumerable: true, writable: true, configurable: true })
    return o
  }
  if (Array.isArray(v)) return v.map(toPlain)
  return v
}

/**
 * Decodes a CBOR payload produced by {@link encodePayload} into the value JSON.parse gives for the
 * original text (maps become plain objects, any key included). For consumers, tools and tests.
 */
export function decodeCbor(data: Uint8Array): unknown {
  return toPlain(mapDecoder.decode(data))
}
