#!/usr/bin/env bash
# Runs the whole test suite. PostgreSQL tests run when a server answers on 127.0.0.1:5432
# (started here when it is installed but stopped); under CI they are required.
set -euo pipefail
cd "$(dirname "$0")/.."

pg_up() { pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; }

if [ -z "${CISTERN_TEST_PG:-}" ]; then
  if ! pg_up && command -v pg_ctlcluster >/dev/null 2>&1 && [ -d /etc/postgresql ]; then
    pg_ctlcluster --skip-systemctl-redirect "$(ls /etc/postgresql | sort -V | tail -n 1)" main start || true
    for _ in $(seq 1 30); do pg_up && break; sleep 1; done
  fi
  if pg_up; then
    export CISTERN_TEST_PG="postgres://postgres@127.0.0.1:5432/postgres"
  elif [ "${CI:-}" = "true" ]; then
    echo "PostgreSQL is not reachable on 127.0.0.1:5432; CI requires it" >&2
    exit 1
  else
    echo "note: PostgreSQL not reachable on 127.0.0.1:5432: its tests will be skipped" >&2
  fi
fi

if [ -n "${CISTERN_TEST_PG:-}" ] && command -v psql >/dev/null 2>&1; then
  # Databases left by earlier runs (each test makes its own).
  psql "$CISTERN_TEST_PG" -Atc "SELECT datname FROM pg_database WHERE datname LIKE 'cistern_t_%'" 2>/dev/null |
    while read -r db; do psql "$CISTERN_TEST_PG" -qc "DROP DATABASE IF EXISTS \"$db\"" >/dev/null 2>&1 || true; done
fi

cargo test --workspace "$@"
