// A device on a raw MQTT 3.1.1 connection (mqtt-packet over net), for downlink tests: it can hold its
// PUBACKs back or never send them (mqtt.js acknowledges by itself; only MQTT 5 lets it hold one).
import net from 'node:net'
import mqttPacket from 'mqtt-packet'

export interface Received {
  readonly topic: string
  /** The payload as UTF-8 text. */
  readonly payload: string
  readonly bytes: Buffer
  readonly messageId: number | undefined
  readonly at: number
}

export interface RawDevice {
  /** Every PUBLISH received, in order. */
  readonly got: Received[]
  /** PUBACKs held back (ack 'manual'): call one to send it. */
  readonly held: (() => void)[]
  /** The CONNACK's session-present flag. */
  readonly sessionPresent: boolean
  /** Publishes at QoS 1 and waits for the PUBACK (rejects after 5 s). */
  publish(topic: string, payload: string | Buffer): Promise<void>
  /** Sends DISCONNECT and closes the connection (a persistent session stays on the broker). */
  end(): Promise<void>
}

export interface RawDeviceOptions {
  /** 'auto' acknowledges at once, 'manual' holds PUBACKs in `held`, 'never' sends none. Default 'auto'. */
  readonly ack?: 'auto' | 'manual' | 'never'
  /** Clean session (default true). */
  readonly clean?: boolean
  /** Filters to subscribe to at QoS 1 (default `commands/<id>/#`; [] subscribes to nothing). */
  readonly filters?: readonly string[]
  /** Called with every PUBLISH received (after it is recorded in `got`). */
  readonly onPublish?: (p: Received, d: RawDevice) => void
}

/** Connects, waits for CONNACK (and SUBACK when it subscribes). */
export async function rawDevice(port: number, id: string, opts: RawDeviceOptions = {}): Promise<RawDevice> {
  const ack = opts.ack ?? 'auto'
  const filters = opts.filters ?? [`commands/${id}/#`]
  const socket = net.connect(port, '127.0.0.1')
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', () => resolve())
    socket.once('error', reject)
  })
  socket.on('error', () => {}) // the gateway may close first
  const parser = mqttPacket.parser({ protocolVersion: 4 })
  const pubacks = new Map<number, () => void>()
  let nextId = 1
  let connack: (p: { returnCode?: number; sessionPresent?: boolean }) => void = () => {}
  let suback: () => void = () => {}
  const connected = new Promise<boolean>((resolve, reject) => {
    connack = (p) => (p.returnCode ? reject(new Error(`CONNACK ${p.returnCode} for ${id}`)) : resolve(p.sessionPresent ?? false))
    socket.once('close', () => reject(new Error(`connection of ${id} closed before CONNACK`)))
  })
  const subscribed = new Promise<void>((r) => (suback = r))
  let sessionPresent = false
  const d: RawDevice = {
    got: [],
    held: [],
    get sessionPresent() {
      return sessionPresent
    },
    publish: (topic, payload) =>
      new Promise<void>((resolve, reject) => {
        const messageId = ++nextId
        const t = setTimeout(() => (pubacks.delete(messageId), reject(new Error(`no PUBACK for ${topic} within 5 s`))), 5000)
        pubacks.set(messageId, () => (clearTimeout(t), resolve()))
        socket.write(mqttPacket.generate({ cmd: 'publish', topic, payload, qos: 1, messageId, retain: false, dup: false }))
      }),
    end: async () => {
      if (socket.destroyed) return
      const closed = new Promise((r) => socket.once('close', r))
      socket.write(mqttPacket.generate({ cmd: 'disconnect' }))
      socket.end()
      await closed
    },
  }
  parser.on('packet', (p) => {
    if (p.cmd === 'connack') connack(p)
    if (p.cmd === 'suback') suback()
    if (p.cmd === 'puback') pubacks.get(p.messageId!)?.()
    if (p.cmd !== 'publish') return
    const bytes = Buffer.from(p.payload as Buffer)
    const got: Received = { topic: p.topic, payload: bytes.toString(), bytes, messageId: p.messageId, at: Date.now() }
    d.got.push(got)
    opts.onPublish?.(got, d)
    const puback = (): void => void socket.write(mqttPacket.generate({ cmd: 'puback', messageId: p.messageId! }))
    if (p.qos === 0) return
    if (ack === 'auto') puback()
    else if (ack === 'manual') d.held.push(puback)
  })
  socket.on('data', (b) => parser.parse(b))
  socket.write(mqttPacket.generate({ cmd: 'connect', protocolId: 'MQTT', protocolVersion: 4, clientId: id, clean: opts.clean ?? true, keepalive: 60 }))
  sessionPresent = await connected
  if (filters.length > 0) {
    socket.write(mqttPacket.generate({ cmd: 'subscribe', messageId: 1, subscriptions: filters.map((topic) => ({ topic, qos: 1 as const })) }))
    await subscribed
  }
  return d
}

/** Polls `cond` every 50 ms until it holds or `ms` passed; resolves with its last value. */
export async function until(cond: () => boolean | Promise<boolean>, ms = 10_000): Promise<boolean> {
  const end = Date.now() + ms
  while (Date.now() < end) {
    if (await cond()) return true
    await new Promise((r) => setTimeout(r, 50))
  }
  return cond()
}
