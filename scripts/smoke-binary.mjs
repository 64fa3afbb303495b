// Smoke test of a single executable, as a site would run it: from an empty directory, no node_modules, no Node.
//
//   node scripts/smoke-binary.mjs dist/ferry
//   node scripts/smoke-binary.mjs dist/ferry-linux-arm64 --runner "qemu-aarch64-static -L /usr/aarch64-linux-gnu"
//
// Copies the executable into an empty temporary directory and, from there: `ferry version` must name Ferry's version
// and the pinned Node (scripts/runtime.mjs), and the executable must run with the V8 settings of scripts/runtime.mjs; `ferry run` against a private nats-server (JetStream, free port,
// temporary store) must take one MQTT QoS 1 publish (PUBACK) and forward it into the FERRY stream, where it is read
// back with its headers and payload. Stops everything it started, by PID, and fails after --timeout-seconds
// (default 90: arm64 under qemu user-mode emulation is several times slower). Needs nats-server (PATH or /usr/sbin).
// Runs with the machine's Node (it uses mqtt, @nats-io/* and cbor-x from node_modules).

import { execFileSync, spawn } from 'node:child_process';
import { chmodSync, copyFileSync, existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { parseArgs } from 'node:util';
import { jetstreamManager } from '@nats-io/jetstream';
import { connect as natsConnect } from '@nats-io/transport-node';
import { decode as decodeCbor } from 'cbor-x';
import mqtt from 'mqtt';
import { NODE_VERSION, ROOT, V8_FLAGS } from './runtime.mjs';

const { values, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    runner: { type: 'string', default: '' },
    'timeout-seconds': { type: 'string', default: '90' },
  },
});
if (positionals.length !== 1) {
  console.error('usage: node scripts/smoke-binary.mjs EXECUTABLE [--runner "qemu-aarch64-static -L /usr/aarch64-linux-gnu"] [--timeout-seconds 90]');
  process.exit(2);
}
const source = resolve(positionals[0]);
const runner = values.runner.split(' ').filter((s) => s !== '');
const timeoutMs = Number(values['timeout-seconds']) * 1000;
const ferryVersion = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8')).version;
const t0 = performance.now();
const elapsed = () => `${((performance.now() - t0) / 1000).toFixed(1)} s`;
const say = (msg) => console.log(`smoke ${positionals[0]}: ${msg} (${elapsed()})`);

/** Every process this script started, stopped by PID at the end whatever happened. */
const children = new Set();
const tmp = mkdtempSync(join(tmpdir(), 'ferry-smoke-'));
// However this process ends (an uncaught error, a closed stdout), nothing it started outlives it.
process.on('exit', () => {
  for (const child of children) if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
});
process.stdout.on('error', () => {});

function natsServerPath() {
  for (const p of ['/usr/sbin/nats-server', '/usr/bin/nats-server', '/usr/local/bin/nats-server']) if (existsSync(p)) return p;
  try {
    return execFileSync('sh', ['-c', 'command -v nats-server'], { encoding: 'utf8' }).trim();
  } catch {
    throw new Error('nats-server is not installed: apt-get update && apt-get install -y nats-server');
  }
}

/** Spawns a process whose output is kept; `exited` resolves with its exit code (or signal name). */
function start(cmd, args, opts = {}) {
  const child = spawn(cmd, args, { cwd: tmp, stdio: ['ignore', 'pipe', 'pipe'], ...opts });
  children.add(child);
  let output = '';
  const keep = (d) => {
    output += d.toString();
    if (output.length > 100_000) output = output.slice(-50_000);
  };
  child.stdout.on('data', keep);
  child.stderr.on('data', keep);
  const exited = new Promise((res) => child.once('exit', (code, signal) => res(code ?? signal)));
  void exited.then(() => children.delete(child));
  return { child, exited, output: () => output };
}

/** Resolves with the first match of `re` in the process's output; rejects if it exits first. */
async function waitFor(proc, re, what) {
  for (;;) {
    const m = re.exec(proc.output());
    if (m) return m;
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) {
      throw new Error(`${what}: the process exited (${proc.child.exitCode ?? proc.child.signalCode}) first:\n${proc.output().slice(-3000)}`);
    }
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function stopAll() {
  for (const child of [...children].reverse()) {
    if (child.exitCode !== null || child.signalCode !== null) continue;
    process.kill(child.pid, 'SIGKILL');
    await new Promise((r) => child.once('exit', r));
  }
}

async function smoke() {
  // 1. From an empty directory: only the executable in it.
  const exe = join(tmp, 'ferry');
  copyFileSync(source, exe);
  chmodSync(exe, 0o755);
  const command = [...runner, exe];

  const version = start(command[0], [...command.slice(1), 'version']);
  const code = await version.exited;
  const printed = version.output().trim();
  const expected = new RegExp(`^${ferryVersion.replaceAll('.', '\\.')} \\(node v${NODE_VERSION.replaceAll('.', '\\.')}, linux-(x64|arm64)\\)$`);
  if (code !== 0 || !expected.test(printed)) throw new Error(`'ferry version' exited ${code} and printed ${JSON.stringify(printed)}, expected ${expected}`);
  say(`version: ${printed}`);

  // The V8 settings are built in (SEA execArgv): a preloaded probe (NODE_OPTIONS still applies) reports them.
  const probe = join(tmp, 'probe.cjs');
  const probeOut = join(tmp, 'probe.json');
  writeFileSync(probe, `require('node:fs').writeFileSync(${JSON.stringify(probeOut)}, JSON.stringify(process.execArgv))\n`);
  const probed = start(command[0], [...command.slice(1), 'version'], { env: { ...process.env, NODE_OPTIONS: `--require ${probe}` } });
  await probed.exited;
  const execArgv = existsSync(probeOut) ? readFileSync(probeOut, 'utf8') : `nothing (${probed.output().trim()})`;
  if (execArgv !== JSON.stringify(V8_FLAGS)) throw new Error(`V8 settings: the executable runs with ${execArgv}, expected ${JSON.stringify(V8_FLAGS)}`);
  rmSync(probe);
  rmSync(probeOut);
  say(`V8 settings in effect: ${V8_FLAGS.join(' ')}`);

  // 2. A private nats-server with JetStream; it picks its port (-p -1) and logs it.
  const nats = start(natsServerPath(), ['-a', '127.0.0.1', '-p', '-1', '-js', '-sd', join(tmp, 'js')]);
  const natsPort = Number((await waitFor(nats, /Listening for client connections on 127\.0\.0\.1:(\d+)/, 'nats-server'))[1]);
  const natsUrl = `nats://127.0.0.1:${natsPort}`;

  // 3. The gateway, from the empty directory; it picks its ports and logs them.
  const ferry = start(command[0], [
    ...command.slice(1),
    'run',
    '--data-dir', join(tmp, 'data'),
    '--mqtt-listen', '127.0.0.1:0',
    '--http-listen', '127.0.0.1:0',
    '--nats-url', natsUrl,
    '--log-format', 'json',
  ]);
  const mqttPort = Number((await waitFor(ferry, /"msg":"MQTT listening","address":"[^"]*:(\d+)"/, 'ferry run'))[1]);
  say(`gateway listening on MQTT port ${mqttPort}, NATS on ${natsPort}`);

  // 4. One QoS 1 publish; the PUBACK means it is in the gateway's log.
  const nonce = `${process.pid}-${Date.now()}`;
  const topic = `smoke/${nonce}`;
  const body = { smoke: nonce, t: 21.5 };
  const client = await mqtt.connectAsync(`mqtt://127.0.0.1:${mqttPort}`, { clientId: `smoke-${nonce}`, reconnectPeriod: 0 });
  try {
    await client.publishAsync(topic, JSON.stringify(body), { qos: 1 });
  } finally {
    await client.endAsync();
  }
  say('publish acknowledged (PUBACK)');

  // 5. It arrives in JetStream: the FERRY stream, subject ferry.up.smoke.<nonce>, JSON re-encoded as CBOR.
  const subject = `ferry.up.smoke.${nonce}`;
  const nc = await natsConnect({ servers: natsUrl });
  try {
    const jsm = await jetstreamManager(nc);
    let msg;
    while (!msg) {
      msg = await jsm.streams.getMessage('FERRY', { last_by_subj: subject }).catch(() => undefined);
      if (!msg) await new Promise((r) => setTimeout(r, 200));
    }
    const got = decodeCbor(msg.data);
    if (msg.header.get('Content-Type') !== 'application/cbor' || JSON.stringify(got) !== JSON.stringify(body) || msg.header.get('Ferry-Client') !== `smoke-${nonce}`) {
      throw new Error(`unexpected message on ${subject}: headers ${JSON.stringify(Object.fromEntries([...msg.header.keys()].map((k) => [k, msg.header.get(k)])))}, payload ${JSON.stringify(got)}`);
    }
    say(`forwarded to JetStream: stream FERRY seq ${msg.seq}, ${subject}, Nats-Msg-Id ${msg.header.get('Nats-Msg-Id')}`);
  } finally {
    await nc.close();
  }

  // 6. A graceful stop exits 0.
  ferry.child.kill('SIGTERM');
  const ferryCode = await ferry.exited;
  if (ferryCode !== 0) throw new Error(`ferry exited with ${ferryCode} on SIGTERM:\n${ferry.output().slice(-3000)}`);
  say('stopped cleanly (SIGTERM, exit 0)');
}

const timer = setTimeout(() => {
  console.error(`smoke ${positionals[0]}: FAILED: not done after ${timeoutMs / 1000} s`);
  void stopAll().finally(() => {
    rmSync(tmp, { recursive: true, force: true });
    process.exit(1);
  });
}, timeoutMs);

let failed = false;
try {
  await smoke();
} catch (err) {
  failed = true;
  console.error(`smoke ${positionals[0]}: FAILED: ${err?.stack ?? err}`);
} finally {
  clearTimeout(timer);
  await stopAll();
  rmSync(tmp, { recursive: true, force: true });
}
if (!failed) say('ok');
process.exit(failed ? 1 : 0);
