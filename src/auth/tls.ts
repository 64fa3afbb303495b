// TLS material of the MQTTS listener, read once at start (FERRY_ERR_TLS names the file that failed).
import fs from 'node:fs'
import tls from 'node:tls'
import { FerryError } from '../errors.js'

/** Reads a PEM file given by `flag`; throws FERRY_ERR_TLS naming both. */
export function readPem(file: string, flag: string): Buffer {
  try {
    return fs.readFileSync(file)
  } catch (err) {
    throw new FerryError('FERRY_ERR_TLS', `cannot read ${flag} ${file}: ${(err as Error).message}`, { cause: err })
  }
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
