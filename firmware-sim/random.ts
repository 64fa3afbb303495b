// Seeded pseudo-random numbers for the simulator, so that a fleet (profiles, sizes, jitter, QoS draws) can be replayed with --seed.

/** A source of uniform numbers in [0, 1). */
export type Rng = () => number

/** mulberry32: 32-bit state, fast, good enough for load shapes (not for cryptography). */
export function createRng(seed: number): Rng {
  let s = seed >>> 0
  return () => {
    s = (s + 0x6d2b79f5) >>> 0
    let t = s
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

/** Integer in [min, max], both inclusive. */
export function randomInt(rng: Rng, min: number, max: number): number {
  return min + Math.floor(rng() * (max - min + 1))
}

/** Exponentially distributed value with the given mean (the gaps of a Poisson process). */
export function randomExp(rng: Rng, mean: number): number {
  return -Math.log(1 - rng()) * mean
}

/** `base` scaled by a uniform factor in [1 - spread, 1 + spread]. */
export function spreadAround(rng: Rng, base: number, spread: number): number {
  return base * (1 + spread * (2 * rng() - 1))
}

/** Picks a key with probability proportional to its weight; `weights` must have a positive total. */
export function pickWeighted<K>(rng: Rng, weights: readonly (readonly [K, number])[], total: number): K {
  let x = rng() * total
  for (const [key, w] of weights) {
    x -= w
    if (x < 0) return key
  }
  const last = weights[weights.length - 1]
  if (last === undefined) throw new RangeError('pickWeighted: no weights')
  return last[0]
}
