// Types of scripts/check-cycles.mjs, for its unit test (test/unit/check-cycles.test.ts).

/** The module specifiers a TypeScript source imports or re-exports, in order of appearance, without duplicates. */
export function importsOf(source: string): string[]

/**
 * The import cycles among the TypeScript files under `dir`: each cycle is a list of paths relative to `dir`
 * whose last element repeats the first. `files` is how many files were read.
 */
export function findCycles(dir: string): { files: number; cycles: string[][] }
