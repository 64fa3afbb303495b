// Public names of the codec: pure functions shared by ingress, forward, tools and firmware-sim.
export { topicToSubject, subjectToTopic, deviceToken, tokenToDevice, canonicalDevice, canonicalLevels, eventSubject, tokensToLevels, EVENT_TOPIC_PREFIX } from './subject.js'
export { encodePayload, encodeCbor, decodeCbor, PayloadPolicy, CONTENT_TYPE_CBOR, CONTENT_TYPE_JSON, CONTENT_TYPE_OCTETS } from './payload.js'
export type { EncodedPayload } from './payload.js'
export { encodeEntry, decodeEntry, encodingOf, ENCODING_CONTENT_TYPE, ENTRY_VERSION } from './entry.js'
export type { Entry, PayloadEncoding } from './entry.js'
export { topicFilterProblem, topicMatches } from './topic-filter.js'
export { encodeUplinkHeaders, escapeHeaderValue, unescapeHeaderValue } from './headers.js'
