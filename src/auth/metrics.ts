// The metrics admission records, as admission needs them: structural types that the gateway's
// catalogue (src/metrics) satisfies. Admission does not know the catalogue.

/** A count split by one label (its value given at each increment). */
export interface CountBy<L extends string> {
  inc(n: number, labels: Readonly<Record<L, string>>): void
}

/** What admission records. */
export interface AdmissionMetrics {
  /** ferry_auth_reloads_total, by result. */
  readonly authReloads: CountBy<'result'>
  /** ferry_mqtt_auth_failures_total, by reason. */
  readonly mqttAuthFailures: CountBy<'reason'>
  /** ferry_mqtt_acl_denials_total, by action. */
  readonly mqttAclDenials: CountBy<'action'>
}
