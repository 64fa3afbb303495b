// Runs Debian's Python paho-mqtt 1.6 (python3-paho-mqtt, /usr/bin/python3) as a client we did not
// write: connects with MQTT 3.1.1 or 5, optionally publishes, and reports what the broker answered.
import { spawn } from 'node:child_process'
import { reapAtExit } from './reap.js'

/** The interpreter that has Debian's python3-paho-mqtt (a pyenv python3 on PATH may not). */
export const PAHO_PYTHON = '/usr/bin/python3'

export interface PahoOptions {
  readonly port: number
  readonly version: 4 | 5
  readonly clientId: string
  readonly clean?: boolean
  readonly keepalive?: number
  readonly username?: string
  readonly password?: string
  /** MQTT 5 CONNECT Session Expiry Interval, seconds. */
  readonly sessionExpiry?: number
  /** Publishes after the CONNACK, one after the other (each waits for its acknowledgement at QoS > 0). */
  readonly publish?: readonly { topic: string; payload: string; qos: 0 | 1 | 2 }[]
  /** How long to stay connected after the CONNACK (and the publishes), milliseconds. */
  readonly holdMs?: number
}

export interface PahoResult {
  /** CONNACK reason code (3.1.1: return code), or undefined without a CONNACK. */
  readonly connack?: number
  /** CONNACK properties by paho's names (MQTT 5), e.g. AssignedClientIdentifier, ServerKeepAlive. */
  readonly connackProps: Record<string, unknown>
  readonly published: number[]
  /** DISCONNECT reason code from the broker (MQTT 5), or the paho rc of a lost connection. */
  readonly disconnect?: number
}

const SCRIPT = String.raw`
import json, sys, time
import paho.mqtt.client as mqtt
from paho.mqtt.properties import Properties
from paho.mqtt.packettypes import PacketTypes
o = json.loads(sys.argv[1])
v5 = o['version'] == 5
res = {'connackProps': {}, 'published': []}
if v5:
    c = mqtt.Client(client_id=o['clientId'], protocol=mqtt.MQTTv5)
else:
    c = mqtt.Client(client_id=o['clientId'], clean_session=o.get('clean', True), protocol=mqtt.MQTTv311)
if 'username' in o:
    c.username_pw_set(o['username'], o.get('password'))
def on_connect(client, userdata, flags, rc, properties=None):
    res['connack'] = rc.value if hasattr(rc, 'value') else rc
    if properties is not None:
        for k, val in properties.__dict__.items():
            if k[0].isupper():
                res['connackProps'][k] = val if not isinstance(val, bytes) else val.hex()
def on_disconnect(client, userdata, rc, properties=None):
    res['disconnect'] = rc.value if hasattr(rc, 'value') else rc
def on_publish(client, userdata, mid):
    res['published'].append(mid)
c.on_connect = on_connect
c.on_disconnect = on_disconnect
c.on_publish = on_publish
kw = {}
if v5:
    p = Properties(PacketTypes.CONNECT)
    if 'sessionExpiry' in o:
        p.SessionExpiryInterval = o['sessionExpiry']
        kw['properties'] = p
    kw['clean_start'] = o.get('clean', True)
try:
    c.connect('127.0.0.1', o['port'], keepalive=o.get('keepalive', 60), **kw)
except Exception as e:
    res['error'] = str(e)
    print(json.dumps(res)); sys.exit(0)
c.loop_start()
deadline = time.time() + 5
while 'connack' not in res and 'disconnect' not in res and time.time() < deadline:
    time.sleep(0.02)
if res.get('connack') == 0:
    for m in o.get('publish', []):
        info = c.publish(m['topic'], m['payload'], qos=m['qos'])
        if m['qos'] > 0:
            end = time.time() + 5
            while not info.is_published() and 'disconnect' not in res and time.time() < end:
                time.sleep(0.01)
    time.sleep(o.get('holdMs', 0) / 1000)
    c.disconnect()
time.sleep(0.1)
c.loop_stop()
print(json.dumps(res))
`

/** Runs one paho session and resolves with what the broker answered. */
export function runPaho(opts: PahoOptions): Promise<PahoResult> {
  const child = reapAtExit(spawn(PAHO_PYTHON, ['-c', SCRIPT, JSON.stringify(opts)], { stdio: ['ignore', 'pipe', 'pipe'] }))
  let out = ''
  let err = ''
  child.stdout!.on('data', (b: Buffer) => (out += b.toString()))
  child.stderr!.on('data', (b: Buffer) => (err += b.toString()))
  return new Promise((resolve, reject) => {
    child.once('exit', (code) => {
      try {
        resolve(JSON.parse(out.trim().split('\n').pop() ?? '') as PahoResult)
      } catch {
        reject(new Error(`paho exited ${code}: ${err || out}`))
      }
    })
  })
}
