// The seam between a ring log and a bound it shares with other logs (a LogGroup's members): what a
// log asks of the bound, and what the bound asks of each log. Neither side imports the other.

/** What a shared bound needs of each member log (RingLog implements it). */
export interface BoundMember {
  /**
   * Bytes the log holds against the bound: its segment files, the seal its active segment will
   * get, and the bytes reserved for writes under way (reserveForBound).
   */
  boundUsageBytes(): number
  /** True when a record not yet acknowledged upstream is on disk (in any segment, the active one included). */
  hasUnackedOnDisk(): boolean
  /** True when the oldest segment is sealed (not the one being written). */
  oldestIsSealed(): boolean
  /** Deletes the oldest segment if it is sealed and fully acknowledged; true when it did. */
  deleteOldestForwarded(): Promise<boolean>
  /** Evicts the oldest sealed segment (discard "old", counted); true when it did. */
  evictOldestForBound(why: string): Promise<boolean>
  /**
   * Seals the active segment when it is the log's only segment and holds unacknowledged records, so
   * that it can be evicted. Called with the bound's lock held; waits for the log's writer if needed.
   */
  sealActiveForBound(): Promise<void>
  /** close() began: the bound must not touch this log any more. */
  readonly isShut: boolean
  /** Adds `bytes` (negative: gives back) to what the log reserved for writes under way. */
  reserveForBound(bytes: number): void
}

/** A bound shared by several logs (see log-group.ts). The async methods run under the bound's one lock. */
export interface SharedBound {
  /** Reserves `bytes` for `requester` if they fit now (synchronous: no eviction); true when reserved. */
  tryReserve(requester: BoundMember, bytes: number): boolean
  /** Deletes or evicts until `bytes` more fit, then reserves them; throws LogFullError under discard "new". */
  makeRoom(requester: BoundMember, bytes: number): Promise<void>
  /** Disk full (ENOSPC): deletes forwarded segments of any member, then (discard "old") evicts in order; true when anything was freed. */
  reclaimDiskFull(requester: BoundMember): Promise<boolean>
  /** Runs `fn` under the bound's lock (one eviction or reclaim at a time across the members). */
  exclusive<T>(fn: () => Promise<T>): Promise<T>
}
