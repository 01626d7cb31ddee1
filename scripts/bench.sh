#!/usr/bin/env bash
# Runs the benchmarks behind docs/BENCHMARKS.md against real services: the embedded SQLite vault in
# a temporary directory, and a throwaway PostgreSQL 15 over loopback. Extra arguments go to go test.
#   scripts/bench.sh                       # all benchmarks, 5 runs each
#   scripts/bench.sh -bench VaultGet       # one of them
set -euo pipefail
cd "$(dirname "$0")/.."
envfile=$(mktemp)
trap 'scripts/testenv.sh stop "${KEYWARD_TESTENV_DIR:-/nonexistent}" 2>/dev/null; rm -f "$envfile"' EXIT
scripts/testenv.sh start >"$envfile"
# shellcheck disable=SC1090
source "$envfile"
export KEYWARD_TEST_REQUIRE_SERVICES=1
go test -run '^$' -bench . -benchmem -count 5 "$@" ./internal/store/
