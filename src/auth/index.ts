// Public names of admission: device identity, credentials and ACLs.
export { Admission, certificateIdentity } from './admission.js'
export type { AdmissionOptions, ClientConnection, ConnackRefusal } from './admission.js'
export type { AdmissionMetrics } from './metrics.js'
export { Acl, filterCovers, filtersOverlap } from './acl.js'
export { Passwords, hashPassword, setPassword, parsePasswordFile, deviceNameProblem } from './passwords.js'
export { serverTlsOptions, readPem, parseSubjectAltName } from './tls.js'
export type { SanEntry } from './tls.js'
