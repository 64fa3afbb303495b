// Child processes a test file started: killed when the test worker exits, so a test that times out
// before its cleanup leaves no gateway or nats-server behind.
import type { ChildProcess } from 'node:child_process'

const children = new Set<ChildProcess>()
let installed = false

/** Registers a child process to be killed (SIGKILL) at exit if it is still running then. */
export function reapAtExit(child: ChildProcess): ChildProcess {
  if (!installed) {
    installed = true
    process.once('exit', () => {
      for (const c of children) if (c.exitCode === null && c.signalCode === null) c.kill('SIGKILL')
    })
  }
  children.add(child)
  child.once('exit', () => children.delete(child))
  return child
}
