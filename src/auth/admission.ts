// Who may connect, and what each client may publish and subscribe to.
//
// Identity: with --require-client-cert, a TLS client's certificate (CN, else the first DNS/URI
// SAN), checked against the username when one is sent; otherwise, with --auth-file, the username
// whose password verified. Without either (loopback or --allow-anonymous), clients are anonymous:
// an unverified username is never taken as an identity. Refusals all look alike on the wire
// (CONNACK 4 or 5) and are counted by reason; a refused client never gets a session, so its will
// is not published.
//
// Reload is revocation: a client whose password entry is gone or changed is disconnected, and
// every delivery to a client is checked against the ACL in force at that moment (mayReceive), so a
// read rule removed by a reload stops what its subscriptions, retained messages, commands and RPC
// requests would still bring.
//
// A client id bound to an identity (while connected, or while its persistent session lives: for MQTT 5
// until it expires) cannot be taken over by another identity: aedes would otherwise close the owner
// and hand over its session.
import type { Duplex } from 'node:stream'
import type { TLSSocket } from 'node:tls'
import type { Logger } from '../logger.js'
import type { AdmissionMetrics } from './metrics.js'
import { Acl } from './acl.js'
import { Passwords } from './passwords.js'
import { parseSubjectAltName } from './tls.js'

export interface AdmissionOptions {
  readonly authFile: string
  readonly aclFile: string
  readonly allowAnonymous: boolean
  readonly requireClientCert: boolean
  readonly logger: Logger
  readonly metrics: AdmissionMetrics
}

type FailReason = 'credentials' | 'anonymous' | 'certificate' | 'takeover' | 'busy' | 'revoked'

/** CONNACK return codes of MQTT 3.1.1 that refuse a client. */
const IDENTIFIER_REJECTED = 2
const SERVER_UNAVAILABLE = 3
const BAD_CREDENTIALS = 4
const NOT_AUTHORIZED = 5

/** A CONNACK code refusing a client. */
export type ConnackRefusal = typeof IDENTIFIER_REJECTED | typeof SERVER_UNAVAILABLE | typeof BAD_CREDENTIALS | typeof NOT_AUTHORIZED

/** MQTT 5 reason code 0x97 Quota exceeded: a limit of the gateway, retry later. */
const QUOTA_EXCEEDED = 0x97

/** A refusal whose MQTT 5 reason code is not the one of its 3.1.1 CONNACK code (structurally the seam's ConnectRefusal). */
export interface DetailedRefusal {
  readonly code: ConnackRefusal
  readonly reasonCode: number
}

/** What admission needs of a client connection (ingress's MqttClientRef is one, structurally). */
export interface ClientConnection {
  readonly id: string
  /** Peer address ('' when unknown). */
  readonly address: string
  /** CleanSession of its CONNECT. */
  readonly clean: boolean
  /** Its connection: a TLS socket over MQTTS (its peer certificate names the device). */
  readonly socket: Duplex
  /** Whether the MQTT core has closed it. */
  readonly closed: boolean
  close(): void
}

/** How a connected client proved its identity (what a reload checks again). */
interface Admitted {
  readonly identity: string | undefined
  /** The password entry it verified against (Passwords.fingerprint), for password logins. */
  readonly credential: string | undefined
}

interface Binding {
  readonly identity: string | undefined
  persistent: boolean
  readonly clients: Set<ClientConnection>
}

/** SAN entry types that can name a device. */
const IDENTITY_SAN_TYPES = new Set(['DNS', 'URI'])

/**
 * The identity a verified client certificate names: its CN, else the value of its first SAN entry
 * whose type is exactly DNS or URI. The SAN list is parsed entry by entry (parseSubjectAltName),
 * never searched as a string: `email:xDNS:dev1` names no DNS entry. A CN given more than once
 * (Node then returns an array) or a SAN list that does not parse names no identity.
 */
export function certificateIdentity(socket: TLSSocket): string | undefined {
  if (!socket.authorized) return undefined
  const cert = socket.getPeerCertificate()
  const cn: unknown = cert?.subject?.CN
  if (typeof cn === 'string' && cn !== '') return cn
  if (cn !== undefined && cn !== '') return undefined
  const entries = parseSubjectAltName(cert?.subjectaltname ?? '')
  const san = entries?.find((e) => IDENTITY_SAN_TYPES.has(e.type))
  return san?.value || undefined
}

export class Admission {
  private readonly identities = new WeakMap<ClientConnection, string | undefined>()
  private readonly bindings = new Map<string, Binding>()
  /** Connected clients that logged in with a password, with the entry they verified against. */
  private readonly live = new Map<ClientConnection, Admitted>()

  private constructor(
    private readonly opts: AdmissionOptions,
    private passwords: Passwords | undefined,
    private acl: Acl | undefined,
  ) {}

  /** Loads the files; throws FERRY_ERR_AUTH_FILE / FERRY_ERR_ACL_FILE. */
  static load(opts: AdmissionOptions): Admission {
    const passwords = opts.authFile ? Passwords.load(opts.authFile) : undefined
    if (passwords?.warning) opts.logger.warn(passwords.warning)
    return new Admission(opts, passwords, opts.aclFile ? Acl.load(opts.aclFile) : undefined)
  }

  /** What is enforced, for the startup log. */
  get summary(): Record<string, unknown> {
    return {
      devices: this.passwords?.size ?? null,
      aclRules: this.acl?.ruleCount ?? null,
      anonymous: this.opts.allowAnonymous || (!this.passwords && !this.opts.requireClientCert),
      clientCertificates: this.opts.requireClientCert,
    }
  }

  /** Reads the files again; a file that fails validation keeps the old rules (logged). Connections stay. */
  reload(): boolean {
    const { logger, metrics } = this.opts
    try {
      const passwords = this.opts.authFile ? Passwords.load(this.opts.authFile) : undefined
      const acl = this.opts.aclFile ? Acl.load(this.opts.aclFile) : undefined
      if (passwords?.warning) logger.warn(passwords.warning)
      this.passwords = passwords
      this.acl = acl
      metrics.authReloads.inc(1, { result: 'ok' })
      logger.info('credentials and ACL reloaded', this.summary)
      this.revoke()
      return true
    } catch (err) {
      metrics.authReloads.inc(1, { result: 'failed' })
      logger.error('reload failed; the previous credentials and ACL stay in force', { error: err })
      return false
    }
  }

  /** Disconnects every client whose password entry is gone or changed since it logged in. */
  private revoke(): void {
    for (const [client, a] of this.live) {
      if (a.identity === undefined || this.passwords?.fingerprint(a.identity) === a.credential) continue
      this.live.delete(client)
      this.opts.metrics.mqttAuthFailures.inc(1, { reason: 'revoked' })
      this.opts.logger.info('credentials revoked by reload; disconnecting the client', { clientId: client.id, identity: a.identity })
      client.close()
    }
  }

  /**
   * An MQTT 5 session expired (its Session Expiry Interval after its connection ended): the client id's
   * binding ends with it, unless a connection holds the id again.
   */
  sessionExpired(clientId: string): void {
    const b = this.bindings.get(clientId)
    if (b && b.clients.size === 0) this.bindings.delete(clientId)
  }

  /** Decides a CONNECT: `done(null)` admits the client, `done(code)` refuses it with that CONNACK code. */
  authenticate(client: ClientConnection, username: string | undefined, password: Buffer | undefined, done: (refusal: ConnackRefusal | DetailedRefusal | null) => void): void {
    this.identify(client, username, password).then(
      (r) => {
        if (typeof r === 'number' || 'code' in r) return done(r)
        // Gone while its password was hashed: the core drops this answer; bind nothing to a dead client.
        if (client.closed || client.socket.destroyed) return done(SERVER_UNAVAILABLE)
        const identity = r.identity
        const bound = this.bindings.get(client.id)
        if (bound && bound.identity !== identity && (bound.clients.size > 0 || bound.persistent)) {
          this.fail(client, 'takeover', `client id is bound to another identity's session`)
          return done(IDENTIFIER_REJECTED)
        }
        this.identities.set(client, identity)
        if (r.credential !== undefined) {
          this.live.set(client, { identity, credential: r.credential })
          client.socket.once('close', () => this.live.delete(client))
        }
        // Everyone anonymous: no identity to protect, no binding to keep (memory per connection).
        if (identity === undefined && !bound) return done(null)
        const b = bound && bound.identity === identity ? bound : { identity, persistent: false, clients: new Set<ClientConnection>() }
        b.persistent = !client.clean
        b.clients.add(client)
        this.bindings.set(client.id, b)
        client.socket.once('close', () => {
          b.clients.delete(client)
          if (b.clients.size === 0 && !b.persistent && this.bindings.get(client.id) === b) this.bindings.delete(client.id)
        })
        done(null)
      },
      (err: unknown) => {
        this.opts.logger.error('authentication error', { clientId: client.id, error: err })
        done(SERVER_UNAVAILABLE)
      },
    ).catch((err: unknown) => {
      // A throw from the core's answer to our callback: this client is refused, the process goes on.
      this.opts.logger.error('error after authentication; closing the client', { clientId: client.id, error: err })
      client.close()
    })
  }

  private async identify(client: ClientConnection, username: string | undefined, password: Buffer | undefined): Promise<{ identity: string | undefined; credential?: string } | ConnackRefusal | DetailedRefusal> {
    const socket = client.socket as Partial<TLSSocket>
    if (this.opts.requireClientCert && typeof socket.getPeerCertificate === 'function') {
      const identity = certificateIdentity(socket as TLSSocket)
      if (identity === undefined) return this.fail(client, 'certificate', 'no verified client certificate', NOT_AUTHORIZED)
      if (username !== undefined && username !== identity) return this.fail(client, 'certificate', `username does not match the certificate's identity`, NOT_AUTHORIZED)
      return { identity }
    }
    if (this.passwords) {
      if (username === undefined || username === '') {
        if (this.opts.allowAnonymous) return { identity: undefined }
        return this.fail(client, 'anonymous', 'no username', NOT_AUTHORIZED)
      }
      const passwords = this.passwords
      const ok = await passwords.verify(username, password ?? Buffer.alloc(0))
      // MQTT 5: 0x97 Quota exceeded (a connection limit: retry later); 3.1.1: CONNACK 3.
      if (ok === 'busy') return { code: this.fail(client, 'busy', 'too many logins waiting for password hashing', SERVER_UNAVAILABLE), reasonCode: QUOTA_EXCEEDED }
      if (!ok) return this.fail(client, 'credentials', 'unknown device or wrong password', BAD_CREDENTIALS)
      // Verified against `passwords`; a reload meanwhile may have removed the entry (checked then).
      if (passwords !== this.passwords && this.passwords?.fingerprint(username) !== passwords.fingerprint(username)) {
        return this.fail(client, 'credentials', 'credentials changed while the password was being verified', BAD_CREDENTIALS)
      }
      return { identity: username, credential: passwords.fingerprint(username) }
    }
    if (this.opts.requireClientCert) {
      // A plain TCP client where certificates identify devices and no passwords exist.
      if (this.opts.allowAnonymous) return { identity: undefined }
      return this.fail(client, 'certificate', 'plain TCP connection without a certificate', NOT_AUTHORIZED)
    }
    return { identity: undefined }
  }

  private fail(client: ClientConnection, reason: FailReason, detail: string, code: ConnackRefusal = NOT_AUTHORIZED): ConnackRefusal {
    this.opts.metrics.mqttAuthFailures.inc(1, { reason })
    // The detail stays in our log; the device only sees the CONNACK code.
    this.opts.logger.info('connection refused', { clientId: client.id, address: client.address, reason, detail })
    return code
  }

  /** The identity the client proved at CONNECT (username or certificate name); undefined when anonymous. */
  identityOf(client: ClientConnection): string | undefined {
    return this.identities.get(client)
  }

  /** Whether the ACL lets this client publish on `topic` (counted and logged when not). */
  mayPublish(client: ClientConnection | null, topic: string): boolean {
    if (!this.acl || !client) return true
    if (this.acl.canPublish(this.identities.get(client), client.id, topic)) return true
    this.deny(client, 'publish', topic)
    return false
  }

  /**
   * Whether the ACL in force now lets this client receive a message on `topic` (every message the
   * core forwards, and commands and RPC requests before they are sent). Counted when not.
   */
  mayReceive(client: ClientConnection, topic: string): boolean {
    if (!this.acl || this.acl.canRead(this.identities.get(client), client.id, topic)) return true
    this.opts.metrics.mqttAclDenials.inc(1, { action: 'deliver' })
    return false
  }

  /** Whether the ACL lets this client subscribe to `topic`: a denied filter gets SUBACK 0x80 and the client stays connected. */
  maySubscribe(client: ClientConnection, topic: string): boolean {
    if (!this.acl || this.acl.canSubscribe(this.identities.get(client), client.id, topic)) return true
    this.deny(client, 'subscribe', topic)
    return false
  }

  private deny(client: ClientConnection, action: 'publish' | 'subscribe', topic: string): void {
    this.opts.metrics.mqttAclDenials.inc(1, { action })
    this.opts.logger.info('ACL denied', { clientId: client.id, identity: this.identities.get(client) ?? null, action, topic })
  }
}
