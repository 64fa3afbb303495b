// Build Ferry into self-contained artifacts.
//
//   node scripts/build.mjs            -> dist/ferry.cjs (+ dist/firmware-sim.cjs if firmware-sim/cli.ts exists)
//   node scripts/build.mjs --binary   -> the above, plus dist/ferry, a Node single executable application (SEA)
//
// The .cjs bundles contain every dependency and need no node_modules at runtime: `node dist/ferry.cjs`.
//
// Env overrides (for testing the build itself, not for normal use):
//   FERRY_BUILD_ENTRY      entry for dist/ferry.cjs            (default: src/main.ts)
//   FERRY_BUILD_SIM_ENTRY  entry for dist/firmware-sim.cjs     (default: firmware-sim/cli.ts)

import { build } from 'esbuild';
import { execFileSync } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdirSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { createRequire, isBuiltin } from 'node:module';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const DIST = join(ROOT, 'dist');
const SHEBANG = '#!/usr/bin/env node';
const SEA_FUSE = 'NODE_SEA_FUSE_fce680ab2cc467b6e072b8b5df1996b2';

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

async function buildBinary() {
  const seaConfig = 'dist/sea-config.json';
  const blob = 'dist/sea-prep.blob';
  const exe = 'dist/ferry';
  const run = (cmd, args) => execFileSync(cmd, args, { cwd: ROOT, stdio: 'inherit' });

  writeFileSync(
    join(ROOT, seaConfig),
    JSON.stringify({ main: 'dist/ferry.cjs', output: blob, disableExperimentalSEAWarning: true }, null, 2) + '\n',
  );
  run(process.execPath, ['--experimental-sea-config', seaConfig]);

  rmSync(join(ROOT, exe), { force: true });
  copyFileSync(process.execPath, join(ROOT, exe));
  chmodSync(join(ROOT, exe), 0o755);

  const isMac = process.platform === 'darwin';
  if (isMac) run('codesign', ['--remove-signature', exe]);

  const { inject } = createRequire(import.meta.url)('postject');
  await inject(join(ROOT, exe), 'NODE_SEA_BLOB', readFileSync(join(ROOT, blob)), {
    sentinelFuse: SEA_FUSE,
    ...(isMac ? { machoSegmentName: 'NODE_SEA' } : {}),
  });

  if (isMac) run('codesign', ['--sign', '-', exe]);
  chmodSync(join(ROOT, exe), 0o755);
  return exe;
}

async function main() {
  mkdirSync(DIST, { recursive: true });
  // Remove our own previous outputs so nothing stale survives (e.g. a sim bundle after its source was removed).
  for (const f of ['ferry.cjs', 'firmware-sim.cjs', 'ferry', 'sea-prep.blob', 'sea-config.json']) {
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
    try {
      outputs.push(await buildBinary());
    } catch (err) {
      fail(`single executable (dist/ferry) could not be built: ${err.message}`);
    }
  }

  const width = Math.max(...outputs.map((o) => o.length));
  console.log(`\n${'file'.padEnd(width)}  ${'KiB'.padStart(10)}`);
  for (const o of outputs) console.log(`${o.padEnd(width)}  ${kib(join(ROOT, o)).padStart(10)}`);
}

main().catch((err) => fail(err?.stack || String(err)));
