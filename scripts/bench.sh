#!/usr/bin/env bash
# Runs the benchmarks behind docs/BENCHMARKS.md against real services: the embedded SQLite vault in
# a temporary directory, and a throwaway PostgreSQL 15 over loopback. Extra arguments go to go test.
#   scripts/bench.sh                       # the vault's benchmarks, 5 runs each
#   scripts/bench.sh -bench VaultGet       # one of them
#   scripts/bench.sh rotation              # the rotation engine's: a pass over 1,000 and 10,000
#                                          # simulated users, and over 200 users against moto
set -euo pipefail
cd "$(dirname "$0")/.."
envfile=$(mktemp)
trap 'scripts/testenv.sh stop "${KEYWARD_TESTENV_DIR:-/nonexistent}" 2>/dev/null; rm -f "$envfile"' EXIT
scripts/testenv.sh start >"$envfile"
# shellcheck disable=SC1090
source "$envfile"
export KEYWARD_TEST_REQUIRE_SERVICES=1
if [ "${1:-}" = rotation ]; then
  shift
  go test -run '^$' -bench 'PassSim|PassMoto' -benchtime 1x -count 3 -timeout 60m "$@" ./internal/rotation/
else
  go test -run '^$' -bench . -benchmem -count 5 "$@" ./internal/store/
fi
