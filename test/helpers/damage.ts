// Helpers that damage ring log files the way crashes and bit rot do.
import fs from 'node:fs'
import path from 'node:path'
import { RECORD_HEADER_BYTES, SEAL_FRAME_BYTES, SEGMENT_HEADER_BYTES, frameBytes } from '../../src/log/format.js'

/** Segment file paths of a data dir, oldest first. */
export function segmentFiles(dataDir: string): string[] {
  const d = path.join(dataDir, 'segments')
  return fs.readdirSync(d).filter((f) => f.endsWith('.seg')).sort().map((f) => path.join(d, f))
}

/** Byte offsets of every frame in a segment (data and seal), by walking the length fields. */
export function frameOffsets(file: string): number[] {
  const b = fs.readFileSync(file)
  const out: number[] = []
  let at = SEGMENT_HEADER_BYTES
  while (at + RECORD_HEADER_BYTES <= b.length) {
    out.push(at)
    at += frameBytes(b.readUInt32LE(at + 4))
  }
  return out
}

/** Flips one bit at `offset`. */
export function flipBit(file: string, offset: number, bit = 0): void {
  const fd = fs.openSync(file, 'r+')
  const one = Buffer.alloc(1)
  fs.readSync(fd, one, 0, 1, offset)
  one[0] = (one[0] ?? 0) ^ (1 << bit)
  fs.writeSync(fd, one, 0, 1, offset)
  fs.closeSync(fd)
}

/** Removes the seal (as if the process died before rolling) so recovery must scan the segment. */
export function unseal(file: string): void {
  fs.truncateSync(file, fs.statSync(file).size - SEAL_FRAME_BYTES)
}

/** Appends the first `bytes` bytes of the segment's first frame: a write torn by a crash. */
export function appendTornFrame(file: string, bytes: number): void {
  const b = fs.readFileSync(file)
  fs.appendFileSync(file, b.subarray(SEGMENT_HEADER_BYTES, SEGMENT_HEADER_BYTES + bytes))
}
