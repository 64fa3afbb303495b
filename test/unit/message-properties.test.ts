// The MQTT 5 PUBLISH properties Ferry keeps (src/ingress/ingress.ts messageProperties): mqtt-packet's
// names to the codec's MessageProperties, with the expiry made absolute.
import { describe, expect, it } from 'vitest'
import { messageProperties } from '../../src/ingress/ingress.js'

describe('message properties', () => {
  it('message properties - none for MQTT 3.1.1 or an empty set; each kept property mapped; expiry made absolute', () => {
    expect(messageProperties(undefined, 1000)).toBeUndefined()
    expect(messageProperties({}, 1000)).toBeUndefined()
    expect(messageProperties({ topicAlias: undefined, payloadFormatIndicator: false }, 1000)).toBeUndefined()
    const cd = Buffer.from([1, 2, 3])
    expect(
      messageProperties(
        { messageExpiryInterval: 60, contentType: 'application/cbor', payloadFormatIndicator: true, responseTopic: 'r/1', correlationData: cd, userProperties: { a: '1', b: ['2', '3'] }, subscriptionIdentifier: 4 },
        1_000,
      ),
    ).toEqual({ expiresAtMs: 61_000, contentType: 'application/cbor', utf8: true, responseTopic: 'r/1', correlationData: cd, userProperties: [['a', '1'], ['b', '2'], ['b', '3']] })
  })
})
