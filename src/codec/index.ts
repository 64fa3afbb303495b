// Public names of the codec: pure functions shared by ingress, forward, tools and firmware-sim.
export { topicToSubject, subjectToTopic, partitionOf, subjectPartition, eventSubjectDevice, UplinkSubjects, deviceToken, tokenToDevice, canonicalDevice, canonicalLevels, eventSubject, tokensToLevels, EVENT_TOPIC_PREFIX } from './subject.js'
export { encodePayload, encodeCbor, decodeCbor, PayloadPolicy, CONTENT_TYPE_CBOR, CONTENT_TYPE_JSON, CONTENT_TYPE_OCTETS } from './payload.js'
export type { EncodedPayload } from './payload.js'
export { encodeEntry, decodeEntry, entryExpiresAtMs, entryClientId, propertiesBlockBytes, encodingOf, ENCODING_CONTENT_TYPE, ENTRY_VERSION, ENTRY_VERSION_PROPERTIES } from './entry.js'
export type { Entry, PayloadEncoding } from './entry.js'
export { filterCovers, filtersOverlap, topicFilterProblem, topicMatches } from './topic-filter.js'
export {
  encodeUplinkHeaders,
  encodeUplinkHeadersWithProperties,
  propertyHeaderBytes,
  escapeHeaderValue,
  unescapeHeaderValue,
  escapeHeaderName,
  unescapeHeaderName,
  USER_PROPERTY_HEADER_PREFIX,
  PROPS_OMITTED_HEADER,
  EXPIRES_HEADER,
  RESPONSE_TOPIC_HEADER,
  CORRELATION_DATA_HEADER,
  USER_PROPERTY_HEADERS_MAX,
  USER_PROPERTY_BYTES_MAX,
  CONTENT_TYPE_UTF8_TEXT,
  isoTime,
  topicCarriesClient,
  UplinkHeaderEncoder,
} from './headers.js'
export type { PropertyHeaders, UplinkHeaderMode } from './headers.js'
export { uplinkMessage, uplinkMsgId, isEventTopic, uplinkClientId, uplinkContentType } from './nats-message.js'
export type { UplinkContext, UplinkMessage } from './nats-message.js'
export type { MessageProperties } from './properties.js'
