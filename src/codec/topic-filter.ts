// MQTT topic filters (`+` one level, `#` the rest): validation and matching, per MQTT 3.1.1 section 4.7.

/** Why `filter` is not a valid MQTT topic filter, or undefined when it is. */
export function topicFilterProblem(filter: string): string | undefined {
  if (filter.length === 0) return 'is empty'
  const levels = filter.split('/')
  for (let i = 0; i < levels.length; i++) {
    const l = levels[i]!
    if (l.includes('#') && (l !== '#' || i !== levels.length - 1)) return '"#" must be a whole level and the last one [MQTT-4.7.1-2]'
    if (l.includes('+') && l !== '+') return '"+" must be a whole level [MQTT-4.7.1-3]'
  }
  return undefined
}

/** True when `topic` matches `filter`. Filters starting with a wildcard do not match `$` topics [MQTT-4.7.2-1]. */
export function topicMatches(filter: string, topic: string): boolean {
  const f = filter.split('/')
  const t = topic.split('/')
  if (topic.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false
  for (let i = 0; i < f.length; i++) {
    const fl = f[i]
    if (fl === '#') return true
    if (i >= t.length) return false
    if (fl !== '+' && fl !== t[i]) return false
  }
  return f.length === t.length
}
