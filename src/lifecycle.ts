// The one lifecycle every long-lived part of the gateway has: started by a static `start`/`open` (or
// `start()`), stopped by `close(deadline)`, and observed through `closed()`.
//
// The gateway starts its components in order and, when one fails to start, closes the ones already
// started in reverse order. `main` waits on the gateway's `closed()` instead of polling.

/** A point on the monotonic clock (`performance.now()`, ms) by which a close must have finished. */
export type Deadline = number

/** The deadline `ms` from now. */
export function deadlineIn(ms: number): Deadline {
  return performance.now() + ms
}

/** What is left of a deadline, in ms (never negative). */
export function remainingMs(deadline: Deadline): number {
  return Math.max(0, deadline - performance.now())
}

/** A long-lived part of the gateway. */
export interface Component {
  /**
   * Stops the component: idempotent, and never rejects for work it had to abandon at the deadline
   * (it says so in the log). Resolves once the component holds no socket, file, lock or timer.
   */
  close(deadline: Deadline): Promise<void>
  /**
   * Settles once the component has stopped, for any reason: with `undefined` after `close()`, with
   * the error when it stopped on its own failure. Never rejects.
   */
  closed(): Promise<Error | undefined>
}

/** The settle-once promise behind a component's `closed()`. */
export class ClosedSignal {
  private settle: (err: Error | undefined) => void = () => {}
  private done = false
  readonly promise: Promise<Error | undefined> = new Promise((resolve) => {
    this.settle = resolve
  })

  /** Marks the component stopped; the first call wins. */
  resolve(err?: Error): void {
    if (this.done) return
    this.done = true
    this.settle(err)
  }

  get settled(): boolean {
    return this.done
  }
}

/** The components started so far, in start order, for closing them in reverse. */
export class StartedComponents {
  private readonly started: Array<{ readonly name: string; readonly component: Component }> = []

  /** Records `component` as started (after its start succeeded) and returns it. */
  add<C extends Component>(name: string, component: C): C {
    this.started.push({ name, component })
    return component
  }

  /** Names and components, in start order. */
  get list(): ReadonlyArray<{ readonly name: string; readonly component: Component }> {
    return this.started
  }

  /**
   * Closes every component in reverse start order under one deadline. A close that rejects is
   * reported to `onError` and does not keep the components before it open.
   */
  async closeAll(deadline: Deadline, onError: (name: string, err: unknown) => void): Promise<void> {
    for (const { name, component } of [...this.started].reverse()) {
      try {
        await component.close(deadline)
      } catch (err) {
        onError(name, err)
      }
    }
  }
}
