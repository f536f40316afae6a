#!/usr/bin/env bash
# Property-based API testing: schemathesis (from PyPI) generates requests from the hub's own
# /api/openapi.json — valid and invalid bodies, parameters and headers — and sends them to a live
# `cistern serve` (SQLite in a temporary directory, a key made with the CLI). Any 5xx fails.
#
#   ./scripts/schemathesis.sh            # 15 examples per operation (one to three minutes)
#   EXAMPLES=200 ./scripts/schemathesis.sh
#
# Needs `st` (pip install schemathesis). Outbound delivery is off and subscription (and exporter)
# creation is left out: generated URLs must not make the hub resolve or call other hosts.
set -euo pipefail
cd "$(dirname "$0")/.."

EXAMPLES="${EXAMPLES:-15}"
SEED="${SEED:-8}"
command -v st >/dev/null || { echo "schemathesis (st) not found: pip install schemathesis" >&2; exit 1; }

target="${CARGO_TARGET_DIR:-target}"
cargo build -q -p cistern
bin="$target/debug/cistern"

work="$(mktemp -d)"
server=""
cleanup() {
  if [ -n "$server" ]; then kill "$server" 2>/dev/null || true; wait "$server" 2>/dev/null || true; fi
  rm -rf "$work"
}
trap cleanup EXIT

export CISTERN_DATABASE_URL="sqlite://$work/cistern.db"
export CISTERN_DELIVERY_WORKER=false
export CISTERN_RETENTION_EVENTS=off CISTERN_RETENTION_DELIVERIES=off
port="$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')"
key="$("$bin" keys create --name schemathesis --scopes ingest,read,admin)"
"$bin" secrets set st-secret=schemathesis-secret >/dev/null
"$bin" serve --listen "127.0.0.1:$port" >"$work/serve.log" 2>&1 &
server=$!
base="http://127.0.0.1:$port"
for _ in $(seq 1 100); do
  python3 -c "import urllib.request,sys; urllib.request.urlopen(sys.argv[1], timeout=1)" "$base/healthz" 2>/dev/null && break
  kill -0 "$server" 2>/dev/null || { cat "$work/serve.log" >&2; exit 1; }
  sleep 0.1
done

started=$(date +%s)
status=0
st run "$base/api/openapi.json" \
  --url "$base" \
  --header "Authorization: Bearer $key" \
  --checks not_a_server_error \
  --max-examples "$EXAMPLES" \
  --seed "$SEED" \
  --workers 2 \
  --request-timeout 20 \
  --exclude-operation-id create_subscription \
  --exclude-operation-id update_subscription \
  --exclude-operation-id create_exporter \
  --suppress-health-check all \
  --no-color \
  --report junit --report-dir "$work/report" || status=$?
echo "schemathesis: ${EXAMPLES} examples per operation, seed ${SEED}, $(( $(date +%s) - started )) s, exit ${status}"
if grep -q 'panicked\|internal error' "$work/serve.log"; then
  echo "the server logged internal errors:" >&2
  grep 'panicked\|internal error' "$work/serve.log" | head -20 >&2
  status=1
fi
kill -0 "$server" 2>/dev/null || { echo "the server died" >&2; status=1; }
exit "$status"
