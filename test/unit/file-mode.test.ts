// Permission checks on credential and ACL files (issue 11, item 11): writable by group or others is
// refused, naming the file, its mode and the fix; a credentials file others can read is a warning.
import fs from 'node:fs'
import path from 'node:path'
import { beforeAll, describe, expect, it } from 'vitest'
import { Acl, Passwords, hashPassword, readPem } from '../../src/auth/index.js'
import { judgeMode } from '../../src/auth/file-mode.js'
import { FerryError } from '../../src/errors.js'
import { tempDir } from '../helpers/log.js'

let ENTRY = ''

function file(dir: string, name: string, text: string, mode: number): string {
  const f = path.join(dir, name)
  fs.writeFileSync(f, text)
  fs.chmodSync(f, mode)
  return f
}

function thrown(fn: () => unknown): FerryError {
  try {
    fn()
  } catch (err) {
    return err as FerryError
  }
  throw new Error('did not throw')
}

describe('file mode', () => {
  beforeAll(async () => {
    ENTRY = `dev1:${await hashPassword('pw', { ln: 10, r: 8, p: 1 })}\n`
  })

  it('file mode - judgeMode refuses group or others write, warns only on others read of a secret', () => {
    expect(judgeMode('/f', '--auth-file', 0o100600, true)).toEqual({})
    expect(judgeMode('/f', '--auth-file', 0o100640, true)).toEqual({})
    expect(judgeMode('/f', '--acl-file', 0o100644, false)).toEqual({})
    expect(judgeMode('/f', '--auth-file', 0o100644, true).warning).toBe('--auth-file /f is readable by others (mode 0644); run chmod 600 /f (or chmod 640 for a group the gateway runs in)')
    expect(judgeMode('/f', '--acl-file', 0o100664, false).refusal).toContain('writable by group (mode 0664)')
    expect(judgeMode('/f', '--acl-file', 0o100646, false).refusal).toContain('writable by others (mode 0646)')
    expect(judgeMode('/f', '--auth-file', 0o100666, true).refusal).toBe('--auth-file /f is writable by group and others (mode 0666): whoever can write it controls who gets in; run chmod go-w /f (or chmod 600 /f)')
  })

  it('file mode - a credentials, ACL or TLS file writable by group or others is refused with its code, mode and fix', () => {
    const dir = tempDir('ferry-mode-')
    const auth = file(dir, 'devices.passwd', ENTRY, 0o666)
    const e1 = thrown(() => Passwords.load(auth))
    expect(e1.code).toBe('FERRY_ERR_AUTH_FILE')
    expect(e1.message).toBe(`refused: --auth-file ${auth} is writable by group and others (mode 0666): whoever can write it controls who gets in; run chmod go-w ${auth} (or chmod 600 ${auth})`)
    const acl = file(dir, 'devices.acl', 'topic read x/#\n', 0o620)
    const e2 = thrown(() => Acl.load(acl))
    expect(e2.code).toBe('FERRY_ERR_ACL_FILE')
    expect(e2.message).toContain(`--acl-file ${acl} is writable by group (mode 0620)`)
    const key = file(dir, 'server.key', 'x', 0o602)
    const e3 = thrown(() => readPem(key, '--tls-key'))
    expect(e3.code).toBe('FERRY_ERR_TLS')
    expect(e3.message).toContain(`--tls-key ${key} is writable by others (mode 0602)`)
  })

  it('file mode - an owner-only file loads; a world-readable credentials file loads with a warning', () => {
    const dir = tempDir('ferry-mode-')
    expect(Passwords.load(file(dir, 'a.passwd', ENTRY, 0o600)).warning).toBeUndefined()
    const open = file(dir, 'b.passwd', ENTRY, 0o644)
    const p = Passwords.load(open)
    expect(p.size).toBe(1)
    expect(p.warning).toContain(`--auth-file ${open} is readable by others (mode 0644)`)
    expect(Acl.load(file(dir, 'c.acl', 'topic read x/#\n', 0o644)).ruleCount).toBe(1)
  })
})
