// The one-pass JSON → CBOR transcoder gives byte for byte what the parse-then-encode path gave, for any text.
import { isUtf8 } from 'node:buffer'
import { Encoder } from 'cbor-x'
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { encodePayload } from '../../src/codec/index.js'
import { jsonToCbor } from '../../src/codec/json-cbor.js'

// The oracle: encodePayload as it was before the transcoder (issue 14), verbatim but for names.
const oracleEncoder = new Encoder({ useRecords: false, structuredClone: false, variableMapSize: true, mapsAsObjects: true, pack: false, tagUint8Array: false })
function hasUnsafeInteger(value: unknown): boolean {
  if (typeof value === 'number') return Number.isInteger(value) && !Number.isSafeInteger(value)
  if (Array.isArray(value)) return value.some(hasUnsafeInteger)
  if (value !== null && typeof value === 'object') return Object.values(value).some(hasUnsafeInteger)
  return false
}
const LONG_DIGITS = /\d{16,}/
const FIRST_JSON_BYTE = new Set([0x7b, 0x5b, 0x22, 0x2d, 0x74, 0x66, 0x6e, 0x20, 0x09, 0x0a, 0x0d].concat(Array.from({ length: 10 }, (_, i) => 0x30 + i)))
function oracle(payload: Uint8Array): { data: Uint8Array; contentType: string } {
  if (payload.length > 0 && FIRST_JSON_BYTE.has(payload[0] ?? 0) && isUtf8(payload)) {
    let value: unknown
    const text = Buffer.from(payload.buffer, payload.byteOffset, payload.byteLength).toString('utf8')
    try {
      value = JSON.parse(text)
    } catch {
      return { data: payload, contentType: 'application/octet-stream' }
    }
    if (hasUnsafeInteger(value) && LONG_DIGITS.test(text)) return { data: payload, contentType: 'application/json' }
    const data = oracleEncoder.encode(value)
    return data.length <= payload.length ? { data, contentType: 'application/cbor' } : { data: payload, contentType: 'application/json' }
  }
  return { data: payload, contentType: 'application/octet-stream' }
}

function same(text: string | Uint8Array): void {
  const bytes = typeof text === 'string' ? Buffer.from(text) : text
  const want = oracle(Buffer.from(bytes))
  const got = encodePayload(Buffer.from(bytes), true)
  expect({ type: got.contentType, hex: Buffer.from(got.data).toString('hex') }, typeof text === 'string' ? text : Buffer.from(text).toString('hex')).toEqual({
    type: want.contentType,
    hex: Buffer.from(want.data).toString('hex'),
  })
}

// JSON text built directly, so that whitespace, escapes and number spellings vary as devices write them.
const ws = fc.constantFrom('', '', '', ' ', '\n', '\t', '\r\n  ', '   ')
const numberText = fc.oneof(
  fc.constantFrom('0', '-0', '1.0', '0.1', '1e21', '1e400', '-1e400', '1e-400', '1E5', '1e+5', '-1.5e-7', '0.000001', '5e-324', '1.7976931348623157e308', '2.2250738585072014e-308'),
  fc.constantFrom('9007199254740991', '9007199254740992', '9007199254740993', '-9007199254740993', '12345678901234567890', '123456789012345678', '1e20', '1e16', '4294967295', '4294967296', '-4294967296', '-4294967297', '2147483647', '2147483648', '-2147483648', '-2147483649', '23', '24', '255', '256', '65535', '65536', '-24', '-25', '-256', '-257', '-65536', '-65537'),
  fc.integer().map(String),
  fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }).map(String),
  fc.double({ noNaN: true, noDefaultInfinity: true }).map((d) => JSON.stringify(d)),
  fc
    .tuple(fc.boolean(), fc.stringMatching(/^(0|[1-9][0-9]{0,20})$/), fc.option(fc.stringMatching(/^[0-9]{1,20}$/)), fc.option(fc.tuple(fc.constantFrom('e', 'E'), fc.constantFrom('', '+', '-'), fc.stringMatching(/^[0-9]{1,4}$/))))
    .map(([neg, int, frac, exp]) => `${neg ? '-' : ''}${int}${frac === null ? '' : `.${frac}`}${exp === null ? '' : exp.join('')}`),
)
const char = fc.oneof(
  fc.string({ unit: 'grapheme', minLength: 1, maxLength: 1 }),
  fc.constantFrom('"', '\\', '/', '\b', '\f', '\n', '\r', '\t', '\u0000', '\u001f', '\u007f', 'é', '中', '😀', '\u2028', '\ud800', '\udfff', '\ud83d\ude00', '\ufeff', '\uffff'),
)
/** One UTF-16 unit of a string as JSON may write it. */
function escapeUnit(u: string, mode: number): string {
  const code = u.charCodeAt(0)
  const hex = `\\u${code.toString(16).padStart(4, '0')}`
  if (mode === 1) return mode === 1 && (code & 0xff00) !== 0 ? hex.toUpperCase().replace('\\U', '\\u') : hex
  if (mode === 2) return hex
  if (u === '"' || u === '\\' || code < 0x20 || (code >= 0xd800 && code <= 0xdfff)) return JSON.stringify(u).slice(1, -1)
  if (u === '/' && mode === 3) return '\\/'
  return u
}
const stringText = fc.array(fc.tuple(char, fc.nat(6)), { maxLength: 40 }).map((parts) => {
  let s = '"'
  for (const [c, mode] of parts) for (const u of c) s += escapeUnit(u, mode)
  return `${s}"`
})
const keyText = fc.oneof(stringText, fc.constantFrom('"a"', '"b"', '"a"', '"__proto__"', '"constructor"', '"0"', '"1"', '"01"', '"4294967295"', '""', '"\\u0061"', '"\\u005f_proto__"', '"toString"', '"-1"', '"1.5"'))

const { text: jsonText } = fc.letrec<{ text: string; value: string; array: string; object: string }>((tie) => ({
  text: fc.tuple(ws, tie('value'), ws).map((a) => a.join('')),
  value: fc.oneof({ depthSize: 'small', withCrossShrink: true }, numberText, stringText, fc.constantFrom('true', 'false', 'null'), tie('array'), tie('object')),
  array: fc.array(fc.tuple(ws, tie('value'), ws), { maxLength: 30 }).map((items) => `[${items.map((a) => a.join('')).join(',')}]`),
  object: fc.array(fc.tuple(ws, keyText, ws, ws, tie('value'), ws), { maxLength: 30 }).map((items) => `{${items.map(([a, k, b, c, v, d]) => `${a}${k}${b}:${c}${v}${d}`).join(',')}}`),
}))

describe('codec - json-cbor', () => {
  it('payload - any JSON value, as JSON.stringify writes it, gives the bytes of the parse path', () => {
    fc.assert(
      fc.property(fc.jsonValue({ stringUnit: 'binary' }), fc.constantFrom(undefined, 2, '\t'), (v, indent) => same(JSON.stringify(v, null, indent))),
      { numRuns: 3000 },
    )
  })

  it('payload - any JSON text (whitespace, escapes, number spellings, special keys) gives the bytes of the parse path', () => {
    let direct = 0
    fc.assert(
      fc.property(jsonText, (t) => {
        same(t)
        if (jsonToCbor(Buffer.from(t), Infinity) !== undefined) direct++
      }),
      { numRuns: 5000 },
    )
    // The law is tested on the one-pass path, not only on its way out to the parse path.
    expect(direct).toBeGreaterThan(1000)
  })

  it('payload - broken, truncated or altered JSON text is classified as the parse path classifies it', () => {
    fc.assert(
      fc.property(jsonText, fc.nat(), fc.constantFrom('', ',', '}', ']', '"', '\\', 'x', '0', '-', '.', 'e', ' ', '\u0001', '\u00ff'), (t, at, ins) => {
        const k = t.length === 0 ? 0 : at % t.length
        same(t.slice(0, k))
        same(t.slice(0, k) + ins + t.slice(k))
        same(t.slice(0, k) + ins + t.slice(k + 1))
      }),
      { numRuns: 3000 },
    )
  })

  it('payload - examples at the edges: nesting, sizes of heads, numbers JSON.parse rounds, keys it reorders', () => {
    const deep = (n: number): string => '['.repeat(n) + ']'.repeat(n)
    const deepObj = (n: number): string => '{"a":'.repeat(n) + '1' + '}'.repeat(n)
    for (const t of [
      deep(1), deep(63), deep(64), deep(65), deep(200), deepObj(64), deepObj(65), deepObj(100),
      '{"a":1,"a":2}', '{"a":1,"b":2,"a":3}', '{"b":1,"1":2}', '{"__proto__":{"x":1}}', '{"constructor":1}', '{"\\u0031":1}',
      JSON.stringify(Object.fromEntries(Array.from({ length: 40 }, (_, i) => [`k${i}`, i]))),
      JSON.stringify(Array.from({ length: 300 }, (_, i) => i)), JSON.stringify(Array.from({ length: 70000 }, () => 1)),
      JSON.stringify('x'.repeat(23)), JSON.stringify('x'.repeat(24)), JSON.stringify('x'.repeat(255)), JSON.stringify('x'.repeat(256)), JSON.stringify('x'.repeat(65536)),
      JSON.stringify('é'.repeat(12)), `"${'\\n'.repeat(30)}"`, `"${'\\u00e9'.repeat(200)}"`, `"${'\\n'.repeat(70000)}"`,
      '"\\ud83d\\ude00"', '"\\ud83d"', '"\\ude00"', '"\\ud83dx"', '"\\ud83d\\u0041"', `"${'a'.repeat(70)}\\ud83d"`,
      '{"id":12345678901234567890}', '{"id":1e20,"s":"12345678901234567"}', '{"id":1e20}', '[0.1,0.1,0.1,0.1]', '1e400', '-0', '[-0.0]',
      '{"device":"d1","temp":21.5,"ok":true}', ' {} ', '[] x', '{"a" 1}', '{"a":}', '[1,]', '01', '1.', '.5', '+1', '-', 'tru', 'nul', 'falsey', '"\\x"', '"\\u12"', '"a\u0001"',
    ]) same(t)
  })

  it('payload - the firmware simulator telemetry goes the one-pass way, as CBOR', () => {
    const t = '{"device":"dev-0001","seq":12345,"ts":1765000000000,"temp":21.53,"hum":48.7,"bat":3.97,"rssi":-67,"status":"ok"}'
    same(t)
    expect(jsonToCbor(Buffer.from(t), t.length)).toBeInstanceOf(Buffer)
    expect(encodePayload(Buffer.from(t), true).contentType).toBe('application/cbor')
  })
})
