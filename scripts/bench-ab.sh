#!/usr/bin/env bash
# Alternates a benchmark between an earlier commit and the working tree, run by run, so that both
# meet the same moments of a machine whose speed drifts (this VM's does). By default the rotation
# engine's simulated pass; PKG and BENCHTIME choose another package's benchmark.
#   scripts/bench-ab.sh fd4f92a                                   # 4 runs each, 1,000 users, SQLite
#   scripts/bench-ab.sh fd4f92a 2 'PassSim/users=10000$/sqlite'   # 2 runs each, 10,000 users
#   PKG=./internal/store/ BENCHTIME=6000x scripts/bench-ab.sh fd4f92a 4 VaultPutVsFsync/durable
# Prints, per run, which binary ran and the benchmark's line.
set -euo pipefail
cd "$(dirname "$0")/.."
base=${1:?usage: scripts/bench-ab.sh BASE-REVISION [RUNS] [BENCH-REGEX]}
runs=${2:-4}
bench=${3:-'PassSim/users=1000$/sqlite'}
pkg=${PKG:-./internal/rotation/}
benchtime=${BENCHTIME:-1x}
work=$(mktemp -d)
trap 'git worktree remove --force "$work/base" >/dev/null 2>&1 || true; rm -rf "$work"' EXIT
git worktree add --detach "$work/base" "$base" >/dev/null
(cd "$work/base" && go test -c -o "$work/base.test" "$pkg")
go test -c -o "$work/head.test" "$pkg"
for _ in $(seq "$runs"); do
  for which in base head; do
    "$work/$which.test" -test.run '^$' -test.bench "$bench" -test.benchtime "$benchtime" 2>&1 |
      awk -v which="$which" '/^Benchmark/ {print which, $0}'
  done
done
