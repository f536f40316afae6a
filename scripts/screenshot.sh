#!/usr/bin/env bash
# Regenerates docs/overview.png, the dashboard screenshot in the README: seeds a temporary
# database with `cistern dev seed`, serves it, signs in with headless Chromium driven through
# chromedriver's WebDriver API, and saves the overview page.
#
#   scripts/screenshot.sh [OUT.png]      (SEED_RUNS, SEED_DAYS, WIDTH, HEIGHT override defaults)
#
# Needs Debian's chromium and chromium-driver (apt-get install -y chromium chromium-driver),
# curl and python3. Nothing leaves this machine: every address is 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."

out="${1:-docs/overview.png}"
runs="${SEED_RUNS:-4000}"
days="${SEED_DAYS:-42}"
width="${WIDTH:-1280}"
height="${HEIGHT:-1500}"
chromium_bin="$(command -v chromium || true)"
for tool in chromedriver curl python3; do
  command -v "$tool" >/dev/null || { echo "screenshot.sh: $tool is not installed" >&2; exit 1; }
done
[ -n "$chromium_bin" ] || { echo "screenshot.sh: chromium is not installed (apt-get install -y chromium chromium-driver)" >&2; exit 1; }

target="${CARGO_TARGET_DIR:-target}"
cargo build -q -p cistern
bin="$target/debug/cistern"

tmp="$(mktemp -d)"
server_pid=""
driver_pid=""
cleanup() {
  [ -n "$server_pid" ] && kill "$server_pid" 2>/dev/null && wait "$server_pid" 2>/dev/null
  [ -n "$driver_pid" ] && kill "$driver_pid" 2>/dev/null && wait "$driver_pid" 2>/dev/null
  rm -rf "$tmp"
}
trap cleanup EXIT

free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
json() { python3 -c "import sys, json; v = json.load(sys.stdin)['value']; print($1)"; }

db="sqlite://$tmp/cistern.db"
"$bin" --database "$db" dev seed --runs "$runs" --days "$days"
key="$("$bin" --database "$db" keys create --name screenshot --scopes read)"

port="$(free_port)"
# The seeded subscriptions point at hosts that never resolve: no worker, no lookups.
CISTERN_LOG=warn CISTERN_DELIVERY_WORKER=false "$bin" --database "$db" serve --listen "127.0.0.1:$port" &
server_pid=$!
dport="$(free_port)"
chromedriver --port="$dport" --log-level=OFF >/dev/null 2>&1 &
driver_pid=$!
for _ in $(seq 1 100); do
  curl -sf "http://127.0.0.1:$port/healthz" >/dev/null && curl -sf "http://127.0.0.1:$dport/status" >/dev/null && break
  sleep 0.1
done

caps=$(cat <<JSON
{"capabilities": {"alwaysMatch": {"browserName": "chrome", "goog:chromeOptions": {"binary": "$chromium_bin",
  "args": ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
           "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
           "--user-data-dir=$tmp/profile", "--window-size=$width,$height"]}}}}
JSON
)
session="$(curl -sf -X POST "http://127.0.0.1:$dport/session" -H 'Content-Type: application/json' -d "$caps" | json "v['sessionId']")"
wd() { curl -sf -X "$1" "http://127.0.0.1:$dport/session/$session$2" -H 'Content-Type: application/json' -d "${3:-{\}}"; }
element() { wd POST /element "{\"using\": \"css selector\", \"value\": \"$1\"}" | json "list(v.values())[0]"; }

base="http://127.0.0.1:$port"
wd POST /url "{\"url\": \"$base/login\"}" >/dev/null
wd POST "/element/$(element '#key')/value" "{\"text\": \"$key\"}" >/dev/null
wd POST "/element/$(element 'form.stack button')/click" >/dev/null
wd POST /url "{\"url\": \"$base/?days=30\"}" >/dev/null
title="$(wd GET /title | json v)"
case "$title" in
  Overview*) ;;
  *) echo "screenshot.sh: expected the overview, got the page \"$title\"" >&2; exit 1 ;;
esac
mkdir -p "$(dirname "$out")"
wd GET /screenshot | python3 -c "import sys, json, base64; open('$out', 'wb').write(base64.b64decode(json.load(sys.stdin)['value']))"
wd DELETE "" >/dev/null || true
echo "saved $out (${width}x${height})"
