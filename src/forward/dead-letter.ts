// The dead-letter file: messages JetStream rejects permanently, kept locally with the reason.
//
// `<dataDir>/dead-letter.jsonl`, one JSON object per line, fdatasync'd before the log cursor moves
// past the message: {"seq","epoch","ts","deadAt","reason","entry" (the log record body, base64)}.
// This module is the one place that knows the line format: the gateway writes lines with it, and the
// `ferry dlq` tools parse and rewrite them with it.
// Writes go through the log's file-system seam, off the event loop, one group at a time: dead
// letters that arrive while a write is under way share the next write and its fdatasync.
import path from 'node:path'
import { nodeFs, writeFully } from '../log/index.js'
import type { LogFs } from '../log/index.js'

export interface DeadLetter {
  readonly seq: number
  readonly epoch: number
  readonly ts: number
  readonly body: Buffer
  readonly reason: string
}

/** A dead letter as stored: with the time (ms since the epoch) it was written. */
export interface StoredDeadLetter extends DeadLetter {
  readonly deadAt: number
}

/** The file's name in the data directory. */
export const DEAD_LETTER_FILE = 'dead-letter.jsonl'

/** One line of the file, newline included. */
export function formatDeadLetter(d: StoredDeadLetter): string {
  return JSON.stringify({ seq: d.seq, epoch: d.epoch, ts: d.ts, deadAt: d.deadAt, reason: d.reason, entry: d.body.toString('base64') }) + '\n'
}

/** The dead letters in the file's text, in file order; blank lines are skipped, a line that is not JSON throws. */
export function parseDeadLetters(text: string): StoredDeadLetter[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const o = JSON.parse(l) as { seq: number; epoch: number; ts: number; deadAt: number; reason: string; entry: string }
      return { seq: o.seq, epoch: o.epoch, ts: o.ts, deadAt: o.deadAt, reason: o.reason, body: Buffer.from(o.entry, 'base64') }
    })
}

interface Waiting {
  readonly line: Buffer
  readonly resolve: () => void
  readonly reject: (err: unknown) => void
}

export class DeadLetters {
  private fd: number | undefined
  private size = 0
  private queue: Waiting[] = []
  private writing = false
  readonly path: string

  constructor(
    dir: string,
    private readonly fsys: LogFs = nodeFs,
  ) {
    this.path = path.join(dir, DEAD_LETTER_FILE)
  }

  /** Appends one dead letter durably. Rejects (nothing written) on an I/O error such as ENOSPC. */
  write(d: DeadLetter): Promise<void> {
    const line = Buffer.from(formatDeadLetter({ ...d, deadAt: Date.now() }))
    return new Promise<void>((resolve, reject) => {
      this.queue.push({ line, resolve, reject })
      if (!this.writing) void this.pump()
    })
  }

  private async pump(): Promise<void> {
    this.writing = true
    try {
      while (this.queue.length > 0) {
        const group = this.queue
        this.queue = []
        try {
          if (this.fd === undefined) {
            // Created if missing, then opened for positional writes (O_APPEND would ignore the
            // position, and the undo below relies on knowing where the group starts).
            await this.fsys.close(await this.fsys.open(this.path, 'a'))
            const fd = await this.fsys.open(this.path, 'r+')
            this.size = await this.fsys.fsize(fd)
            this.fd = fd
          }
          const buf = Buffer.concat(group.map((w) => w.line))
          try {
            // The whole group or nothing: positional write at the end, undone on error.
            await writeFully(this.fsys, this.fd, buf, this.size)
            await this.fsys.fdatasync(this.fd)
          } catch (err) {
            const fd = this.fd
            await this.fsys.ftruncate(fd, this.size).catch(async () => {
              // A torn line can only remain if this fails too: reopen (and re-read the end) next time.
              this.fd = undefined
              await this.fsys.close(fd).catch(() => {})
            })
            throw err
          }
          this.size += buf.length
          for (const w of group) w.resolve()
        } catch (err) {
          for (const w of group) w.reject(err)
        }
      }
    } finally {
      this.writing = false
    }
  }

  close(): void {
    const fd = this.fd
    this.fd = undefined
    if (fd !== undefined) void this.fsys.close(fd).catch(() => {})
  }
}
