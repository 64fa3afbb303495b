// Public names of the forward stage.
export { Forwarder } from './forwarder.js'
export type { ForwarderOptions } from './forwarder.js'
export { ensureStream, subjectCovers, uplinkSubjects } from './stream.js'
export { DeadLetters } from './dead-letter.js'
export type { DeadLetter } from './dead-letter.js'
export { classifyPubAck } from './puback.js'
export type { PubAckResult } from './puback.js'
