// RPC requests in tests: the Ferry-Status of the reply, or NO_RESPONDERS when no gateway holds the
// device (NATS's own no-responders status, which nats.js turns into a RequestError).
import { errors, headers } from '@nats-io/transport-node'
import type { NatsConnection } from '@nats-io/transport-node'

/** What rpcStatus returns when the server answered no responders (503): no gateway holds the device. */
export const NO_RESPONDERS = 'no responders'

/** Whether `err` (a rejected nc.request) is NATS's no-responders status. */
export function isNoResponders(err: unknown): boolean {
  return err instanceof errors.RequestError && err.isNoResponders()
}

/**
 * Asks `subject` and resolves the reply's Ferry-Status, or NO_RESPONDERS; other failures (a timeout)
 * reject. `h`: request headers.
 */
export async function rpcStatus(nc: NatsConnection, subject: string, body: string | Uint8Array = '{}', h: Record<string, string> = {}, timeoutMs = 5000): Promise<string | undefined> {
  const hdrs = headers()
  for (const [k, v] of Object.entries(h)) hdrs.set(k, v)
  try {
    const r = await nc.request(subject, body, { timeout: timeoutMs, headers: hdrs })
    return r.headers?.get('Ferry-Status')
  } catch (err) {
    if (isNoResponders(err)) return NO_RESPONDERS
    throw err
  }
}
