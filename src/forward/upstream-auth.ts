// How Ferry authenticates to NATS and secures the connection, from the --nats-* options.
//
// Secrets are read here and go only into the connection options: the config keeps file paths, and
// the token and password options are marked secret, so neither reaches a log line. Any
// --nats-tls-* option (or a tls:// URL) makes nats.js require TLS: a server that does not offer it
// is an error, never a silent fallback to plain text.
import { credsAuthenticator, nkeyAuthenticator } from '@nats-io/transport-node'
import type { ConnectionOptions } from '@nats-io/transport-node'
import { readPem } from '../auth/index.js'
import type { Config } from '../config/index.js'
import { FerryError } from '../errors.js'

/** The --nats-* options about credentials and TLS. */
export type UpstreamSecurity = Pick<Config['nats'], 'token' | 'user' | 'password' | 'nkeyFile' | 'credsFile' | 'tlsCa' | 'tlsCert' | 'tlsKey'>

// Refused when group or others can write the file: a swapped seed or CA redirects the upstream.
function read(file: string, flag: string): Buffer {
  return readPem(file, flag)
}

/** Connection options for authentication and TLS. Reads (and so checks) every named file now. */
export function upstreamOptions(s: UpstreamSecurity): Partial<ConnectionOptions> {
  const o: Partial<ConnectionOptions> = {}
  if (s.token) o.token = s.token
  if (s.user) {
    o.user = s.user
    o.pass = s.password
  }
  if (s.nkeyFile) {
    const seed = read(s.nkeyFile, '--nats-nkey-file').toString('utf8').trim()
    if (!/^SU[A-Z2-7]{50,}$/.test(seed)) throw new FerryError('FERRY_ERR_TLS', `--nats-nkey-file ${s.nkeyFile} does not hold a user NKey seed (SU...)`)
    o.authenticator = nkeyAuthenticator(new TextEncoder().encode(seed))
  }
  if (s.credsFile) o.authenticator = credsAuthenticator(new Uint8Array(read(s.credsFile, '--nats-creds')))
  if (s.tlsCa || s.tlsCert) {
    for (const [file, flag] of [[s.tlsCa, '--nats-tls-ca'], [s.tlsCert, '--nats-tls-cert'], [s.tlsKey, '--nats-tls-key']] as const) if (file) read(file, flag)
    o.tls = { ...(s.tlsCa ? { caFile: s.tlsCa } : {}), ...(s.tlsCert ? { certFile: s.tlsCert, keyFile: s.tlsKey } : {}) }
  }
  return o
}
