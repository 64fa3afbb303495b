// Public names of the device fleet simulator.
export { startFleet } from './fleet.js'
export type { Fleet, FleetOptions, FleetStats, LatencySummary, QoS, QosWeights } from './fleet.js'
export { Ledger, LedgerFileError, SeqSet, readLedgerFile, writeLedgerFile, LEDGER_FORMAT_VERSION } from './ledger.js'
export type { AckLedger, LedgerEntry } from './ledger.js'
export { PROFILE_NAMES, FSIM_MAGIC, decodeFsim, encodeFsim } from './payloads.js'
export type { FsimHeader, ProfileName, ProfileWeights } from './payloads.js'
export { VerifyError, formatReport, identifyPayload, verifyStream } from './verify.js'
export type { DeviceReport, VerifyOptions, VerifyReport } from './verify.js'
