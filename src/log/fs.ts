// The ring log's file-system seam: the few calls the log makes, so tests can inject faults.
import fs from 'node:fs'
import { promisify } from 'node:util'

/** File-system calls used by the log. Every method rejects with the system error (code ENOSPC, EIO, ...). */
export interface LogFs {
  open(path: string, flags: string): Promise<number>
  close(fd: number): Promise<void>
  /** Positional write; resolves with the bytes written (may be short). */
  write(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number>
  read(fd: number, buf: Uint8Array, offset: number, length: number, position: number): Promise<number>
  fdatasync(fd: number): Promise<void>
  ftruncate(fd: number, length: number): Promise<void>
  fsize(fd: number): Promise<number>
  unlink(path: string): Promise<void>
  rename(from: string, to: string): Promise<void>
  readdir(dir: string): Promise<string[]>
  mkdir(dir: string): Promise<void>
  /** fsync of a directory, so a created, renamed or removed entry survives power loss. */
  fsyncDir(dir: string): Promise<void>
}

const pOpen = promisify(fs.open)
const pClose = promisify(fs.close)
const pFdatasync = promisify(fs.fdatasync)
const pFtruncate = promisify(fs.ftruncate)
const pFstat = promisify(fs.fstat)
const pFsync = promisify(fs.fsync)

/** The real file system (Node's libuv thread pool). */
export const nodeFs: LogFs = {
  open: (p, flags) => pOpen(p, flags),
  close: (fd) => pClose(fd),
  write: (fd, buf, offset, length, position) =>
    new Promise((resolve, reject) => {
      fs.write(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)))
    }),
  read: (fd, buf, offset, length, position) =>
    new Promise((resolve, reject) => {
      fs.read(fd, buf, offset, length, position, (err, n) => (err ? reject(err) : resolve(n)))
    }),
  fdatasync: (fd) => pFdatasync(fd),
  ftruncate: (fd, length) => pFtruncate(fd, length),
  fsize: async (fd) => (await pFstat(fd)).size,
  unlink: (p) => fs.promises.unlink(p),
  rename: (a, b) => fs.promises.rename(a, b),
  readdir: (d) => fs.promises.readdir(d),
  mkdir: async (d) => {
    await fs.promises.mkdir(d, { recursive: true })
  },
  fsyncDir: async (d) => {
    const fd = await pOpen(d, 'r')
    try {
      await pFsync(fd)
    } finally {
      await pClose(fd)
    }
  },
}

/** Writes all of `buf` at `position`, looping over short writes. */
export async function writeFully(fsys: LogFs, fd: number, buf: Uint8Array, position: number): Promise<void> {
  let done = 0
  while (done < buf.length) {
    const n = await fsys.write(fd, buf, done, buf.length - done, position + done)
    if (n <= 0) throw Object.assign(new Error(`short write of 0 bytes at ${position + done}`), { code: 'EIO' })
    done += n
  }
}
