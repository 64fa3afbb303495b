// The dead-letter file: messages JetStream rejects permanently, kept locally with the reason.
//
// `<dataDir>/dead-letter.jsonl`, one JSON object per line, fdatasync'd before the log cursor moves
// past the message: {"seq","epoch","ts","deadAt","reason","entry" (the log record body, base64)}, and
// with priority classes (--priority) "class" after "reason" for a record of a class log other than
// normal ("seq" and "epoch" are then those of that class's log; no "class" = the normal log).
// The forwarders of all classes share the file: writes of every DeadLetters on one path in this
// process go one group at a time (one chain per path), each at the file's end as it is then.
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
  /** The priority class of the log it came from; absent = normal (or no classes). */
  readonly className?: string
}

/** A dead letter as stored: with the time (ms since the epoch) it was written. */
export interface StoredDeadLetter extends DeadLetter {
  readonly deadAt: number
}

/** The file's name in the data directory. */
export const DEAD_LETTER_FILE = 'dead-letter.jsonl'

/** One line of the file, newline included. */
export function formatDeadLetter(d: StoredDeadLetter): string {
  const cls = d.className === undefined || d.className === 'normal' ? {} : { class: d.className }
  return JSON.stringify({ seq: d.seq, epoch: d.epoch, ts: d.ts, deadAt: d.deadAt, reason: d.reason, ...cls, entry: d.body.toString('base64') }) + '\n'
}

/** The dead letters in the file's text, in file order; blank lines are skipped, a line that is not JSON throws. */
export function parseDeadLetters(text: string): StoredDeadLetter[] {
  return text
    .split('\n')
    .filter((l) => l.trim() !== '')
    .map((l) => {
      const o = JSON.parse(l) as { seq: number; epoch: number; ts: number; deadAt: number; reason: string; class?: string; entry: string }
      const d: StoredDeadLetter = { seq: o.seq, epoch: o.epoch, ts: o.ts, deadAt: o.deadAt, reason: o.reason, body: Buffer.from(o.entry, 'base64') }
      return o.class === undefined ? d : { ...d, className: o.class }
    })
}

/** The group write under way per file path in this process (several DeadLetters on one file take turns). */
const turns = new Map<string, Promise<void>>()

/** Runs `fn` after every earlier write to `file` from this process. */
async function inTurn(file: string, fn: () => Promise<void>): Promise<void> {
  const before = turns.get(file) ?? Promise.resolve()
  const mine = before.then(fn, fn)
  const tail = mine.catch(() => {})
  turns.set(file, tail)
  try {
    await mine
  } finally {
    if (turns.get(file) === tail) turns.delete(file)
  }
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
          await inTurn(this.path, () => this.writeGroup(group))
          for (const w of group) w.resolve()
        } catch (err) {
          for (const w of group) w.reject(err)
        }
      }
    } finally {
      this.writing = false
    }
  }

  /** Writes one group at the end of the file and syncs it; on error nothing of it stays. */
  private async writeGroup(group: readonly Waiting[]): Promise<void> {
    if (this.fd === undefined) {
      // Created if missing, then opened for positional writes (O_APPEND would ignore the
      // position, and the undo below relies on knowing where the group starts).
      await this.fsys.close(await this.fsys.open(this.path, 'a'))
      this.fd = await this.fsys.open(this.path, 'r+')
    }
    // The end as it is now: another DeadLetters on this file (another class's forwarder) may have written since.
    this.size = await this.fsys.fsize(this.fd)
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
  }

  close(): void {
    const fd = this.fd
    this.fd = undefined
    if (fd !== undefined) void this.fsys.close(fd).catch(() => {})
  }
}
