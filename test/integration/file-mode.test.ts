// Credential and ACL files writable by group or others (issue 11, item 11): refused at start (exit 2,
// naming the file, its mode and the fix) and by `ferry check`; a SIGHUP reload with such a file keeps
// the old rules. Bundled gateway, real nats-server, mqtt.js.
import { spawn } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'
import mqtt from 'mqtt'
import { afterAll, beforeAll, describe, expect, it } from 'vitest'
import { runFerry, spawnGateway } from '../helpers/gateway.js'
import type { GatewayProcess } from '../helpers/gateway.js'
import { until } from '../helpers/device.js'
import { tempDir } from '../helpers/log.js'
import { startNats } from '../helpers/nats.js'
import type { NatsServer } from '../helpers/nats.js'

/** `ferry passwd FILE DEVICE` with the password on stdin. */
function passwd(file: string, device: string, password: string): Promise<number | null> {
  const child = spawn(process.execPath, ['dist/ferry.cjs', 'passwd', file, device], { stdio: ['pipe', 'ignore', 'ignore'] })
  child.stdin.end(`${password}\n`)
  return new Promise((resolve) => child.once('exit', (code) => resolve(code)))
}

/** CONNACK return code of one login (0 accepted), the client closed at once. */
function login(port: number, id: string, password: string): Promise<number> {
  const c = mqtt.connect(`mqtt://127.0.0.1:${port}`, { reconnectPeriod: 0, connectTimeout: 5000, clientId: id, username: id, password })
  return new Promise((resolve) => {
    c.once('connect', () => {
      c.end(true)
      resolve(0)
    })
    c.once('error', (err) => {
      c.end(true)
      const code = (err as { code?: unknown }).code
      resolve(typeof code === 'number' ? code : -1)
    })
    c.once('close', () => resolve(-2))
  })
}

describe('file mode', () => {
  let nats: NatsServer
  let dir: string
  let authFile: string
  let aclFile: string

  beforeAll(async () => {
    nats = await startNats()
    dir = tempDir('ferry-mode-')
    authFile = path.join(dir, 'devices.passwd')
    aclFile = path.join(dir, 'devices.acl')
    for (const d of ['dev1', 'dev2']) expect(await passwd(authFile, d, `pw-${d}`)).toBe(0)
    fs.writeFileSync(aclFile, 'pattern write devices/%u/#\n', { mode: 0o600 })
  }, 30_000)

  afterAll(async () => {
    await nats?.stop()
  })

  it('file mode - a credentials file writable by group and others stops the start with exit 2, the file, its mode and the fix', async () => {
    const open = path.join(dir, 'open.passwd')
    fs.copyFileSync(authFile, open)
    fs.chmodSync(open, 0o666)
    const r = await runFerry(['run', '--data-dir', path.join(dir, 'd1'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--http-listen', '127.0.0.1:0', '--auth-file', open])
    expect(r.code).toBe(2)
    expect(r.stderr + r.stdout).toContain(`--auth-file ${open} is writable by group and others (mode 0666)`)
    expect(r.stderr + r.stdout).toContain(`chmod go-w ${open}`)
  }, 30_000)

  it('file mode - ferry check reports a group-writable ACL file (exit 2) and warns about a world-readable credentials file', async () => {
    const acl = path.join(dir, 'group.acl')
    fs.writeFileSync(acl, 'pattern write devices/%u/#\n')
    fs.chmodSync(acl, 0o664)
    const readable = path.join(dir, 'readable.passwd')
    fs.copyFileSync(authFile, readable)
    fs.chmodSync(readable, 0o644)
    const bad = await runFerry(['check', '--data-dir', path.join(dir, 'd2'), '--nats-url', nats.url, '--auth-file', authFile, '--acl-file', acl])
    expect(bad.code).toBe(2)
    expect(bad.stderr).toContain(`--acl-file ${acl} is writable by group (mode 0664)`)
    const warned = await runFerry(['check', '--data-dir', path.join(dir, 'd2'), '--nats-url', nats.url, '--auth-file', readable, '--acl-file', aclFile])
    expect(warned.code).toBe(0)
    expect(warned.stderr).toContain(`--auth-file ${readable} is readable by others (mode 0644); run chmod 600 ${readable}`)
  }, 30_000)

  describe('reload', () => {
    let gw: GatewayProcess

    beforeAll(async () => {
      gw = await spawnGateway(['--data-dir', path.join(dir, 'd3'), '--nats-url', nats.url, '--mqtt-listen', '127.0.0.1:0', '--auth-file', authFile, '--acl-file', aclFile])
    }, 30_000)

    afterAll(async () => {
      await gw?.kill('SIGTERM')
    })

    it('file mode - SIGHUP with a writable credentials file keeps the old rules and logs why; fixed, the next SIGHUP applies it', async () => {
      expect(await login(gw.port, 'dev2', 'pw-dev2')).toBe(0)
      // Someone with group write access removes dev2... and loosens the mode.
      fs.writeFileSync(authFile, fs.readFileSync(authFile, 'utf8').split('\n').filter((l) => !l.startsWith('dev2:')).join('\n'))
      fs.chmodSync(authFile, 0o660)
      const failed = gw.output().split('reload failed').length
      gw.child.kill('SIGHUP')
      expect(await until(() => gw.output().split('reload failed').length > failed, 5000)).toBe(true)
      expect(gw.output()).toContain(`--auth-file ${authFile} is writable by group (mode 0660)`)
      expect(await login(gw.port, 'dev2', 'pw-dev2')).toBe(0) // the old rules stay in force
      fs.chmodSync(authFile, 0o600)
      const reloads = gw.output().split('credentials and ACL reloaded').length
      gw.child.kill('SIGHUP')
      expect(await until(() => gw.output().split('credentials and ACL reloaded').length > reloads, 5000)).toBe(true)
      expect(await login(gw.port, 'dev2', 'pw-dev2')).toBe(4)
      expect(await login(gw.port, 'dev1', 'pw-dev1')).toBe(0)
    }, 30_000)
  })
})
