#!/usr/bin/env bash
# Load test of GET /v1/teams/{team}/credentials with a valid token, over loopback, with wrk
# (Debian: apt-get install wrk), flat out or at a fixed rate (RATE, requests/s). It builds keyward,
# sets up a vault in a temporary directory (SQLite, or PostgreSQL with --postgres: a throwaway
# server), a team with a key and an API key, starts `keyward serve`, exchanges the API key for a
# token and runs wrk against the credentials route.
# Every request is a real read: authenticated, authorized, decrypted, and recorded in the audit
# trail before the answer.
#   scripts/load.sh                 # flat out: 30 s, 8 connections, 2 wrk threads
#   DURATION=60s CONNECTIONS=16 scripts/load.sh
#   RATE=2000 scripts/load.sh       # a fixed 2,000 requests/s instead of flat out
#   scripts/load.sh --postgres
set -euo pipefail
cd "$(dirname "$0")/.."
command -v wrk >/dev/null || { echo "load.sh: wrk is not installed (apt-get install wrk)" >&2; exit 2; }
duration=${DURATION:-30s}
connections=${CONNECTIONS:-8}
threads=${THREADS:-2}
work=$(mktemp -d)
pid=""
cleanup() {
  [ -n "$pid" ] && kill "$pid" 2>/dev/null && wait "$pid" 2>/dev/null
  scripts/testenv.sh stop "${KEYWARD_TESTENV_DIR:-/nonexistent}" 2>/dev/null || true
  rm -rf "$work"
}
trap cleanup EXIT

go build -o "$work/keyward" ./cmd/keyward
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
driver=sqlite
dsn="$work/keyward.db"
if [ "${1:-}" = --postgres ]; then
  scripts/testenv.sh start >"$work/env"
  # shellcheck disable=SC1091
  source "$work/env"
  driver=postgres
  dsn=$KEYWARD_TEST_POSTGRES_DSN
fi
cat >"$work/keyward.yaml" <<EOF
cloud: sim
aws:
  accounts: [{id: "123456789012"}]
server:
  listen: 127.0.0.1:$port
  rate_limit: {per_principal: 0, per_ip: 0}
log: {level: warn}
vault:
  driver: $driver
  dsn: "$dsn"
  master_key: {source: file, file: $work/keyward.key}
auth:
  token_ttl: 10m
EOF
kw() { "$work/keyward" --config "$work/keyward.yaml" "$@"; }
kw migrate >/dev/null 2>&1
kw team add payments --iam-user payments-app --account 123456789012 >/dev/null
echo 'wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY' | kw vault import --user payments-app --account 123456789012 \
  --access-key-id AKIAIOSFODNN7EXAMPLE --secret-stdin >/dev/null 2>&1
apikey=$(kw apikey create --name load --role member --team payments -o json | python3 -c 'import json,sys; print(json.load(sys.stdin)["key"])')

# The binary itself in the background (not the kw function, whose subshell a kill would leave it behind).
"$work/keyward" --config "$work/keyward.yaml" serve >"$work/serve.log" 2>&1 &
pid=$!
for _ in $(seq 100); do
  curl -fsS "http://127.0.0.1:$port/healthz" >/dev/null 2>&1 && break
  sleep 0.1
done
token=$(curl -fsS -X POST -H "X-API-Key: $apikey" "http://127.0.0.1:$port/v1/auth/token" |
  python3 -c 'import json,sys; print(json.load(sys.stdin)["token"])')
url="http://127.0.0.1:$port/v1/teams/payments/credentials"
curl -fsS -H "Authorization: Bearer $token" "$url" | grep -q AKIAIOSFODNN7EXAMPLE || { echo "load.sh: the credentials route does not answer" >&2; exit 1; }

if [ -n "${RATE:-}" ]; then
  # A fixed rate instead of flat out (scripts/paced.lua schedules each thread's requests).
  echo "wrk -t$threads -c$connections -d$duration --latency -s scripts/paced.lua $url  ($driver, $(nproc) cores, $RATE requests/s asked)"
  RATE=$RATE THREADS=$threads wrk -t"$threads" -c"$connections" -d"$duration" --latency -s scripts/paced.lua \
    -H "Authorization: Bearer $token" "$url" | tee "$work/wrk.out"
else
  echo "wrk -t$threads -c$connections -d$duration --latency $url  ($driver, $(nproc) cores)"
  wrk -t"$threads" -c"$connections" -d"$duration" --latency -H "Authorization: Bearer $token" "$url" | tee "$work/wrk.out"
fi
echo "keyward serve's CPU: $(awk -v hz="$(getconf CLK_TCK)" '{printf "%.1f s", ($14 + $15) / hz}' "/proc/$pid/stat")"
reads=$(kw audit export -o jsonl 2>/dev/null | grep -c '"action":"key.read"' || true)
echo "audit trail: $reads key.read records"
kw audit verify >/dev/null || { echo "load.sh: the audit trail does not verify" >&2; exit 1; }
echo "audit trail verifies"
if grep -qE "Non-2xx or 3xx responses|Socket errors" "$work/wrk.out"; then
  echo "load.sh: some requests failed" >&2
  exit 1
fi
