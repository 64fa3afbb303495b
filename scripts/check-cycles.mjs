#!/usr/bin/env node
// Fails (exit 1) on any import cycle among the TypeScript modules of src/, printing each cycle's path.
//
// Usage: node scripts/check-cycles.mjs [dir]   (default: src/ of this repository)
//
// Every static `import … from`, `export … from`, side-effect `import '…'` and literal `import('…')` counts,
// type-only ones included: `import type` still ties the two modules together (issue 12 wants no cycle at all,
// and a type cycle becomes a value cycle with one edit). Relative specifiers are resolved the way TypeScript's
// nodenext resolution does for this repository: `./x.js` is `./x.ts`, and a folder is its `index.ts`.
// Package specifiers (`aedes`, `node:fs`) are not part of the graph.
//
// The graph's strongly connected components come from Tarjan's algorithm; for each component, cycles are
// printed until every import edge inside it has been shown in one (a shortest cycle through that edge), so a
// component with several loops shows all of them without enumerating every elementary cycle.
import fs from 'node:fs'
import path from 'node:path'
import { fileURLToPath, pathToFileURL } from 'node:url'

/** Orders paths by UTF-16 code units, as `sort()` without a comparator does. */
const byName = (a, b) => (a < b ? -1 : a > b ? 1 : 0)

/** Characters after which a `/` starts a regular expression literal rather than a division. */
const BEFORE_REGEX = new Set('(,=:[!&|?{};+-*%<>~^'.split(''))
/** Keywords after which a `/` starts a regular expression literal. */
const KEYWORDS_BEFORE_REGEX = new Set(['return', 'typeof', 'instanceof', 'in', 'of', 'new', 'delete', 'void', 'throw', 'case', 'do', 'else', 'yield', 'await'])

/**
 * Whether a `/` (not starting a comment) that follows `out` starts a regular expression literal: it does
 * after an operator, an opening bracket, a keyword such as `return`, or at the start; after a name, a
 * number, a closing bracket or a string it is a division.
 */
function regexStartsAfter(out) {
  let k = out.length - 1
  while (k >= 0 && /\s/.test(out[k])) k--
  if (k < 0) return true
  const c = out[k]
  if (BEFORE_REGEX.has(c)) return true
  if (!/[\w$]/.test(c)) return false
  let w = k
  while (w > 0 && /[\w$]/.test(out[w - 1])) w--
  return KEYWORDS_BEFORE_REGEX.has(out.slice(w, k + 1))
}

/**
 * The source with comments replaced by spaces, and the bodies of regular expression literals too (a
 * `/*`, quote or backtick in one must not open a comment, string or template); string and template
 * literal contents are kept.
 */
function withoutComments(src) {
  let out = ''
  let i = 0
  const n = src.length
  // Nesting of template literals and the `${` … `}` braces inside them.
  const stack = []
  while (i < n) {
    const c = src[i]
    const d = src[i + 1]
    const inTemplate = stack.length > 0 && stack[stack.length - 1] === 'template'
    if (inTemplate) {
      if (c === '\\') {
        out += src.slice(i, i + 2)
        i += 2
      } else if (c === '`') {
        stack.pop()
        out += c
        i++
      } else if (c === '$' && d === '{') {
        stack.push(0)
        out += '${'
        i += 2
      } else {
        out += c
        i++
      }
      continue
    }
    if (c === '/' && d === '/') {
      while (i < n && src[i] !== '\n') {
        out += ' '
        i++
      }
    } else if (c === '/' && d === '*') {
      const end = src.indexOf('*/', i + 2)
      const stop = end === -1 ? n : end + 2
      out += src.slice(i, stop).replace(/[^\n]/g, ' ')
      i = stop
    } else if (c === '/' && regexStartsAfter(out)) {
      // A regular expression literal: up to the next unescaped `/` outside a character class, on this line.
      let j = i + 1
      let inClass = false
      while (j < n && src[j] !== '\n') {
        if (src[j] === '\\') j++
        else if (src[j] === '[') inClass = true
        else if (src[j] === ']') inClass = false
        else if (src[j] === '/' && !inClass) break
        j++
      }
      if (j < n && src[j] === '/') {
        out += `/${' '.repeat(j - i - 1)}/`
        i = j + 1
      } else {
        out += c // not a regular expression after all (no closing `/` on the line)
        i++
      }
    } else if (c === "'" || c === '"') {
      let j = i + 1
      while (j < n && src[j] !== c && src[j] !== '\n') j += src[j] === '\\' ? 2 : 1
      out += src.slice(i, j + 1)
      i = j + 1
    } else if (c === '`') {
      stack.push('template')
      out += c
      i++
    } else {
      if (stack.length > 0) {
        if (c === '{') stack[stack.length - 1]++
        else if (c === '}') {
          if (stack[stack.length - 1] === 0) stack.pop()
          else stack[stack.length - 1]--
        }
      }
      out += c
      i++
    }
  }
  return out
}

const STATIC_FROM = /(?:^|[\n;}])\s*(?:import|export)\b[^'"`;]*?\bfrom\s*(['"])([^'"\n]+)\1/g
const SIDE_EFFECT = /(?:^|[\n;}])\s*import\s*(['"])([^'"\n]+)\1/g
const DYNAMIC = /\bimport\s*\(\s*(['"])([^'"\n]+)\1\s*\)/g

/** The module specifiers a TypeScript source imports or re-exports, in order of appearance, without duplicates. */
export function importsOf(source) {
  const code = withoutComments(source)
  const found = []
  for (const re of [STATIC_FROM, SIDE_EFFECT, DYNAMIC]) {
    for (const m of code.matchAll(re)) found.push({ at: m.index, spec: m[2] })
  }
  return [...new Set(found.sort((a, b) => a.at - b.at).map((f) => f.spec))]
}

function tsFilesUnder(dir) {
  const out = []
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name)
    if (e.isDirectory()) out.push(...tsFilesUnder(p))
    else if (e.isFile() && /\.(ts|mts|cts)$/.test(e.name)) out.push(p)
  }
  return out.sort(byName)
}

/** The file a relative specifier names, or undefined when it is a package or names no file we know. */
function resolve(fromFile, spec, known) {
  if (!spec.startsWith('./') && !spec.startsWith('../') && spec !== '.' && spec !== '..') return undefined
  const base = path.resolve(path.dirname(fromFile), spec)
  const candidates = [base, base.replace(/\.js$/, '.ts'), base.replace(/\.mjs$/, '.mts'), base.replace(/\.cjs$/, '.cts'), `${base}.ts`, path.join(base, 'index.ts')]
  return candidates.find((c) => known.has(c))
}

/** Strongly connected components of `graph` (Map node → Set of nodes), Tarjan's algorithm, iterative. */
function tarjan(graph) {
  let counter = 0
  const index = new Map()
  const low = new Map()
  const onStack = new Set()
  const stack = []
  const components = []
  for (const root of graph.keys()) {
    if (index.has(root)) continue
    const work = [{ node: root, edges: [...graph.get(root)], next: 0 }]
    index.set(root, counter)
    low.set(root, counter++)
    stack.push(root)
    onStack.add(root)
    while (work.length > 0) {
      const frame = work[work.length - 1]
      if (frame.next < frame.edges.length) {
        const to = frame.edges[frame.next++]
        if (!index.has(to)) {
          index.set(to, counter)
          low.set(to, counter++)
          stack.push(to)
          onStack.add(to)
          work.push({ node: to, edges: [...graph.get(to)], next: 0 })
        } else if (onStack.has(to)) {
          low.set(frame.node, Math.min(low.get(frame.node), index.get(to)))
        }
        continue
      }
      work.pop()
      if (work.length > 0) {
        const parent = work[work.length - 1].node
        low.set(parent, Math.min(low.get(parent), low.get(frame.node)))
      }
      if (low.get(frame.node) === index.get(frame.node)) {
        const component = []
        let member
        do {
          member = stack.pop()
          onStack.delete(member)
          component.push(member)
        } while (member !== frame.node)
        components.push(component)
      }
    }
  }
  return components
}

/** A shortest path from `from` to `to` using only nodes of `members`, as a list of nodes (both ends included). */
function shortestPath(graph, members, from, to) {
  const previous = new Map([[from, undefined]])
  const queue = [from]
  while (queue.length > 0) {
    const node = queue.shift()
    if (node === to) break
    for (const next of graph.get(node)) {
      if (!members.has(next) || previous.has(next)) continue
      previous.set(next, node)
      queue.push(next)
    }
  }
  const out = [to]
  for (let n = to; n !== from; ) {
    n = previous.get(n)
    out.unshift(n)
  }
  return out
}

/**
 * The import cycles among the TypeScript files under `dir`: each cycle is a list of paths relative to `dir`
 * whose last element repeats the first. `files` is how many files were read.
 */
export function findCycles(dir) {
  const files = tsFilesUnder(dir)
  const known = new Set(files)
  const graph = new Map()
  for (const f of files) {
    const targets = new Set()
    for (const spec of importsOf(fs.readFileSync(f, 'utf8'))) {
      const to = resolve(f, spec, known)
      if (to !== undefined) targets.add(to)
    }
    graph.set(f, targets)
  }
  const cycles = []
  for (const component of tarjan(graph)) {
    const members = new Set(component)
    const shown = new Set()
    for (const from of [...component].sort(byName)) {
      for (const to of [...graph.get(from)].sort(byName)) {
        if (!members.has(to) || shown.has(`${from}\n${to}`)) continue
        const cycle = from === to ? [from, from] : [from, ...shortestPath(graph, members, to, from)]
        for (let i = 0; i + 1 < cycle.length; i++) shown.add(`${cycle[i]}\n${cycle[i + 1]}`)
        cycles.push(cycle.map((p) => path.relative(dir, p)))
      }
    }
  }
  return { files: files.length, cycles }
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const dir = path.resolve(process.argv[2] ?? path.join(path.dirname(fileURLToPath(import.meta.url)), '..', 'src'))
  const { files, cycles } = findCycles(dir)
  const shown = path.relative(process.cwd(), dir) || '.'
  if (cycles.length === 0) {
    console.log(`no import cycle in ${shown}/ (${files} files)`)
  } else {
    console.error(`${cycles.length} import cycle(s) in ${shown}/ (${files} files):`)
    for (const c of cycles) console.error(`  ${c.join(' → ')}`)
    process.exitCode = 1
  }
}
