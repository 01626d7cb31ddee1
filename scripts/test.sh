#!/usr/bin/env bash
# The whole test suite, as `make test` and .ci/run run it: starts a throwaway PostgreSQL and
# moto_server (scripts/testenv.sh), checks formatting, runs go vet, staticcheck and go test -race, and stops what it
# started. Where PostgreSQL or moto cannot be started, their tests skip with a message — unless
# KEYWARD_TEST_REQUIRE_SERVICES=1 (as in CI), where that is a failure.
set -euo pipefail
cd "$(dirname "$0")/.."

require=${KEYWARD_TEST_REQUIRE_SERVICES:-0}
envfile=$(mktemp)
cleanup() {
  if [ -n "${KEYWARD_TESTENV_DIR:-}" ]; then scripts/testenv.sh stop "$KEYWARD_TESTENV_DIR"; fi
  rm -f "$envfile"
}
trap cleanup EXIT

if [ -z "${KEYWARD_TEST_POSTGRES_DSN:-}" ] || [ -z "${KEYWARD_TEST_MOTO_URL:-}" ]; then
  echo "== starting PostgreSQL and moto_server"
  if scripts/testenv.sh start >"$envfile"; then
    # shellcheck disable=SC1090
    source "$envfile"
  elif [ "$require" = 1 ]; then
    echo "could not start the test services, and KEYWARD_TEST_REQUIRE_SERVICES=1" >&2
    exit 1
  else
    echo "warning: could not start the test services: their tests will skip" >&2
  fi
fi

# The web pages are checked with axe-core in the browser tests (internal/testenv/axe.go); npm puts
# the pinned release under .cache/ (git ignores it).
axe=.cache/axe-core/node_modules/axe-core/axe.min.js
if [ -z "${KEYWARD_TEST_AXE:-}" ] && [ ! -f "$axe" ]; then
  echo "== installing axe-core (npm)"
  if ! npm install --silent --no-audit --no-fund --prefix .cache/axe-core axe-core@4.14.1 >/dev/null; then
    if [ "$require" = 1 ]; then
      echo "could not install axe-core with npm, and KEYWARD_TEST_REQUIRE_SERVICES=1" >&2
      exit 1
    fi
    echo "warning: could not install axe-core: its checks will skip" >&2
  fi
fi

echo "== gofmt"
unformatted=$(gofmt -l $(git ls-files '*.go' 2>/dev/null || find . -name '*.go'))
if [ -n "$unformatted" ]; then
  echo "gofmt would change:" >&2
  echo "$unformatted" >&2
  exit 1
fi

echo "== go vet"
go vet ./...

echo "== staticcheck"
# Pinned in go.mod's tool block (honnef.co/go/tools); any finding fails the suite.
go tool staticcheck ./...

echo "== go test -race"
go test -race -count=1 -timeout 30m "$@" ./...

# The Prometheus rules are parsed by Prometheus's own parser, in a module of their own (its
# dependencies stay out of Keyward's).
echo "== deploy/prometheus"
(cd deploy/prometheus && go vet ./... && go test -count=1 ./...)
