#!/usr/bin/env bash
# Alternates the rotation engine's simulated pass between an earlier commit and the working tree,
# run by run, so that both meet the same moments of a machine whose speed drifts (this VM's does).
#   scripts/bench-ab.sh fd4f92a                                   # 4 runs each, 1,000 users, SQLite
#   scripts/bench-ab.sh fd4f92a 2 'PassSim/users=10000$/sqlite'   # 2 runs each, 10,000 users
# Prints, per run, which binary ran, its time per rotated key and its CPU per key (ns).
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: scripts/bench-ab.sh BASE-REVISION [RUNS] [BENCH-REGEX]}
runs=${2:-4}
bench=${3:-'PassSim/users=1000$/sqlite'}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/base" "$base" >/dev/null
(cd "$work/base" && go test -c -o "$work/base.test" ./internal/rotation/)
go test -c -o "$work/head.test" ./internal/rotation/
for _ in $(seq "$runs"); do
  for which in base head; do
    "$work/$which.test" -test.run '^$' -test.bench "$bench" -test.benchtime 1x 2>&1 |
      awk -v which="$which" '/^Benchmark/ {for (i = 1; i <= NF; i++) {if ($i == "ns/key") w = $(i-1); if ($i == "cpu-ns/key") c = $(i-1)}; print which, $1, "ns/key", w, "cpu-ns/key", c}'
  done
done
