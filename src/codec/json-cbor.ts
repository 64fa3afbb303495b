// JSON text → plain CBOR in one pass over the bytes, without building JavaScript values: the fast
// path of encodePayload (payload.ts). Its output is byte for byte what cbor-x 1.6.9 gives for
// JSON.parse of the same text with payload.ts's encoder options (preferred serialization, maps sized
// exactly, integers in 32 bits as CBOR integers, every other number a float64). Whatever it cannot
// transcode identically it gives up on (`undefined`) and payload.ts takes the parse-then-encode
// path: invalid JSON; integers JSON.parse rounds (beyond 2^53); object keys that are array indices
// ("0", "7": JSON.parse puts them first), duplicate keys (JSON.parse keeps the last value at the
// first key's place), "__proto__" and "constructor"; lone surrogates (\ud800); nesting deeper than
// MAX_DEPTH; objects of more than MAX_KEYS keys. test/unit/json-cbor.test.ts holds the old encoder
// as the oracle and compares bytes over arbitrary JSON.

/** Containers nested deeper than this go the parse path. */
const MAX_DEPTH = 64
/** Objects with more keys go the parse path (the duplicate-key check is quadratic). */
const MAX_KEYS = 32

const EMPTY = Buffer.alloc(0)
let src: Buffer = EMPTY
let end = 0
let i = 0
/** The output buffer kept between calls; a larger text gets one of its own for that call only (bounded memory). */
const SCRATCH = Buffer.allocUnsafeSlow(64 * 1024)
const SCRATCH_VIEW = new DataView(SCRATCH.buffer, SCRATCH.byteOffset, SCRATCH.byteLength)
let out: Buffer = SCRATCH
let p = 0
let view: DataView = SCRATCH_VIEW

/** Thrown (one shared object, no stack) to give up: the caller takes the parse path. */
const GIVE_UP = new Error('json-cbor: not transcoded')

const POW10 = [1e0, 1e1, 1e2, 1e3, 1e4, 1e5, 1e6, 1e7, 1e8, 1e9, 1e10, 1e11, 1e12, 1e13, 1e14, 1e15, 1e16, 1e17, 1e18, 1e19, 1e20, 1e21, 1e22]

/**
 * The CBOR of the JSON text `text` (valid UTF-8, checked by the caller); 'larger' when that CBOR
 * would be longer than `maxBytes`; undefined when this transcoder cannot produce exactly what
 * JSON.parse + cbor-x would (see the file comment), invalid JSON included.
 */
export function jsonToCbor(text: Uint8Array, maxBytes: number): Buffer | 'larger' | undefined {
  // Output is at most 3 bytes per input byte ("1.5" → a 9-byte float64), plus header widening.
  const need = text.length * 3 + 64
  if (need > SCRATCH.length) {
    out = Buffer.allocUnsafeSlow(need)
    view = new DataView(out.buffer, out.byteOffset, out.byteLength)
  }
  src = Buffer.isBuffer(text) ? text : Buffer.from(text.buffer, text.byteOffset, text.byteLength)
  end = text.length
  i = 0
  p = 0
  try {
    skipWs()
    value(0)
    skipWs()
    if (i !== end) return undefined
    if (p > maxBytes) return 'larger'
    const data = Buffer.allocUnsafe(p)
    out.copy(data, 0, 0, p)
    return data
  } catch (err) {
    if (err === GIVE_UP) return undefined
    throw err
  } finally {
    src = EMPTY
    out = SCRATCH
    view = SCRATCH_VIEW
  }
}

function skipWs(): void {
  const s = src
  const e = end
  let j = i
  while (j < e) {
    const c = s[j]!
    if (c !== 0x20 && c !== 0x0a && c !== 0x0d && c !== 0x09) break
    j++
  }
  i = j
}

function value(depth: number): void {
  if (i >= end) throw GIVE_UP
  const c = src[i]!
  if (c === 0x22) return string(false)
  if (c === 0x7b) return object(depth + 1)
  if (c === 0x5b) return array(depth + 1)
  if (c === 0x74) return literal(0x72, 0x75, 0x65, 0xf5) // true
  if (c === 0x66) {
    // false
    if (i + 5 <= end && src[i + 1] === 0x61 && src[i + 2] === 0x6c && src[i + 3] === 0x73 && src[i + 4] === 0x65) {
      i += 5
      out[p++] = 0xf4
      return
    }
    throw GIVE_UP
  }
  if (c === 0x6e) return literal(0x75, 0x6c, 0x6c, 0xf6) // null
  return number()
}

function literal(b1: number, b2: number, b3: number, code: number): void {
  if (i + 4 <= end && src[i + 1] === b1 && src[i + 2] === b2 && src[i + 3] === b3) {
    i += 4
    out[p++] = code
    return
  }
  throw GIVE_UP
}

/** Writes the head of a major type with minimal length bytes at `at` (which has room). */
function headAt(at: number, major: number, n: number): number {
  if (n < 0x18) {
    out[at] = major | n
    return at + 1
  }
  if (n < 0x100) {
    out[at] = major | 0x18
    out[at + 1] = n
    return at + 2
  }
  if (n < 0x10000) {
    out[at] = major | 0x19
    out[at + 1] = n >> 8
    out[at + 2] = n & 0xff
    return at + 3
  }
  out[at] = major | 0x1a
  view.setUint32(at + 1, n)
  return at + 5
}

/** Widens the 1-byte head reserved at `at` for `n` items written after it (n ≥ 24) and writes it. */
function closeHead(at: number, major: number, n: number): void {
  if (n < 0x18) {
    out[at] = major | n
    return
  }
  const extra = n < 0x100 ? 1 : n < 0x10000 ? 2 : 4
  if (p + extra > out.length) throw GIVE_UP
  out.copyWithin(at + 1 + extra, at + 1, p)
  p += extra
  headAt(at, major, n)
}

function array(depth: number): void {
  if (depth > MAX_DEPTH) throw GIVE_UP
  i++ // [
  const head = p++
  let n = 0
  skipWs()
  if (i < end && src[i] === 0x5d) {
    i++
    out[head] = 0x80
    return
  }
  for (;;) {
    skipWs()
    value(depth)
    n++
    skipWs()
    if (i >= end) throw GIVE_UP
    const c = src[i++]
    if (c === 0x2c) continue
    if (c === 0x5d) break
    throw GIVE_UP
  }
  closeHead(head, 0x80, n)
}

// Where each key of the objects being written starts and ends in `out` (duplicate check), per depth.
const keyStarts = new Int32Array(MAX_KEYS * (MAX_DEPTH + 1))
const keyEnds = new Int32Array(MAX_KEYS * (MAX_DEPTH + 1))

function object(depth: number): void {
  if (depth > MAX_DEPTH) throw GIVE_UP
  i++ // {
  const head = p++
  let n = 0
  skipWs()
  if (i < end && src[i] === 0x7d) {
    i++
    out[head] = 0xa0
    return
  }
  const base = depth * MAX_KEYS
  for (;;) {
    skipWs()
    if (i >= end || src[i] !== 0x22 || n >= MAX_KEYS) throw GIVE_UP
    const k = p
    string(true)
    // The same key twice: JSON.parse keeps the last value at the first key's place.
    const len = p - k
    for (let j = base; j < base + n; j++) {
      const s = keyStarts[j]!
      if (keyEnds[j]! - s !== len) continue
      let same = true
      for (let b = 0; b < len; b++) {
        if (out[s + b] !== out[k + b]) {
          same = false
          break
        }
      }
      if (same) throw GIVE_UP
    }
    keyStarts[base + n] = k
    keyEnds[base + n] = p
    skipWs()
    if (i >= end || src[i] !== 0x3a) throw GIVE_UP
    i++
    skipWs()
    value(depth)
    n++
    skipWs()
    if (i >= end) throw GIVE_UP
    const c = src[i++]
    if (c === 0x2c) continue
    if (c === 0x7d) break
    throw GIVE_UP
  }
  closeHead(head, 0xa0, n)
}

function hex(c: number): number {
  if (c >= 0x30 && c <= 0x39) return c - 0x30
  if (c >= 0x61 && c <= 0x66) return c - 0x57
  if (c >= 0x41 && c <= 0x46) return c - 0x37
  throw GIVE_UP
}

function u4(at: number): number {
  if (at + 4 > end) throw GIVE_UP
  return (hex(src[at]!) << 12) | (hex(src[at + 1]!) << 8) | (hex(src[at + 2]!) << 4) | hex(src[at + 3]!)
}

/** A JSON string at `i` as a CBOR text string. `key`: refuses the keys JSON.parse treats specially. */
function string(key: boolean): void {
  const s = src
  const e = end
  const start = ++i // after the opening quote
  let j = start
  let escaped = false
  for (;;) {
    if (j >= e) throw GIVE_UP
    const c = s[j]!
    if (c === 0x22) break
    if (c < 0x20) throw GIVE_UP // raw control characters are not JSON
    if (c === 0x5c) {
      escaped = true
      j += 2
      continue
    }
    j++
  }
  if (!escaped) {
    const len = j - start
    p = headAt(p, 0x60, len)
    const at = p
    // A byte loop: device strings are short, and a native copy would first need a view object.
    const o = out
    if (len <= 512) {
      let q = p
      for (let b = start; b < j; b++) o[q++] = s[b]!
      p = q
    } else {
      s.copy(o, p, start, j)
      p += len
    }
    i = j + 1
    if (key) checkKey(at, len)
    return
  }
  // With escapes: decode into `out` after a 1-byte head, widened at the end if needed.
  const head = p++
  const at = p
  let b = start
  while (b < j) {
    const c = s[b]!
    if (c !== 0x5c) {
      out[p++] = c
      b++
      continue
    }
    const esc = s[b + 1]!
    b += 2
    switch (esc) {
      case 0x22:
        out[p++] = 0x22
        break
      case 0x5c:
        out[p++] = 0x5c
        break
      case 0x2f:
        out[p++] = 0x2f
        break
      case 0x62:
        out[p++] = 0x08
        break
      case 0x66:
        out[p++] = 0x0c
        break
      case 0x6e:
        out[p++] = 0x0a
        break
      case 0x72:
        out[p++] = 0x0d
        break
      case 0x74:
        out[p++] = 0x09
        break
      case 0x75: {
        let cp = u4(b)
        b += 4
        if (cp >= 0xd800 && cp <= 0xdfff) {
          // Only a high surrogate escape followed by a low one is a character; a lone one gives up
          // (cbor-x writes it differently depending on the string's length).
          if (cp >= 0xdc00 || b + 6 > j || src[b] !== 0x5c || src[b + 1] !== 0x75) throw GIVE_UP
          const lo = u4(b + 2)
          if (lo < 0xdc00 || lo > 0xdfff) throw GIVE_UP
          b += 6
          cp = 0x10000 + ((cp - 0xd800) << 10) + (lo - 0xdc00)
        }
        if (cp < 0x80) out[p++] = cp
        else if (cp < 0x800) {
          out[p++] = 0xc0 | (cp >> 6)
          out[p++] = 0x80 | (cp & 0x3f)
        } else if (cp < 0x10000) {
          out[p++] = 0xe0 | (cp >> 12)
          out[p++] = 0x80 | ((cp >> 6) & 0x3f)
          out[p++] = 0x80 | (cp & 0x3f)
        } else {
          out[p++] = 0xf0 | (cp >> 18)
          out[p++] = 0x80 | ((cp >> 12) & 0x3f)
          out[p++] = 0x80 | ((cp >> 6) & 0x3f)
          out[p++] = 0x80 | (cp & 0x3f)
        }
        break
      }
      default:
        throw GIVE_UP
    }
  }
  i = j + 1
  const len = p - at
  closeHead(head, 0x60, len)
  if (key) checkKey(p - len, len)
}

/** Gives up on keys JSON.parse + cbor-x do not keep in place as plain keys. */
function checkKey(at: number, len: number): void {
  if (len === 0) return
  const c = out[at]!
  // An array index ("0", "42"): JSON.parse orders such keys first. Any all-digit key gives up.
  if (c >= 0x30 && c <= 0x39) {
    let digits = true
    for (let b = at + 1; b < at + len; b++) {
      const d = out[b]!
      if (d < 0x30 || d > 0x39) {
        digits = false
        break
      }
    }
    if (digits) throw GIVE_UP
  }
  // "__proto__" and "constructor" (cbor-x reads value.constructor).
  if ((len === 9 && c === 0x5f && out.toString('latin1', at, at + len) === '__proto__') || (len === 11 && c === 0x63 && out.toString('latin1', at, at + len) === 'constructor')) throw GIVE_UP
}

/** A JSON number at `i`, its value as JSON.parse gives it, written as cbor-x writes it. */
function number(): void {
  const s = src
  const e = end
  const start = i
  let j = i
  let neg = false
  if (j < e && s[j] === 0x2d) {
    neg = true
    j++
  }
  let mant = 0
  let digits = 0
  let c = j < e ? s[j]! : 0
  if (c === 0x30) {
    j++
  } else if (c >= 0x31 && c <= 0x39) {
    do {
      mant = mant * 10 + (c - 0x30)
      digits++
      c = ++j < e ? s[j]! : 0
    } while (c >= 0x30 && c <= 0x39)
  } else throw GIVE_UP
  let exp10 = 0
  let simple = true
  c = j < e ? s[j]! : 0
  if (c === 0x2e) {
    c = ++j < e ? s[j]! : 0
    if (c < 0x30 || c > 0x39) throw GIVE_UP
    do {
      if (mant !== 0 || c !== 0x30) digits++
      mant = mant * 10 + (c - 0x30)
      exp10--
      c = ++j < e ? s[j]! : 0
    } while (c >= 0x30 && c <= 0x39)
  }
  if (c === 0x65 || c === 0x45) {
    c = ++j < e ? s[j]! : 0
    let eneg = false
    if (c === 0x2b || c === 0x2d) {
      eneg = c === 0x2d
      c = ++j < e ? s[j]! : 0
    }
    if (c < 0x30 || c > 0x39) throw GIVE_UP
    let x = 0
    let xdigits = 0
    do {
      x = x * 10 + (c - 0x30)
      xdigits++
      c = ++j < e ? s[j]! : 0
    } while (c >= 0x30 && c <= 0x39)
    if (xdigits > 6) simple = false
    exp10 += eneg ? -x : x
  }
  i = j
  let v: number
  // Clinger's fast path: a mantissa of at most 15 digits and a power of ten up to 1e22 are exact
  // doubles, so one multiplication or division rounds correctly, as JSON.parse does.
  if (simple && digits <= 15 && exp10 >= -22 && exp10 <= 22) {
    v = exp10 === 0 ? mant : exp10 < 0 ? mant / POW10[-exp10]! : mant * POW10[exp10]!
    if (neg) v = -v
  } else {
    v = Number(s.toString('latin1', start, j))
  }
  // JSON.parse rounds integers beyond 2^53: payload.ts decides about those texts.
  if ((v >= 9007199254740992 || v <= -9007199254740992) && Number.isInteger(v)) throw GIVE_UP
  writeNumber(v)
}

/** As cbor-x 1.6.9 writes a number with useFloat32 unset (encode.js, `type === 'number'`). */
function writeNumber(v: number): void {
  if (v >>> 0 === v) {
    p = headAt(p, 0x00, v)
  } else if (v >> 0 === v) {
    p = headAt(p, 0x20, -1 - v)
  } else if (v < 0 && v >= -0x100000000 && Math.floor(v) === v) {
    out[p] = 0x3a
    view.setUint32(p + 1, -1 - v)
    p += 5
  } else {
    out[p] = 0xfb
    view.setFloat64(p + 1, v)
    p += 9
  }
}
