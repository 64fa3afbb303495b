// The NATS header block of an uplink message, encoded in one step (the hot path of forwarding).
//
// NATS/1.0\r\n
// Nats-Msg-Id: <gatewayId>:<epoch>:<seq>\r\n
// Nats-Expected-Stream: <stream>\r\n   (JetStream refuses the publish when another stream captures the subject)
// Ferry-Client: <MQTT client id, escaped>\r\n
// Content-Type: <content type>\r\n
// \r\n
//
// Header values cannot hold CR or LF; MQTT client ids can hold anything. In Ferry-Client, `%` and
// every byte <= 0x1f or == 0x7f are written as `%XX` (the subject rule, without the space and
// wildcard cases), and so is a space at either end (decoders trim values), so the value is always
// valid and the original id recoverable.

const MUST_ESCAPE = /[%\x00-\x1f\x7f]|^ | $/

/** Escapes a value for a NATS header as described above (also a leading or trailing space, which decoders trim). */
export function escapeHeaderValue(v: string): string {
  if (!MUST_ESCAPE.test(v)) return v
  return v.replace(/[%\x00-\x1f\x7f]|^ | $/g, (c) => '%' + c.charCodeAt(0).toString(16).toUpperCase().padStart(2, '0'))
}

/** Reverses {@link escapeHeaderValue}. */
export function unescapeHeaderValue(v: string): string {
  return v.includes('%') ? v.replace(/%([0-9A-F]{2})/g, (_m, hex: string) => String.fromCharCode(parseInt(hex, 16))) : v
}

/**
 * The header block of one uplink message, as bytes. `msgId` and `contentType` are ASCII by construction; `stream` is the
 * configured stream name (no CR/LF: config validation refuses white space in it).
 */
export function encodeUplinkHeaders(msgId: string, stream: string, clientId: string, contentType: string): Uint8Array {
  return Buffer.from(`NATS/1.0\r\nNats-Msg-Id: ${msgId}\r\nNats-Expected-Stream: ${stream}\r\nFerry-Client: ${escapeHeaderValue(clientId)}\r\nContent-Type: ${contentType}\r\n\r\n`, 'utf8')
}
