// The order in which the next connection tries the --nats-url servers after leaving one that hung.

/** `host:port` of a server URL as nats.js reports it (getServer()); the port defaults to 4222. */
export function hostPort(server: string): string | undefined {
  try {
    const u = new URL(/^[a-z][a-z0-9+.-]*:\/\//i.test(server) ? server : `nats://${server}`)
    return `${u.hostname}:${u.port || '4222'}`
  } catch {
    return undefined
  }
}

/**
 * The servers shuffled (as nats.js would), except that those at `avoid` (`host:port`) come last: a
 * node that stopped answering still accepts TCP connections, and trying it first would cost the
 * whole connect timeout. Undefined when none is at `avoid` (connect as usual).
 */
export function serversAvoiding(servers: readonly string[], avoid: string, random: () => number = Math.random): string[] | undefined {
  const others = servers.filter((s) => hostPort(s) !== avoid)
  if (others.length === servers.length || others.length === 0) return undefined
  for (let i = others.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    ;[others[i], others[j]] = [others[j]!, others[i]!]
  }
  return [...others, ...servers.filter((s) => hostPort(s) === avoid)]
}
