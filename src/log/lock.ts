// Single-writer lock on a data directory: a second gateway on the same directory fails fast.
//
// `<dataDir>/lock` holds "<pid> <start time in clock ticks>" of the owner. A lock whose process is
// gone, or whose pid now belongs to another process (different start time, as after a reboot or
// in a container where the gateway is pid 1 again), is stale and taken over. Linux only (/proc);
// where /proc is missing the lock is taken without the liveness check.
import fs from 'node:fs'
import path from 'node:path'
import { FerryError } from '../errors.js'

function startTicks(pid: string): string | undefined {
  try {
    const stat = fs.readFileSync(`/proc/${pid}/stat`, 'utf8')
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19]
  } catch {
    return undefined
  }
}

function self(): string {
  try {
    const pid = fs.readlinkSync('/proc/self')
    return `${pid} ${startTicks(pid) ?? '0'}`
  } catch {
    return `unknown ${Date.now()}`
  }
}

/** A held lock; `release()` removes it if it is still ours. */
export class DirLock {
  private constructor(
    private readonly file: string,
    private readonly owner: string,
  ) {}

  /** Takes the lock or throws FERRY_ERR_LOG_LOCKED naming the process that holds it. */
  static acquire(dir: string): DirLock {
    const file = path.join(dir, 'lock')
    const owner = self()
    try {
      fs.writeFileSync(file, owner + '\n', { flag: 'wx' })
      return new DirLock(file, owner)
    } catch (err) {
      if ((err as { code?: string }).code !== 'EEXIST') throw err
    }
    const held = fs.readFileSync(file, 'utf8').trim()
    const [pid, ticks] = held.split(' ')
    if (pid && ticks && held !== owner && startTicks(pid) === ticks) {
      throw new FerryError(
        'FERRY_ERR_LOG_LOCKED',
        `data directory ${dir} is in use by another Ferry (pid ${pid}); stop it or choose another --data-dir`,
      )
    }
    // Stale (its process is gone): take it over atomically.
    const tmp = `${file}.${owner.split(' ')[0]}.tmp`
    try {
      fs.writeFileSync(tmp, owner + '\n')
      fs.renameSync(tmp, file)
    } catch (err) {
      fs.rmSync(tmp, { force: true })
      if ((err as { code?: string }).code !== 'ENOSPC') throw new FerryError('FERRY_ERR_LOG_IO', `cannot take over the stale lock ${file}: ${(err as Error).message}`, { cause: err })
      // A full disk must not stop a restart: overwrite the old lock in place (its block is ours).
      const fd = fs.openSync(file, 'r+')
      try {
        const line = Buffer.from(owner + '\n')
        fs.writeSync(fd, line, 0, line.length, 0)
        fs.ftruncateSync(fd, line.length)
      } finally {
        fs.closeSync(fd)
      }
    }
    return new DirLock(file, owner)
  }

  /** The pid of the live process holding `dir`'s lock, or undefined (free, or held by a process that is gone). */
  static holder(dir: string): number | undefined {
    let held: string
    try {
      held = fs.readFileSync(path.join(dir, 'lock'), 'utf8').trim()
    } catch {
      return undefined
    }
    const [pid, ticks] = held.split(' ')
    return pid && ticks && startTicks(pid) === ticks ? Number(pid) : undefined
  }

  release(): void {
    try {
      if (fs.readFileSync(this.file, 'utf8').trim() === this.owner) fs.unlinkSync(this.file)
    } catch {
      // already gone
    }
  }
}
