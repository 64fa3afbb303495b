// Device-controlled text in CLI output (issue 11, item 11): controls, bidirectional overrides and
// other invisible characters are escaped, so a client id cannot reorder or hide the output around it.
import { describe, expect, it } from 'vitest'
import { printable, printableJson } from '../../src/cli/log-tools.js'

const BIDI = [0x202a, 0x202b, 0x202c, 0x202d, 0x202e, 0x2066, 0x2067, 0x2068, 0x2069, 0x200e, 0x200f, 0x061c]
const INVISIBLE = [0x200b, 0x200c, 0x200d, 0x2060, 0xfeff, 0x00ad, 0x2028, 0x2029, 0xe0041]

describe('cli text', () => {
  it('cli text - bidirectional overrides, isolates and marks are written \\u{XXXX}', () => {
    for (const cp of BIDI) expect(printable(`dev${String.fromCodePoint(cp)}1`)).toBe(`dev\\u{${cp.toString(16).toUpperCase().padStart(4, '0')}}1`)
    expect(printable('invoice\u202Egpj.exe')).toBe('invoice\\u{202E}gpj.exe')
  })

  it('cli text - zero-width, separators, tags and lone surrogates are escaped too', () => {
    for (const cp of INVISIBLE) expect(printable(String.fromCodePoint(cp))).toMatch(/^\\u\{[0-9A-F]{4,5}\}$/)
    expect(printable('a\uD800b')).toBe('a\\u{D800}b')
  })

  it('cli text - C0 and C1 controls are written \\xNN, and a backslash is doubled', () => {
    expect(printable('a\x1b[31mb\x00\x7f\x85\x9f')).toBe('a\\x1b[31mb\\x00\\x7f\\x85\\x9f')
    expect(printable('dev\\u{202E}')).toBe('dev\\\\u{202E}')
  })

  it('cli text - ordinary text, accents and other scripts are unchanged', () => {
    for (const s of ['sensor-1', 'site7/pump', 'éèü', 'مضخة', '温度计', '🌡️', '']) expect(printable(s)).toBe(s)
  })

  it('cli text - JSON output escapes the same characters and still parses to the same data', () => {
    const value = { clientId: 'dev\u202E1\u2066\u200B\x85\u{E0041}', address: '127.0.0.1', n: 3 }
    const text = printableJson(value, 2)
    expect(text).not.toMatch(/[\u202E\u2066\u200B\x85]/u)
    expect(text).not.toMatch(/\u{E0041}/u)
    expect(text).toContain('\\u202e')
    expect(JSON.parse(text)).toEqual(value)
  })
})
