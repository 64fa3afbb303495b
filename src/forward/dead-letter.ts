// The dead-letter file: messages JetStream rejects permanently, kept locally with the reason.
//
// `<dataDir>/dead-letter.jsonl`, one JSON object per line, fdatasync'd before the log cursor moves
// past the message: {"seq","epoch","ts","deadAt","reason","entry" (the log record body, base64)}.
import fs from 'node:fs'
import path from 'node:path'

export interface DeadLetter {
  readonly seq: number
  readonly epoch: number
  readonly ts: number
  readonly body: Buffer
  readonly reason: string
}

export class DeadLetters {
  private fd: number | undefined
  readonly path: string

  constructor(dir: string) {
    this.path = path.join(dir, 'dead-letter.jsonl')
  }

  /** Appends one dead letter durably (synchronous: a rare path that must not reorder with the ack). */
  write(d: DeadLetter): void {
    this.fd ??= fs.openSync(this.path, 'a')
    const fd = this.fd
    const line = Buffer.from(JSON.stringify({ seq: d.seq, epoch: d.epoch, ts: d.ts, deadAt: Date.now(), reason: d.reason, entry: d.body.toString('base64') }) + '\n')
    const before = fs.fstatSync(fd).size
    try {
      // The whole line or nothing: loop over short writes, undo a partial line on error.
      for (let done = 0; done < line.length; ) done += fs.writeSync(fd, line, done, line.length - done)
      fs.fdatasyncSync(fd)
    } catch (err) {
      try {
        fs.ftruncateSync(fd, before)
      } catch {
        // the caller retries; a torn line can only remain if truncating fails too
      }
      throw err
    }
  }

  close(): void {
    if (this.fd !== undefined) fs.closeSync(this.fd)
    this.fd = undefined
  }
}
