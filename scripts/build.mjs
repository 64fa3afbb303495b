// Build Ferry into self-contained artifacts.
//
//   node scripts/build.mjs            -> dist/ferry.cjs (+ dist/firmware-sim.cjs if firmware-sim/cli.ts exists)
//   node scripts/build.mjs --binary   -> the above, plus the single executables (Node SEA) of the pinned Node
//                                        (scripts/runtime.mjs): dist/ferry (linux-x64) and dist/ferry-linux-arm64
//
// The .cjs bundles contain every dependency and need no node_modules at runtime: `node dist/ferry.cjs`.
//
// Env overrides (for testing the build itself, not for normal use):
//   FERRY_BUILD_ENTRY      entry for dist/ferry.cjs            (default: src/main.ts)
//   FERRY_BUILD_SIM_ENTRY  entry for dist/firmware-sim.cjs     (default: firmware-sim/cli.ts)

import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { isBuiltin } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { NODE_OPTIONS_FLAGS, NODE_VERSION, runtimeNode, V8_FLAGS } from './runtime.mjs';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(ROOT, 'dist');
const SHEBANG = '#!/usr/bin/env node';

const wantBinary = process.argv.slice(2).includes('--binary');

const targets = [
  { entry: process.env.FERRY_BUILD_ENTRY || 'src/main.ts', out: 'dist/ferry.cjs', required: true },
  {
    entry: process.env.FERRY_BUILD_SIM_ENTRY || 'firmware-sim/cli.ts',
    out: 'dist/firmware-sim.cjs',
    required: false,
  },
];

// `import.meta` does not exist in CJS output; esbuild would replace it with `{}` (so import.meta.url === undefined).
// Point it at the bundle file instead. In a SEA, __filename is the executable's path.
const IMPORT_META_SHIM =
  'var __ferry_import_meta_url = require("node:url").pathToFileURL(' +
  'typeof __filename === "string" ? __filename : process.execPath).href;';

// Optional dependencies that libraries load with `try { require(x) } catch {}` and that we deliberately do NOT ship:
//   cbor-extract    native string-extraction addon for cbor-x; cbor-x falls back to its pure-JS decoder
//   bufferutil,     native speedups for ws (pulled in by mqtt); ws falls back to JS
//   utf-8-validate
//   supports-color  colour detection for `debug`
// Left alone, esbuild would either bundle cbor-extract (whose loader then searches the disk for a .node file at
// runtime) or leave a bare runtime require() behind, so behaviour would depend on whether a node_modules happens to
// be near the bundle, and inside the SEA every such require() prints a "require() ... only supports loading built-in
// modules" warning. Instead each resolves to a stub that throws MODULE_NOT_FOUND, i.e. exactly what the libraries
// expect when the package is absent, so the bundle and the SEA behave the same everywhere.
const OPTIONAL_DEPS = ['cbor-extract', 'bufferutil', 'utf-8-validate', 'supports-color'];
const stubOptionalDeps = {
  name: 'stub-optional-deps',
  setup(b) {
    const filter = new RegExp(`^(${OPTIONAL_DEPS.join('|')})$`);
    b.onResolve({ filter }, (args) => ({ path: args.path, namespace: 'ferry-optional-stub' }));
    b.onLoad({ filter: /.*/, namespace: 'ferry-optional-stub' }, (args) => ({
      contents:
        `const e = new Error(${JSON.stringify(`Cannot find module '${args.path}' (optional, not bundled into Ferry)`)});\n` +
        `e.code = 'MODULE_NOT_FOUND';\nthrow e;\n`,
      loader: 'js',
    }));
  },
};

function fail(message) {
  console.error(`\nbuild failed: ${message}`);
  process.exit(1);
}

function kib(path) {
  return (statSync(path).size / 1024).toFixed(1);
}

async function bundle({ entry, out }) {
  const outfile = join(ROOT, out);
  const result = await build({
    absWorkingDir: ROOT,
    entryPoints: [resolve(ROOT, entry)],
    outfile,
    bundle: true,
    format: 'cjs',
    platform: 'node', // node builtins stay external; everything else is inlined
    target: 'node20',
    sourcemap: false,
    minify: false,
    // No keepNames: without minification names survive anyway, and keepNames wraps every closure
    // created on the hot path in a __name() call (measured: ~2 % of the gateway's CPU under load).
    banner: { js: IMPORT_META_SHIM },
    define: {
      'import.meta.url': '__ferry_import_meta_url',
      'import.meta.filename': '__filename',
      'import.meta.dirname': '__dirname',
    },
    plugins: [stubOptionalDeps],
    nodePaths: [join(ROOT, 'node_modules')], // lets an entry outside the repo (FERRY_BUILD_ENTRY) find our deps
    logLevel: 'warning',
    metafile: true,
  });

  // Anything besides node builtins left as a runtime require() is missing from the bundle: it throws without
  // node_modules and inside the SEA. Tolerable only for optional requires wrapped in try/catch, so say so loudly.
  const leftovers = new Set();
  for (const output of Object.values(result.metafile.outputs)) {
    for (const imp of output.imports) if (imp.external && !isBuiltin(imp.path)) leftovers.add(imp.path);
  }
  if (leftovers.size > 0) {
    console.warn(
      `warning: ${out} still require()s at runtime: ${[...leftovers].join(', ')}\n` +
        '  These are NOT in the bundle. If they are optional (try/catch), add them to OPTIONAL_DEPS in scripts/build.mjs.',
    );
  }

  // Exactly one shebang on line 1 (esbuild keeps an entry's own hashbang *above* the banner, so adding one via
  // the banner could produce two).
  const code = readFileSync(outfile, 'utf8').replace(/^(#![^\n]*\n)+/, '');
  writeFileSync(outfile, `${SHEBANG}\n${code}`);
  chmodSync(outfile, 0o755);
  return out;
}

/** The single executables: [target, output]. dist/ferry keeps its name (it is the one most people run). */
const BINARIES = [
  ['linux-x64', 'dist/ferry'],
  ['linux-arm64', 'dist/ferry-linux-arm64'],
];

// A single executable is the pinned official Node binary of its target (scripts/runtime.mjs) with dist/ferry.cjs
// embedded, made by that version's own `node --build-sea` (Node >= 25.5 writes the blob and injects it in one step;
// no postject). The machine's Node is never used: it may be another version, and the blob must be made by the same
// version it runs on. The x64 runtime builds both: the blob is platform independent when useCodeCache and
// useSnapshot are off (V8's code cache and startup snapshot are the only architecture-specific parts), so arm64 is
// cross-built here and CI starts it under qemu to prove it.
async function buildBinary(target, exe) {
  const builder = runtimeNode('linux-x64');
  const seaConfig = `dist/sea-config-${target}.json`;
  writeFileSync(
    join(ROOT, seaConfig),
    JSON.stringify(
      {
        main: 'dist/ferry.cjs',
        mainFormat: 'commonjs',
        executable: runtimeNode(target),
        output: exe,
        disableExperimentalSEAWarning: true,
        useCodeCache: false,
        useSnapshot: false,
        // V8 settings measured in bench/footprint.ts; NODE_OPTIONS can still add to or override them.
        execArgv: V8_FLAGS,
        execArgvExtension: 'env',
      },
      null,
      2,
    ) + '\n',
  );
  rmSync(join(ROOT, exe), { force: true });
  execFileSync(builder, ['--build-sea', seaConfig], { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] });
  chmodSync(join(ROOT, exe), 0o755);
  return exe;
}

async function main() {
  mkdirSync(DIST, { recursive: true });
  // Remove our own previous outputs so nothing stale survives (e.g. a sim bundle after its source was removed).
  for (const f of ['ferry.cjs', 'firmware-sim.cjs', 'ferry', 'ferry-linux-arm64', 'sea-prep.blob', 'sea-config.json', 'sea-config-linux-x64.json', 'sea-config-linux-arm64.json']) {
    rmSync(join(DIST, f), { force: true });
  }

  const outputs = [];
  for (const t of targets) {
    if (!existsSync(resolve(ROOT, t.entry))) {
      if (t.required) fail(`entry not found: ${t.entry}`);
      continue; // optional target: skip silently
    }
    try {
      outputs.push(await bundle(t));
    } catch (err) {
      // esbuild has already printed the detailed diagnostics.
      fail(`esbuild could not bundle ${t.entry} -> ${t.out} (${err.message.split('\n')[0].replace(/:$/, '')}, see above)`);
    }
  }

  if (wantBinary) {
    // The systemd unit gives dist/ferry.cjs users the same settings as far as NODE_OPTIONS allows: keep them in step.
    const unitLine = `Environment=NODE_OPTIONS=${NODE_OPTIONS_FLAGS.join(' ')}`;
    if (!readFileSync(join(ROOT, 'contrib/ferry.service'), 'utf8').split('\n').includes(unitLine)) {
      fail(`contrib/ferry.service must have the line "${unitLine}" (V8_FLAGS in scripts/runtime.mjs)`);
    }
    for (const [target, exe] of BINARIES) {
      try {
        outputs.push(await buildBinary(target, exe));
      } catch (err) {
        fail(`single executable ${exe} (${target}, Node ${NODE_VERSION}) could not be built: ${err.message}`);
      }
    }
  }

  const width = Math.max(...outputs.map((o) => o.length));
  console.log(`\n${'file'.padEnd(width)}  ${'KiB'.padStart(10)}`);
  for (const o of outputs) console.log(`${o.padEnd(width)}  ${kib(join(ROOT, o)).padStart(10)}`);
}

main().catch((err) => fail(err?.stack || String(err)));
