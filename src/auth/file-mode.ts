// Permission checks on files that grant access (credentials, ACL, keys, certificates): a file that
// someone other than its owner can write lets them add a device, widen a rule or swap a key.
import fs from 'node:fs'
import { FerryError } from '../errors.js'
import type { ErrorCode } from '../errors.js'

/** How a file's mode is judged: refused when group or others can write it; a warning when others can read it. */
export interface ModeVerdict {
  readonly refusal?: string
  readonly warning?: string
}

const octal = (mode: number): string => `0${(mode & 0o777).toString(8).padStart(3, '0')}`

/** Judges `mode` of `file` (named with its `flag`); `secret` adds a warning when others can read it. */
export function judgeMode(file: string, flag: string, mode: number, secret: boolean): ModeVerdict {
  if (mode & 0o022) {
    return { refusal: `${flag} ${file} is writable by ${mode & 0o020 && mode & 0o002 ? 'group and others' : mode & 0o020 ? 'group' : 'others'} (mode ${octal(mode)}): whoever can write it controls who gets in; run chmod go-w ${file} (or chmod 600 ${file})` }
  }
  if (secret && mode & 0o004) return { warning: `${flag} ${file} is readable by others (mode ${octal(mode)}); run chmod 600 ${file} (or chmod 640 for a group the gateway runs in)` }
  return {}
}

/**
 * Reads `file` (given by `flag`) after checking its mode on the open descriptor (so the check and
 * the read see the same file). Throws FerryError `code` when it cannot be read or group or others
 * can write it; returns the bytes and a warning when `secret` and others can read it.
 */
export function readGuardedFile(file: string, flag: string, code: ErrorCode, secret: boolean, what = `cannot read ${flag} ${file}`): { bytes: Buffer; warning?: string } {
  let fd: number
  try {
    fd = fs.openSync(file, 'r')
  } catch (err) {
    throw new FerryError(code, `${what}: ${(err as Error).message}`, { cause: err })
  }
  try {
    const verdict = judgeMode(file, flag, fs.fstatSync(fd).mode, secret)
    if (verdict.refusal) throw new FerryError(code, `refused: ${verdict.refusal}`)
    let bytes: Buffer
    try {
      bytes = fs.readFileSync(fd)
    } catch (err) {
      throw new FerryError(code, `${what}: ${(err as Error).message}`, { cause: err })
    }
    return verdict.warning ? { bytes, warning: verdict.warning } : { bytes }
  } finally {
    fs.closeSync(fd)
  }
}
