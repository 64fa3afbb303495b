// The forwarder's ack position, checkpointed atomically in a two-slot file.
//
// File `<dataDir>/checkpoint`, 8 KiB: two 4 KiB slots, written alternately (slot = generation % 2),
// each followed by fdatasync. Both slots are allocated (written out in full) when the file is opened,
// so a later checkpoint write overwrites blocks the file already owns and cannot fail with ENOSPC
// on a full disk (on file systems that overwrite in place: not on copy-on-write ones). On load the valid slot with the highest generation wins, so a torn
// write of one slot leaves the other intact. The checkpoint is a hint that bounds duplicates:
// losing it means resending from the oldest segment, never skipping data.
//
// | Off | Size | Field                                        |
// |-----|------|----------------------------------------------|
// | 0   | 4    | magic "FRCP"                                 |
// | 4   | 2    | version (1)                                  |
// | 6   | 2    | flags: bit 0 = written at clean shutdown     |
// | 8   | 8    | generation                                   |
// | 16  | 8    | acked: every seq <= acked reached upstream   |
// | 24  | 8    | seqFloor: next seq is at least this + 1      |
// | 32  | 4    | epoch                                        |
// | 36  | 16   | log id                                       |
// | 52  | 4    | CRC-32 of bytes 0..52                        |
import fs from 'node:fs'
import { crc32 } from 'node:zlib'
import type { LogFs } from './fs.js'
import { writeFully } from './fs.js'

const MAGIC = 0x50435246 // "FRCP"
const SLOT_BYTES = 4096
const USED = 56

/** Contents of one checkpoint. */
export interface CheckpointState {
  readonly acked: number
  readonly seqFloor: number
  readonly epoch: number
  readonly logId: Buffer
  readonly clean: boolean
}

function encode(gen: number, s: CheckpointState): Buffer {
  const b = Buffer.alloc(SLOT_BYTES)
  b.writeUInt32LE(MAGIC, 0)
  b.writeUInt16LE(1, 4)
  b.writeUInt16LE(s.clean ? 1 : 0, 6)
  b.writeBigUInt64LE(BigInt(gen), 8)
  b.writeBigUInt64LE(BigInt(Math.max(0, s.acked)), 16)
  b.writeBigUInt64LE(BigInt(Math.max(0, s.seqFloor)), 24)
  b.writeUInt32LE(s.epoch, 32)
  s.logId.copy(b, 36, 0, 16)
  b.writeUInt32LE(crc32(b.subarray(0, 52)), 52)
  return b
}

function decode(b: Buffer): { gen: number; state: CheckpointState } | undefined {
  if (b.length < USED || b.readUInt32LE(0) !== MAGIC || b.readUInt16LE(4) !== 1) return undefined
  if (b.readUInt32LE(52) !== crc32(b.subarray(0, 52))) return undefined
  return {
    gen: Number(b.readBigUInt64LE(8)),
    state: {
      clean: (b.readUInt16LE(6) & 1) === 1,
      acked: Number(b.readBigUInt64LE(16)),
      seqFloor: Number(b.readBigUInt64LE(24)),
      epoch: b.readUInt32LE(32),
      logId: Buffer.from(b.subarray(36, 52)),
    },
  }
}

/** The best valid state in a checkpoint file, read without creating or locking anything (tools). */
export function readCheckpointState(path: string): CheckpointState | undefined {
  let buf: Buffer
  try {
    buf = fs.readFileSync(path)
  } catch (err) {
    if ((err as NodeJS.ErrnoException).code === 'ENOENT') return undefined
    throw err
  }
  const slots = [decode(buf.subarray(0, SLOT_BYTES)), decode(buf.subarray(SLOT_BYTES, SLOT_BYTES * 2))]
  let best: { gen: number; state: CheckpointState } | undefined
  for (const s of slots) if (s && (!best || s.gen > best.gen)) best = s
  return best?.state
}

/**
 * Writes `state` as a new generation into a checkpoint file that no gateway has open (tools, with
 * the data directory locked by the caller): fdatasync'd, like the gateway's own writes.
 */
export async function rewriteCheckpoint(fsys: LogFs, path: string, state: CheckpointState): Promise<void> {
  const { checkpoint } = await Checkpoint.open(fsys, path)
  try {
    await checkpoint.write(state)
  } finally {
    await checkpoint.close()
  }
}

/** The open checkpoint file. One writer; writes are serialised by the caller. */
export class Checkpoint {
  private constructor(
    private readonly fsys: LogFs,
    private readonly fd: number,
    private gen: number,
  ) {}

  /** Opens (creating if needed) the checkpoint file and returns it with the best valid state, if any. */
  static async open(fsys: LogFs, path: string): Promise<{ checkpoint: Checkpoint; state: CheckpointState | undefined }> {
    const fd = await fsys.open(path, 'a+').then(async (f) => {
      await fsys.close(f)
      return fsys.open(path, 'r+')
    })
    const buf = Buffer.alloc(SLOT_BYTES * 2)
    let got = 0
    for (;;) {
      const n = await fsys.read(fd, buf, got, buf.length - got, got)
      if (n === 0) break
      got += n
      if (got === buf.length) break
    }
    const slots = [decode(buf.subarray(0, SLOT_BYTES)), decode(buf.subarray(SLOT_BYTES))]
    let best: { gen: number; state: CheckpointState } | undefined
    for (const s of slots) if (s && (!best || s.gen > best.gen)) best = s
    const checkpoint = new Checkpoint(fsys, fd, best?.gen ?? 0)
    {
      // Every open writes both slots out, keeping what they hold: a new file, or one an older
      // version left with a hole (its first write went to the second slot; reading a hole gives
      // zeros, so its size alone does not tell), then owns every block a later write needs.
      try {
        await writeFully(fsys, fd, buf, 0)
        await fsys.fdatasync(fd)
      } catch (err) {
        if ((err as { code?: unknown }).code !== 'ENOSPC') {
          await fsys.close(fd).catch(() => {})
          throw err
        }
        checkpoint.allocated = false
      }
    }
    return { checkpoint, state: best?.state }
  }

  /** False when the file could not be fully allocated at open (disk full); writes may then fail with ENOSPC. */
  allocated = true

  /** Writes the next generation into the other slot and fdatasyncs it. */
  async write(state: CheckpointState): Promise<void> {
    const gen = this.gen + 1
    await writeFully(this.fsys, this.fd, encode(gen, state), (gen % 2) * SLOT_BYTES)
    await this.fsys.fdatasync(this.fd)
    this.gen = gen
  }

  async close(): Promise<void> {
    await this.fsys.close(this.fd)
  }
}
