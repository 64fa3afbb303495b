// Keys and values of the fleet registry bucket: `devices.<k>` per connected device, `gateways.<id>` per live gateway.
//
// | key               | value (JSON)                                                   |
// |-------------------|----------------------------------------------------------------|
// | devices.<k>       | {"device","gateway","boot","since" (ms epoch),"address","clean"} |
// | gateways.<id>     | {"gateway","boot","startedAt","heartbeatMs","version"}          |
//
// k is the client id itself when it matches /^[A-Za-z0-9_-]{1,200}$/, else "=" + base64url of its UTF-8
// bytes ("=" is no base64url character and cannot start a plain id, so both forms never collide).

/** A client id usable as a key token as it is. */
const PLAIN_ID = /^[A-Za-z0-9_-]{1,200}$/

/** The registry bucket of a subject prefix: '.' as '_', then '_devices' (ferry → ferry_devices). */
export function fleetRegistryBucket(subjectPrefix: string): string {
  return `${subjectPrefix.replaceAll('.', '_')}_devices`
}

/** The key token of a client id. */
export function deviceToken(clientId: string): string {
  return PLAIN_ID.test(clientId) ? clientId : '=' + Buffer.from(clientId, 'utf8').toString('base64url')
}

/** The registry key of a device. */
export function deviceKey(clientId: string): string {
  return `devices.${deviceToken(clientId)}`
}

/** The registry key of a gateway's liveness entry. */
export function gatewayKey(gatewayId: string): string {
  return `gateways.${gatewayId}`
}

/** The client id a device token stands for; undefined for a token no gateway writes. */
export function clientIdOfToken(token: string): string | undefined {
  if (PLAIN_ID.test(token)) return token
  if (!token.startsWith('=') || !/^=[A-Za-z0-9_-]+$/.test(token)) return undefined
  const id = Buffer.from(token.slice(1), 'base64url').toString('utf8')
  return deviceToken(id) === token ? id : undefined
}

/** A device entry's value. */
export interface DeviceEntry {
  readonly device: string
  readonly gateway: string
  /** Random id of the gateway process that wrote it. */
  readonly boot: string
  /** When the device connected, ms since the epoch (the writer's clock; shown, and compared only to order a connect made while a gateway could not see the bucket: liveness.ts byConnectTime). */
  readonly since: number
  readonly address: string
  readonly clean: boolean
}

/** A gateway's liveness entry. */
export interface GatewayEntry {
  readonly gateway: string
  readonly boot: string
  /** ms since the epoch. */
  readonly startedAt: number
  /** How often it renews this entry; silent for 6 of these = dead. */
  readonly heartbeatMs: number
  readonly version: string
}

function parseJson(bytes: Uint8Array): Record<string, unknown> | undefined {
  try {
    const v: unknown = JSON.parse(Buffer.from(bytes).toString('utf8'))
    return typeof v === 'object' && v !== null && !Array.isArray(v) ? (v as Record<string, unknown>) : undefined
  } catch {
    return undefined
  }
}

/** A device entry's value, or undefined when it is not one (never throws). */
export function parseDeviceEntry(bytes: Uint8Array): DeviceEntry | undefined {
  const v = parseJson(bytes)
  if (!v || typeof v.device !== 'string' || typeof v.gateway !== 'string' || typeof v.boot !== 'string') return undefined
  return { device: v.device, gateway: v.gateway, boot: v.boot, since: typeof v.since === 'number' ? v.since : 0, address: typeof v.address === 'string' ? v.address : '', clean: v.clean === true }
}

/** A gateway entry's value, or undefined when it is not one (never throws). */
export function parseGatewayEntry(bytes: Uint8Array): GatewayEntry | undefined {
  const v = parseJson(bytes)
  if (!v || typeof v.gateway !== 'string' || typeof v.boot !== 'string' || typeof v.heartbeatMs !== 'number' || !(v.heartbeatMs > 0)) return undefined
  return { gateway: v.gateway, boot: v.boot, startedAt: typeof v.startedAt === 'number' ? v.startedAt : 0, heartbeatMs: v.heartbeatMs, version: typeof v.version === 'string' ? v.version : '' }
}
