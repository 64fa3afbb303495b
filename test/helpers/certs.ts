// Test certificates made with the openssl CLI: a CA, a server certificate for 127.0.0.1 and client certificates.
import { execFileSync } from 'node:child_process'
import fs from 'node:fs'
import path from 'node:path'

function openssl(...args: string[]): void {
  execFileSync('openssl', args, { stdio: 'ignore' })
}

/**
 * Writes into `dir`: ca.pem/ca.key, server.pem/server.key (for 127.0.0.1 and localhost) and
 * `<cn>.pem`/`<cn>.key` for each client CN. Keys are P-256, except the server's when `serverKey`
 * is 'rsa' (RSA-2048: the common and the expensive case, each handshake signs with it).
 */
export function makeCertificates(dir: string, clients: string[], serverKey: 'ec' | 'rsa' = 'ec'): void {
  const file = (n: string): string => path.join(dir, n)
  const ec = ['-newkey', 'ec', '-pkeyopt', 'ec_paramgen_curve:prime256v1', '-nodes']
  const rsa = ['-newkey', 'rsa:2048', '-nodes']
  openssl('req', '-x509', ...ec, '-keyout', file('ca.key'), '-out', file('ca.pem'), '-days', '2', '-subj', '/CN=ferry-test-ca')
  const sign = (name: string, subject: string, ext: string, key: string[]): void => {
    fs.writeFileSync(file(`${name}.ext`), ext)
    openssl('req', ...key, '-keyout', file(`${name}.key`), '-out', file(`${name}.csr`), '-subj', subject)
    openssl('x509', '-req', '-in', file(`${name}.csr`), '-CA', file('ca.pem'), '-CAkey', file('ca.key'), '-CAcreateserial', '-out', file(`${name}.pem`), '-days', '2', '-extfile', file(`${name}.ext`))
  }
  sign('server', '/CN=127.0.0.1', 'subjectAltName=IP:127.0.0.1,DNS:localhost\nextendedKeyUsage=serverAuth\n', serverKey === 'rsa' ? rsa : ec)
  for (const cn of clients) sign(cn, `/CN=${cn}`, 'extendedKeyUsage=clientAuth\n', ec)
}
