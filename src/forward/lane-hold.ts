// The live lane's admission rule, as a pure data structure: which new records may overtake the backlog.
//
// Invariant: a record is sent ahead of the main reader only if no earlier record that is not yet
// stored shares its topic or its device. The held set starts with the topics and devices of every
// record not yet stored when the lane opens (the backlog and the in-flight window); every record
// the lane leaves to the main reader adds its own topic and device at once, so a later record of
// either waits too (issue 10: a new device's alarm no longer overtakes an older device's alarm
// on the same topic that the lane had left behind).
//
// Events (presence, command events) share one pseudo-topic per kind, so they are keyed by their
// device only.

/** Keys of records: `t:<topic>` for non-event topics, `c:<client id>` always. */
export class LaneHold {
  private readonly held = new Set<string>()

  /** Number of keys held (bounded by the caller). */
  get size(): number {
    return this.held.size
  }

  /** Holds the topic (unless an event) and the device of a record not yet stored. */
  hold(topic: string, clientId: string, isEvent: boolean): void {
    if (!isEvent) this.held.add(`t:${topic}`)
    this.held.add(`c:${clientId}`)
  }

  /**
   * True when a record newer than everything held may be sent now. When false, its keys are held
   * from now on: it is left to the main reader, and nothing after it on its topic or device may
   * overtake it.
   */
  admit(topic: string, clientId: string, isEvent: boolean): boolean {
    const blocked = this.held.has(`c:${clientId}`) || (!isEvent && this.held.has(`t:${topic}`))
    if (blocked) this.hold(topic, clientId, isEvent)
    return !blocked
  }
}
