// Admission rules without sockets: ACL parsing and matching, credentials file parsing and verification.
import fc from 'fast-check'
import { describe, expect, it } from 'vitest'
import { Acl, Passwords, filterCovers, filtersOverlap, hashPassword, parsePasswordFile, parseSubjectAltName } from '../../src/auth/index.js'
import { topicMatches } from '../../src/codec/index.js'

const level = fc.constantFrom('a', 'b', 'c', '+', '$x')
const filter = fc
  .tuple(fc.array(level, { minLength: 1, maxLength: 4 }), fc.boolean())
  .map(([ls, hash]) => [...ls.map((l, i) => (i > 0 && l === '$x' ? 'x' : l)), ...(hash ? ['#'] : [])].join('/'))
const topic = fc.array(fc.constantFrom('a', 'b', 'c'), { minLength: 1, maxLength: 5 }).map((ls) => ls.join('/'))

describe('ACL', () => {
  it('acl - filterCovers(outer, inner) implies every topic inner matches, outer matches', () => {
    fc.assert(
      fc.property(filter, filter, topic, (outer, inner, t) => {
        if (filterCovers(outer, inner) && topicMatches(inner, t)) expect(topicMatches(outer, t)).toBe(true)
        if (topicMatches(outer, t) && topicMatches(inner, t)) expect(filtersOverlap(outer, inner)).toBe(true)
      }),
      { numRuns: 2000 },
    )
    expect(filterCovers('devices/a/#', 'devices/a/+/x')).toBe(true)
    expect(filterCovers('devices/+/x', 'devices/#')).toBe(false)
    expect(filterCovers('#', '$SYS/#')).toBe(false)
  })

  it('acl - patterns expand %u and %c, but never for identities holding wildcards or "/"', () => {
    const acl = Acl.parse('pattern write devices/%u/#\npattern read commands/%c\npattern deny devices/+/secret\nuser ops\ntopic read devices/#\n')
    expect(acl.canPublish('d1', 'c1', 'devices/d1/t')).toBe(true)
    expect(acl.canPublish('d1', 'c1', 'devices/d2/t')).toBe(false)
    expect(acl.canPublish('d1', 'c1', 'devices/d1/secret')).toBe(false) // deny wins
    expect(acl.canSubscribe('d1', 'c1', 'commands/c1')).toBe(true)
    expect(acl.canSubscribe('d1', 'c1', 'commands/+')).toBe(false)
    for (const evil of ['+', '#', 'a/b', 'x\u0000', '%c']) {
      expect(acl.canPublish(evil, 'c1', `devices/${evil === '+' ? 'd2' : 'd1'}/t`)).toBe(false)
      expect(acl.canSubscribe('d1', evil, 'commands/#')).toBe(false)
    }
    expect(acl.canPublish('%c', 'victim', 'devices/victim/t')).toBe(false) // "%c" as identity is not expanded again
    // Mosquitto's rule: a deny rule refuses only a filter it matches; what a wildcard brings is checked per message.
    expect(acl.canSubscribe('ops', 'o', 'devices/#')).toBe(true)
    expect(acl.canRead('ops', 'o', 'devices/d1/secret')).toBe(false)
    expect(acl.canSubscribe('ops', 'o', 'devices/+/secret')).toBe(false)
    expect(acl.canSubscribe('ops', 'o', 'devices/d1/secret')).toBe(false)
    expect(acl.canSubscribe('ops', 'o', 'devices/d1/t')).toBe(true)
    expect(acl.canPublish(undefined, 'anon', 'devices/anon/t')).toBe(false) // anonymous: no patterns, no rules
  })

  it('acl - read everything except one topic: wildcards are granted, the denied topic is refused and never read', () => {
    const acl = Acl.parse('user ops\ntopic read #\ntopic deny sensors/secret\nuser dev\ntopic read sensors/+\n')
    for (const f of ['#', 'sensors/#', 'sensors/+', '+/secret', 'other/x']) expect(acl.canSubscribe('ops', 'o', f)).toBe(true)
    expect(acl.canSubscribe('ops', 'o', 'sensors/secret')).toBe(false)
    expect(acl.canRead('ops', 'o', 'sensors/secret')).toBe(false)
    expect(acl.canRead('ops', 'o', 'sensors/public')).toBe(true)
    expect(acl.canSubscribe('ops', 'o', '$SYS/#')).toBe(false) // "#" in a rule's first level does not match "$" topics
    // A read rule matches the filter's text: "sensors/+" grants sensors/+ and sensors/a, not sensors/# nor #.
    expect(acl.canSubscribe('dev', 'd', 'sensors/+')).toBe(true)
    expect(acl.canSubscribe('dev', 'd', 'sensors/a')).toBe(true)
    expect(acl.canSubscribe('dev', 'd', 'sensors/#')).toBe(true) // "+" matches the level "#"; deeper topics fail canRead
    expect(acl.canRead('dev', 'd', 'sensors/a/b')).toBe(false)
    expect(acl.canSubscribe('dev', 'd', '#')).toBe(false)
    expect(acl.canSubscribe('dev', 'd', 'sensors/a/b')).toBe(false)
  })

  it('acl - rules before any user line are the anonymous rules; every bad line is reported', () => {
    const acl = Acl.parse('topic read public/#\nuser u\ntopic write u/#\n')
    expect(acl.canSubscribe(undefined, 'x', 'public/a')).toBe(true)
    expect(acl.canSubscribe('u', 'x', 'public/a')).toBe(false)
    expect(() => Acl.parse('topic red a/b\nuser\ntopic a/#/b\ntopic write x/%u\nfoo\n', 'f.acl')).toThrow(
      /f\.acl: line 1: unknown access "red".*line 2: "user" needs a name.*line 3: .*line 4: %u and %c expand only in "pattern" rules.*line 5/,
    )
  })
})

describe('credentials', () => {
  it('passwords - verify accepts the password, refuses others, and unknown devices', async () => {
    const line = await hashPassword('s3cret', { ln: 10, r: 8, p: 1 })
    const p = new Passwords(parsePasswordFile(`# comment\n\ndev:${line}\n`, 'f'))
    expect(await p.verify('dev', Buffer.from('s3cret'))).toBe(true)
    expect(await p.verify('dev', Buffer.from('s3cret'))).toBe(true) // remembered
    expect(await p.verify('dev', Buffer.from('wrong'))).toBe(false)
    expect(await p.verify('nobody', Buffer.from('s3cret'))).toBe(false)
  })

  it('passwords - bad lines and duplicates are reported with their line numbers', () => {
    expect(() => parsePasswordFile('a:plain\nb:$scrypt$ln=30,r=8,p=1$AA==$AA==\n', 'f')).toThrow(/line 1: expected.*line 2: scrypt cost ln=30/)
    // Within the ranges but beyond what scrypt may allocate: refused when read, not at every login.
    expect(() => parsePasswordFile('c:$scrypt$ln=18,r=8,p=1$AA==$AA==\n', 'f')).toThrow(/line 1: scrypt cost ln=18,r=8/)
    expect(() => parsePasswordFile('a:$scrypt$ln=10,r=8,p=1$AA==$AA==\na:$scrypt$ln=10,r=8,p=1$AA==$AA==\n', 'f')).toThrow(/line 2: device "a" appears twice/)
  })
})

describe('certificate SAN', () => {
  it('san - entries are split the way Node writes them; a type is only what precedes the first ":"', () => {
    expect(parseSubjectAltName('email:xDNS:dev1, DNS:mallory')).toEqual([
      { type: 'email', value: 'xDNS:dev1' },
      { type: 'DNS', value: 'mallory' },
    ])
    // Node writes a value holding a comma as a JSON string (here with the comma escaped).
    expect(parseSubjectAltName('DNS:"a\\u002c DNS:dev1", DNS:mallory')).toEqual([
      { type: 'DNS', value: 'a, DNS:dev1' },
      { type: 'DNS', value: 'mallory' },
    ])
    expect(parseSubjectAltName('IP Address:127.0.0.1, URI:spiffe://x/dev2')).toEqual([
      { type: 'IP Address', value: '127.0.0.1' },
      { type: 'URI', value: 'spiffe://x/dev2' },
    ])
    expect(parseSubjectAltName('')).toEqual([])
    for (const bad of ['DNS', 'DNS:"open', 'DNS:"a"x', ', DNS:a', 'DNS:a, ', ':a']) expect(parseSubjectAltName(bad)).toBeUndefined()
  })

  it('san - any list of entries, formatted as Node does, parses back to the same list', () => {
    const type = fc.constantFrom('DNS', 'URI', 'email', 'IP Address', 'othername')
    const value = fc.string({ unit: 'binary', maxLength: 12 })
    const format = (v: string): string => (/[,"\\]|[^\x20-\x7e]/.test(v) || v.startsWith('"') ? JSON.stringify(v) : v)
    fc.assert(
      fc.property(fc.array(fc.record({ type, value }), { maxLength: 5 }), (entries) => {
        const text = entries.map((e) => `${e.type}:${format(e.value)}`).join(', ')
        expect(parseSubjectAltName(text)).toEqual(entries)
      }),
      { numRuns: 1000 },
    )
  })
})
