#!/usr/bin/env bash
# Starts the real services the test suite needs — a throwaway PostgreSQL 15 and moto_server — on free
# loopback ports, and prints the environment variables that point the tests at them.
#
#   eval "$(scripts/testenv.sh start)"   # exports KEYWARD_TEST_POSTGRES_DSN (and _CA, the CA of its TLS
#                                        # certificate), KEYWARD_TEST_MOTO_URL, KEYWARD_TESTENV_DIR
#   scripts/testenv.sh stop "$KEYWARD_TESTENV_DIR"
#
# initdb refuses to run as root, so when run as root the server runs as the postgres user.
set -euo pipefail

free_port() {
  python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()'
}

find_pg_bin() {
  if command -v pg_config >/dev/null 2>&1 && [ -x "$(pg_config --bindir)/initdb" ]; then
    pg_config --bindir; return
  fi
  for d in /usr/lib/postgresql/*/bin; do
    [ -x "$d/initdb" ] && { echo "$d"; return; }
  done
  return 1
}

start() {
  local dir pgbin pgport motoport as_pg=()
  dir=$(mktemp -d /tmp/keyward-testenv.XXXXXX)
  chmod 755 "$dir"
  pgbin=$(find_pg_bin) || { echo "testenv: PostgreSQL server binaries (initdb) not found" >&2; exit 1; }
  if [ "$(id -u)" = 0 ]; then
    as_pg=(runuser -u postgres --)
    mkdir -p "$dir/pg" && chown postgres "$dir/pg"
  fi
  pgport=$(free_port)
  "${as_pg[@]}" "$pgbin/initdb" -D "$dir/pg/data" -U keyward --auth=trust -E UTF8 >"$dir/initdb.log" 2>&1 \
    || { cat "$dir/initdb.log" >&2; exit 1; }
  # A test CA and a server certificate for localhost, so that sslmode=verify-full can be tested.
  openssl req -x509 -newkey rsa:2048 -nodes -days 2 -subj "/CN=keyward test CA" \
    -keyout "$dir/ca.key" -out "$dir/ca.pem" >/dev/null 2>&1
  openssl req -newkey rsa:2048 -nodes -subj "/CN=localhost" -keyout "$dir/pg/server.key" -out "$dir/server.csr" >/dev/null 2>&1
  printf 'subjectAltName=DNS:localhost,IP:127.0.0.1\n' >"$dir/san.ext"
  openssl x509 -req -in "$dir/server.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" -CAcreateserial -days 2 \
    -extfile "$dir/san.ext" -out "$dir/pg/server.crt" >/dev/null 2>&1
  chmod 600 "$dir/pg/server.key" "$dir/ca.key"
  [ "$(id -u)" = 0 ] && chown postgres "$dir/pg/server.key" "$dir/pg/server.crt"
  "${as_pg[@]}" "$pgbin/pg_ctl" -D "$dir/pg/data" -l "$dir/pg/server.log" -w -t 60 \
    -o "-p $pgport -k $dir/pg -c listen_addresses=127.0.0.1 -c max_connections=200 -c fsync=on -c ssl=on -c ssl_cert_file=$dir/pg/server.crt -c ssl_key_file=$dir/pg/server.key" start >&2 \
    || { cat "$dir/pg/server.log" >&2; exit 1; }

  motoport=$(free_port)
  # setsid: moto_server is often a shim that runs Python as a child; stop() kills the whole group.
  # The shell inside the new session writes its own pid, which is the group's id, then becomes moto.
  # The whole background job is redirected, so nothing holds the caller's stdout: $(testenv.sh start)
  # returns at once.
  (cd "$dir" && exec setsid sh -c 'echo $$ >moto.pid; exec moto_server -H 127.0.0.1 -p "$0"' "$motoport") \
    >"$dir/moto.log" 2>&1 </dev/null &
  for _ in $(seq 1 100); do
    if python3 -c "import urllib.request,sys; urllib.request.urlopen('http://127.0.0.1:$motoport/moto-api/')" 2>/dev/null; then
      break
    fi
    sleep 0.2
  done
  python3 -c "import urllib.request; urllib.request.urlopen('http://127.0.0.1:$motoport/moto-api/')" \
    || { echo "testenv: moto_server did not start" >&2; cat "$dir/moto.log" >&2; exit 1; }

  echo "$pgbin" >"$dir/pgbin"
  echo "export KEYWARD_TESTENV_DIR=$dir"
  echo "export KEYWARD_TEST_POSTGRES_DSN='postgres://keyward@127.0.0.1:$pgport/postgres?sslmode=disable'"
  echo "export KEYWARD_TEST_MOTO_URL=http://127.0.0.1:$motoport"
  echo "export KEYWARD_TEST_POSTGRES_CA=$dir/ca.pem"
}

stop() {
  local dir=${1:?usage: testenv.sh stop DIR}
  if [ -f "$dir/moto.pid" ]; then
    kill -- "-$(cat "$dir/moto.pid")" 2>/dev/null || kill "$(cat "$dir/moto.pid")" 2>/dev/null || true
  fi
  if [ -f "$dir/pgbin" ] && [ -d "$dir/pg/data" ]; then
    local as_pg=()
    [ "$(id -u)" = 0 ] && as_pg=(runuser -u postgres --)
    "${as_pg[@]}" "$(cat "$dir/pgbin")/pg_ctl" -D "$dir/pg/data" -m fast -w stop >/dev/null 2>&1 || true
  fi
  rm -rf "$dir"
}

case "${1:-}" in
  start) start ;;
  stop) shift; stop "$@" ;;
  *) echo "usage: $0 start | stop DIR" >&2; exit 2 ;;
esac
