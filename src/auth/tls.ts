// TLS material of the MQTTS listener, read once at start (FERRY_ERR_TLS names the file that failed).
import tls from 'node:tls'
import { FerryError } from '../errors.js'
import { readGuardedFile } from './file-mode.js'

/**
 * Reads a PEM (or other credential) file given by `flag`; throws FERRY_ERR_TLS naming both when it
 * cannot be read or group or others can write it (a swapped CA or key lets anyone in).
 */
export function readPem(file: string, flag: string): Buffer {
  return readGuardedFile(file, flag, 'FERRY_ERR_TLS', false).bytes
}

/** Server options of the MQTTS listener: TLS 1.2 at least; with `requireClientCert`, only certificates signed by `ca`. */
export function serverTlsOptions(c: { readonly cert: string; readonly key: string; readonly ca: string; readonly requireClientCert: boolean }): tls.TlsOptions {
  const options: tls.TlsOptions = {
    minVersion: 'TLSv1.2',
    cert: readPem(c.cert, '--tls-cert'),
    key: readPem(c.key, '--tls-key'),
    ...(c.ca ? { ca: readPem(c.ca, '--tls-ca') } : {}),
    requestCert: c.requireClientCert,
    rejectUnauthorized: c.requireClientCert,
  }
  try {
    tls.createSecureContext(options)
  } catch (err) {
    throw new FerryError('FERRY_ERR_TLS', `the MQTTS certificate, key or CA is unusable (--tls-cert, --tls-key, --tls-ca): ${(err as Error).message}`, { cause: err })
  }
  return options
}

/** One entry of a certificate's subjectAltName, e.g. `{ type: 'DNS', value: 'dev1' }`. */
export interface SanEntry {
  readonly type: string
  readonly value: string
}

/**
 * Splits Node's `subjectaltname` string into its entries, or returns undefined when it is not in
 * the form Node writes. Node joins entries with ", " and writes a value holding a comma, a quote,
 * a backslash or a non-printable character as a JSON string (`DNS:"a, DNS:b"`), so a value is
 * never split at a comma inside it, and a type is only what precedes the entry's first ":".
 * (`email:xDNS:dev1` is one email entry whose value is `xDNS:dev1`.)
 */
export function parseSubjectAltName(text: string): SanEntry[] | undefined {
  const out: SanEntry[] = []
  let i = 0
  while (i < text.length) {
    const colon = text.indexOf(':', i)
    if (colon < 0) return undefined
    const type = text.slice(i, colon)
    if (!/^[A-Za-z][A-Za-z0-9 ]*$/.test(type)) return undefined
    let value: string
    let end: number
    if (text[colon + 1] === '"') {
      // A JSON string: find its closing quote, skipping escaped characters.
      let j = colon + 2
      while (j < text.length && text[j] !== '"') j += text[j] === '\\' ? 2 : 1
      if (j >= text.length) return undefined
      end = j + 1
      try {
        value = JSON.parse(text.slice(colon + 1, end)) as string
      } catch {
        return undefined
      }
    } else {
      const sep = text.indexOf(', ', colon + 1)
      end = sep < 0 ? text.length : sep
      value = text.slice(colon + 1, end)
    }
    out.push({ type, value })
    if (end === text.length) break
    if (text.slice(end, end + 2) !== ', ') return undefined
    i = end + 2
    if (i === text.length) return undefined
  }
  return out
}
