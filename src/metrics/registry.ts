// Minimal metric types (counter, gauge, histogram) and Prometheus text exposition.

type Labels = Record<string, string>

function labelKey(labels: Labels | undefined): string {
  if (!labels) return ''
  const keys = Object.keys(labels).sort()
  return keys.map((k) => `${k}="${String(labels[k]).replace(/\\/g, '\\\\').replace(/"/g, '\\"').replace(/\n/g, '\\n')}"`).join(',')
}

interface Metric {
  readonly name: string
  readonly help: string
  readonly type: 'counter' | 'gauge' | 'histogram'
  render(): string
}

/** One label set of a counter and its count. */
interface Series {
  readonly labels: Readonly<Labels> | undefined
  value: number
}

/** A monotonically increasing count, optionally split by labels. */
export class Counter implements Metric {
  readonly type = 'counter'
  /** By rendered label key (exposition order is insertion order); each keeps its labels as given. */
  private readonly series = new Map<string, Series>()
  constructor(readonly name: string, readonly help: string) {}
  private seriesFor(labels: Labels | undefined): Series {
    const k = labelKey(labels)
    let s = this.series.get(k)
    if (!s) {
      s = { labels: labels ? { ...labels } : undefined, value: 0 }
      this.series.set(k, s)
    }
    return s
  }
  inc(n = 1, labels?: Labels): void {
    this.seriesFor(labels).value += n
  }
  /** A handle for one label set, resolved once: for hot paths (no label formatting per call). */
  child(labels: Labels): { inc(n?: number): void } {
    const s = this.seriesFor(labels)
    return { inc: (n = 1) => void (s.value += n) }
  }
  get(labels?: Labels): number {
    return this.series.get(labelKey(labels))?.value ?? 0
  }
  /** The sum over every label set. */
  total(): number {
    let t = 0
    for (const s of this.series.values()) t += s.value
    return t
  }
  /** The count by the value of label `name`, summed over the other labels (label sets without it are left out). */
  byLabel(name: string): Map<string, number> {
    const out = new Map<string, number>()
    for (const s of this.series.values()) {
      const v = s.labels?.[name]
      if (v !== undefined) out.set(String(v), (out.get(String(v)) ?? 0) + s.value)
    }
    return out
  }
  /** Every label set with its count, in exposition order. */
  entries(): Array<{ readonly labels: Readonly<Labels> | undefined; readonly value: number }> {
    return [...this.series.values()].map((s) => ({ labels: s.labels, value: s.value }))
  }
  render(): string {
    if (this.series.size === 0) return `${this.name} 0\n`
    let out = ''
    for (const [k, s] of this.series) out += k ? `${this.name}{${k}} ${s.value}\n` : `${this.name} ${s.value}\n`
    return out
  }
}

/** A value that goes up and down; either set directly or read from a function at scrape time. */
export class Gauge implements Metric {
  readonly type = 'gauge'
  private value = 0
  private fn: (() => number) | undefined
  constructor(readonly name: string, readonly help: string) {}
  set(v: number): void {
    this.value = v
  }
  /** Reads the value from `fn` whenever the gauge is read. */
  collect(fn: () => number): void {
    this.fn = fn
  }
  get(): number {
    return this.fn ? this.fn() : this.value
  }
  render(): string {
    return `${this.name} ${this.get()}\n`
  }
}

/**
 * A gauge split by labels, each label set read from its own function at scrape time (e.g. one series
 * per priority class). Series render in the order they were first collected; none renders nothing.
 */
export class LabelledGauge implements Metric {
  readonly type = 'gauge'
  private readonly series = new Map<string, () => number>()
  constructor(readonly name: string, readonly help: string) {}
  /** Reads the series of `labels` from `fn` whenever the gauge is read (replaces an earlier `fn` for the same labels). */
  collect(labels: Labels, fn: () => number): void {
    this.series.set(labelKey(labels), fn)
  }
  /** The value of the series of `labels` now, undefined when it is not collected. */
  get(labels: Labels): number | undefined {
    return this.series.get(labelKey(labels))?.()
  }
  render(): string {
    let out = ''
    for (const [k, fn] of this.series) out += `${this.name}{${k}} ${fn()}\n`
    return out
  }
}

/** A histogram with fixed upper bounds (seconds for latencies). */
export class Histogram implements Metric {
  readonly type = 'histogram'
  private readonly counts: number[]
  private sum = 0
  private count = 0
  constructor(readonly name: string, readonly help: string, readonly bounds: readonly number[]) {
    this.counts = Array.from({ length: bounds.length }, () => 0)
  }
  observe(v: number): void {
    this.sum += v
    this.count++
    for (let i = 0; i < this.bounds.length; i++) {
      if (v <= (this.bounds[i] ?? Infinity)) {
        this.counts[i] = (this.counts[i] ?? 0) + 1
        break
      }
    }
  }
  get total(): number {
    return this.count
  }
  render(): string {
    let s = ''
    let cum = 0
    for (let i = 0; i < this.bounds.length; i++) {
      cum += this.counts[i] ?? 0
      s += `${this.name}_bucket{le="${this.bounds[i]}"} ${cum}\n`
    }
    s += `${this.name}_bucket{le="+Inf"} ${this.count}\n${this.name}_sum ${this.sum}\n${this.name}_count ${this.count}\n`
    return s
  }
}

/** Holds metrics in declaration order and renders them in Prometheus text format 0.0.4. */
export class Registry {
  private readonly metrics: Metric[] = []
  add<M extends Metric>(m: M): M {
    this.metrics.push(m)
    return m
  }
  render(): string {
    return this.metrics.map((m) => `# HELP ${m.name} ${m.help}\n# TYPE ${m.name} ${m.type}\n${m.render()}`).join('')
  }
}
