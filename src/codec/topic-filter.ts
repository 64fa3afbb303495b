// MQTT topic filters (`+` one level, `#` the rest): validation, matching a topic, and relations between
// two filters (covers, overlaps) for the ACL, per MQTT 3.1.1 section 4.7.

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
  return matchLevels(filter, topic, false)
}

/** True when every topic matching `inner` also matches `outer` (both valid filters). */
export function filterCovers(outer: string, inner: string): boolean {
  return matchLevels(outer, inner, true)
}

/** True when some topic matches both filters. */
export function filtersOverlap(a: string, b: string): boolean {
  const x = a.split('/')
  const y = b.split('/')
  for (let i = 0; ; i++) {
    const xl = x[i]
    const yl = y[i]
    if (xl === '#' || yl === '#') return true
    if (xl === undefined || yl === undefined) return xl === yl
    if (xl !== '+' && yl !== '+' && xl !== yl) return false
  }
}

/**
 * The one level walk behind {@link topicMatches} and {@link filterCovers}: does `filter` take in
 * `other`, a topic or (`otherIsFilter`) a filter whose `+` and `#` must be taken in whole?
 */
function matchLevels(filter: string, other: string, otherIsFilter: boolean): boolean {
  const f = filter.split('/')
  const o = other.split('/')
  // A filter starting with a wildcard never starts with `$`, so this is [MQTT-4.7.2-1] for topics and filters alike.
  if (other.startsWith('$') && (f[0] === '+' || f[0] === '#')) return false
  for (let i = 0; i < f.length; i++) {
    const fl = f[i]
    if (fl === '#') return true
    if (i >= o.length) return false
    const ol = o[i]
    if (otherIsFilter && (ol === '#' || (ol === '+' && fl !== '+'))) return false
    if (fl !== '+' && fl !== ol) return false
  }
  return f.length === o.length
}
