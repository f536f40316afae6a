#!/usr/bin/env bash
# Runs Cistern's benchmarks on this machine and writes BENCHMARKS.md: the baseline HTTP server and
# Cistern's ingestion measured with the same load generator in the same run (the ratio is the
# figure that travels between machines), open-loop latency, memory, PostgreSQL, the other
# dialects, DORA over a large database, the run list, and the criterion benches.
#
#   scripts/bench.sh                 # the full suite (about 25 minutes)
#   scripts/bench.sh --quick         # every case, short (a few minutes), for a smoke check
#   BENCH_SECONDS=60 SOAK_SECONDS=600 DORA_RUNS=1000000 scripts/bench.sh
#
# Everything listens on 127.0.0.1 only. PostgreSQL cases run when a server answers on
# 127.0.0.1:5432 (user postgres, trust auth, as on the development machines).
set -euo pipefail
cd "$(dirname "$0")/.."

QUICK=0
[ "${1:-}" = "--quick" ] && QUICK=1
if [ $QUICK = 1 ]; then
  : "${BENCH_SECONDS:=5}" "${OPEN_SECONDS:=5}" "${SOAK_SECONDS:=10}" "${DORA_RUNS:=20000}" "${DIALECT_SECONDS:=3}"
else
  : "${BENCH_SECONDS:=60}" "${OPEN_SECONDS:=30}" "${SOAK_SECONDS:=600}" "${DORA_RUNS:=1000000}" "${DIALECT_SECONDS:=20}"
fi
: "${CONCURRENCY:=64}" "${OPEN_RATE:=3000}" "${SOAK_RATE:=2000}" "${DORA_DAYS:=365}"
OUT="${BENCH_OUT:-BENCHMARKS.md}"

# BENCH_BIN: an already built release binary (default: build one).
if [ -n "${BENCH_BIN:-}" ]; then
  BIN="$BENCH_BIN"
else
  cargo build --release -p cistern --quiet
  BIN="${CARGO_TARGET_DIR:-$PWD/target}/release/cistern"
fi
WORK="$(mktemp -d)"
PIDS=()
cleanup() {
  for p in "${PIDS[@]}"; do kill "$p" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$WORK"
}
trap cleanup EXIT

log() { echo "== $*" >&2; }
wait_port() { for _ in $(seq 1 200); do curl -fsS -o /dev/null "http://$1/healthz" 2>/dev/null && return 0; sleep 0.05; done; return 1; }
json_get() { python3 -c 'import json,sys; d=json.load(sys.stdin); print(eval("d"+sys.argv[1]))' "$1"; }

# Starts `cistern serve` on a database; sets SERVER_PID and KEY.
# start_hub DATABASE_URL PORT
start_hub() {
  local db="$1" port="$2"
  KEY="$("$BIN" --database "$db" keys create --name bench --scopes ingest,read 2>/dev/null | tail -n 1)"
  CISTERN_DATABASE_URL="$db" CISTERN_LISTEN="127.0.0.1:$port" CISTERN_LOG=warn "$BIN" serve >"$WORK/serve-$port.log" 2>&1 &
  SERVER_PID=$!
  PIDS+=("$SERVER_PID")
  wait_port "127.0.0.1:$port" || { cat "$WORK/serve-$port.log" >&2; exit 1; }
}
stop_hub() { kill -TERM "$SERVER_PID" 2>/dev/null || true; wait "$SERVER_PID" 2>/dev/null || true; }

# load URL KEY ARGS...: the JSON summary on stdout.
load() {
  local url="$1" key="$2"; shift 2
  "$BIN" bench ingest --url "$url" --key "$key" --quiet --json "$@"
}

# wrk (the Debian package) measures the same targets with a load generator that is not ours.
if ! command -v wrk >/dev/null 2>&1; then
  log "installing wrk"
  if [ "$(id -u)" = 0 ]; then apt-get install -y -qq wrk >/dev/null; else sudo apt-get install -y -qq wrk >/dev/null; fi
fi
# wrk_run URL KEY PREFIX: `wrk -t1 -c$CONCURRENCY` for BENCH_SECONDS with scripts/bench/wrk-sei.lua
# (a new execution id per request, 10 % repeats); the summary as JSON on stdout.
wrk_run() {
  local out
  out="$(WRK_KEY="$2" WRK_PREFIX="$3" wrk -t1 -c"$CONCURRENCY" -d"${BENCH_SECONDS}s" --latency -s scripts/bench/wrk-sei.lua "$1")"
  python3 -c '
import json, re, sys
t = sys.stdin.read()
def ms(v, u): return float(v) * {"us": 0.001, "ms": 1.0, "s": 1000.0}[u]
lat = {q: ms(*re.search(r"^\s+" + q + r"%\s+([\d.]+)(us|ms|s)\s*$", t, re.M).groups()) for q in ("50", "90", "99")}
mx = re.search(r"Latency\s+\S+\s+\S+\s+([\d.]+)(us|ms|s)", t)
errs = sum(int(x) for x in re.findall(r"Non-2xx or 3xx responses: (\d+)", t))
sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", t)
if sock: errs += sum(int(x) for x in sock.groups())
print(json.dumps({"throughput_per_s": float(re.search(r"Requests/sec:\s+([\d.]+)", t).group(1)),
  "latency_ms": {"p50": lat["50"], "p90": lat["90"], "p99": lat["99"], "max": ms(*mx.groups()) if mx else 0.0},
  "errors": errs, "requests_ok": int(re.search(r"(\d+) requests in", t).group(1)) - errs}))' <<<"$out"
}

MACHINE="$(nproc) cores ($(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | xargs)), $(free -g | awk '/Mem:/{print $2}') GiB memory, $(uname -sr)"
STARTED="$(date -u +%Y-%m-%dT%H:%M:%SZ)"
log "machine: $MACHINE"

# 1. The baseline: an HTTP server that reads the body and answers 200, nothing else.
log "baseline 200-OK server, closed loop c=$CONCURRENCY for ${BENCH_SECONDS}s"
"$BIN" bench baseline --listen 127.0.0.1:27090 2>/dev/null &
BASE_PID=$!; PIDS+=("$BASE_PID")
for _ in $(seq 1 100); do curl -fsS -o /dev/null -X POST -d '{}' http://127.0.0.1:27090/ 2>/dev/null && break; sleep 0.05; done
BASELINE="$(load http://127.0.0.1:27090 none --concurrency "$CONCURRENCY" --duration "${BENCH_SECONDS}s" --unique-ratio 1)"
log "baseline 200-OK server, wrk -t1 -c$CONCURRENCY for ${BENCH_SECONDS}s"
WRK_BASE="$(wrk_run http://127.0.0.1:27090 none base)"
kill "$BASE_PID"; wait "$BASE_PID" 2>/dev/null || true

# 2. Cistern on SQLite (the default): closed loop, then open loop at a fixed offered rate.
log "cistern SQLite, closed loop c=$CONCURRENCY for ${BENCH_SECONDS}s"
start_hub "sqlite://$WORK/sqlite.db" 27080
SQLITE="$(load http://127.0.0.1:27080 "$KEY" --run-prefix closed --concurrency "$CONCURRENCY" --duration "${BENCH_SECONDS}s" --server-pid "$SERVER_PID")"
log "cistern SQLite, open loop at ${OPEN_RATE}/s for ${OPEN_SECONDS}s"
OPEN="$(load http://127.0.0.1:27080 "$KEY" --run-prefix open --concurrency "$CONCURRENCY" --rate "$OPEN_RATE" --duration "${OPEN_SECONDS}s" --server-pid "$SERVER_PID")"
log "cistern SQLite, the Jenkins Job Reporter envelope (propelo) for ${DIALECT_SECONDS}s"
PROPELO="$(load http://127.0.0.1:27080 "$KEY" --run-prefix propelo --dialect propelo --concurrency "$CONCURRENCY" --duration "${DIALECT_SECONDS}s")"
log "cistern SQLite, Allstacks custom CD jobs for ${DIALECT_SECONDS}s"
ALLSTACKS="$(load http://127.0.0.1:27080 "$KEY" --run-prefix allstacks --dialect allstacks --concurrency "$CONCURRENCY" --duration "${DIALECT_SECONDS}s")"
log "cistern SQLite, soak at ${SOAK_RATE}/s for ${SOAK_SECONDS}s (memory sampled)"
RSS_START="$(awk '/VmRSS/{print $2}' /proc/$SERVER_PID/status)"
SOAK_SAMPLES="$WORK/soak-rss.txt"
( while kill -0 "$SERVER_PID" 2>/dev/null; do awk '/VmRSS/{print $2}' /proc/$SERVER_PID/status >>"$SOAK_SAMPLES" 2>/dev/null; sleep 5; done ) &
SAMPLER=$!; PIDS+=("$SAMPLER")
SOAK="$(load http://127.0.0.1:27080 "$KEY" --run-prefix soak --concurrency "$CONCURRENCY" --rate "$SOAK_RATE" --duration "${SOAK_SECONDS}s" --server-pid "$SERVER_PID")"
kill "$SAMPLER" 2>/dev/null || true
SOAK_RSS="$(python3 - "$SOAK_SAMPLES" <<'PY'
import sys
v=[int(x) for x in open(sys.argv[1]).read().split() if x.strip()]
n=max(1,len(v)//4)
first=sum(v[:n])/n; last=sum(v[-n:])/n
print(f"{first/1024:.1f} MiB in the first quarter, {last/1024:.1f} MiB in the last quarter, peak {max(v)/1024:.1f} MiB ({len(v)} samples)")
PY
)"
STORED_SQLITE="$(python3 -c 'import sqlite3,sys; print(sqlite3.connect(sys.argv[1]).execute("SELECT COUNT(*) FROM runs").fetchone()[0])' "$WORK/sqlite.db" 2>/dev/null || echo '?')"
stop_hub
log "cistern SQLite (a fresh database), wrk -t1 -c$CONCURRENCY for ${BENCH_SECONDS}s"
start_hub "sqlite://$WORK/sqlite-wrk.db" 27083
WRK_SQLITE="$(wrk_run http://127.0.0.1:27083 "$KEY" wrk)"
stop_hub

# 3. Cistern on PostgreSQL.
PG_SUMMARY=""; WRK_PG=""
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  log "cistern PostgreSQL, closed loop c=$CONCURRENCY for ${BENCH_SECONDS}s"
  psql -h 127.0.0.1 -U postgres -qc 'DROP DATABASE IF EXISTS cistern_bench' >/dev/null
  psql -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE cistern_bench' >/dev/null
  start_hub "postgres://postgres@127.0.0.1:5432/cistern_bench" 27081
  PG_SUMMARY="$(load http://127.0.0.1:27081 "$KEY" --concurrency "$CONCURRENCY" --duration "${BENCH_SECONDS}s" --server-pid "$SERVER_PID")"
  stop_hub
  log "cistern PostgreSQL (a fresh database), wrk -t1 -c$CONCURRENCY for ${BENCH_SECONDS}s"
  psql -h 127.0.0.1 -U postgres -qc 'DROP DATABASE IF EXISTS cistern_bench' >/dev/null
  psql -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE cistern_bench' >/dev/null
  start_hub "postgres://postgres@127.0.0.1:5432/cistern_bench" 27081
  WRK_PG="$(wrk_run http://127.0.0.1:27081 "$KEY" wrk)"
  stop_hub
fi

# 4. Reads over a large history, on both stores: `cistern dev seed` (timed), then the medians of
# the metrics, the dashboard's overview and the run list, for the default window (30 days) and
# the whole history, with and without pipeline and environment slices.
SINCE_ALL="$(date -u -d "-$((DORA_DAYS + 1)) days" +%Y-%m-%dT%H:%M:%SZ)"
# timings PATH [COOKIE]: "median p90 max" in ms over 20 requests after 3 warm-ups.
# sign_in: a dashboard session for $KEY in a cookie jar (the overview is measured as a signed-in
# browser loads it: the session cookie is an opaque id issued by POST /login, not the key).
sign_in() {
  local jar="$WORK/jar-$READS_PORT" csrf
  csrf="$(curl -fsS -c "$jar" "http://127.0.0.1:$READS_PORT/login" | grep -o 'name="csrf" value="[0-9a-f]*"' | head -n 1 | cut -d'"' -f4)"
  curl -fsS -o /dev/null -b "$jar" -c "$jar" --data-urlencode "key=$KEY" --data-urlencode "csrf=$csrf" \
    "http://127.0.0.1:$READS_PORT/login"
  echo "$jar"
}
timings() {
  local path="$1" auth=(-H "Authorization: Bearer $KEY") t=()
  [ "${2:-}" = cookie ] && auth=(-b "$(sign_in)")
  for i in $(seq 1 23); do
    local s; s="$(curl -fsS -m 120 -o /dev/null -w '%{time_total}' "${auth[@]}" "http://127.0.0.1:$READS_PORT$path")" || s=failed
    [ "$i" -gt 3 ] && t+=("$s")
  done
  # A failed or timed-out request (over 120 s) makes the case "failed", never a fast figure.
  printf '%s\n' "${t[@]}" | python3 -c 'import sys,statistics as s; x=sys.stdin.read().split(); v=sorted(float(y)*1000 for y in x) if "failed" not in x else None; print(f"{s.median(v):.1f} {v[int(len(v)*0.9)-1]:.1f} {v[-1]:.1f}" if v else "failed failed failed")'
}
READ_CASES=(
  "dora_30|/api/v1/metrics/dora"
  "dora_all|/api/v1/metrics/dora?since=$SINCE_ALL"
  "dora_30_pipeline|/api/v1/metrics/dora?pipeline=shop/deploy-prod"
  "dora_all_env|/api/v1/metrics/dora?since=$SINCE_ALL&environment=prod"
  "ci_30|/api/v1/metrics/ci"
  "ci_all|/api/v1/metrics/ci?since=$SINCE_ALL"
  "ci_30_pipeline|/api/v1/metrics/ci?pipeline=shop/api-build"
  "ci_all_env|/api/v1/metrics/ci?since=$SINCE_ALL&environment=prod"
  "overview|/|cookie"
  "runs|/api/v1/runs?limit=50"
  "runs_failure|/api/v1/runs?limit=50&result=failure"
)
# reads NAME DATABASE_URL PORT: seeds, serves, measures; writes $WORK/reads-NAME.json.
reads() {
  local name="$1" db="$2"
  READS_PORT="$3"
  log "reads on $name: seeding $DORA_RUNS runs over $DORA_DAYS days"
  local seed; seed="$("$BIN" --database "$db" dev seed --runs "$DORA_RUNS" --days "$DORA_DAYS" 2>&1 | tail -n 1)"
  start_hub "$db" "$READS_PORT"
  local out="{\"seed\": $(python3 -c 'import json,sys; print(json.dumps(sys.argv[1]))' "$seed")"
  for c in "${READ_CASES[@]}"; do
    IFS='|' read -r key path how <<<"$c"
    out+=", \"$key\": \"$(timings "$path" "$how")\""
  done
  echo "$out}" >"$WORK/reads-$name.json"
  stop_hub
}
reads sqlite "sqlite://$WORK/reads.db" 27082
if pg_isready -h 127.0.0.1 -p 5432 -q 2>/dev/null; then
  psql -h 127.0.0.1 -U postgres -qc 'DROP DATABASE IF EXISTS cistern_reads' >/dev/null
  psql -h 127.0.0.1 -U postgres -qc 'CREATE DATABASE cistern_reads' >/dev/null
  reads postgres "postgres://postgres@127.0.0.1:5432/cistern_reads" 27083
else
  echo '{"seed": "not run (no PostgreSQL on 127.0.0.1:5432)"}' >"$WORK/reads-postgres.json"
fi

# 5. The criterion benches (parsers, metrics computation).
CRIT="$WORK/criterion.txt"
if [ "${CRITERION:-1}" = 0 ]; then
  echo "(not run in this pass: CRITERION=0; run the two cargo bench commands below)" >"$CRIT"
else
log "criterion benches"
CRIT_ARGS=(--noplot)
[ $QUICK = 1 ] && CRIT_ARGS+=(--warm-up-time 1 --measurement-time 2)
cargo bench --quiet -p cistern-dialects --bench parse -- "${CRIT_ARGS[@]}" 2>/dev/null | grep -E '^[a-z/_0-9-]+ +time:|thrpt:|^parse/' >"$CRIT" || true
cargo bench --quiet -p cistern-core --bench metrics -- "${CRIT_ARGS[@]}" 2>/dev/null | grep -E 'time:|^dora|^ci_health' >>"$CRIT" || true
fi

# 6. The report.
python3 - "$OUT" <<PY
import json, sys
out = sys.argv[1]
b = json.loads('''$BASELINE''')
s = json.loads('''$SQLITE''')
o = json.loads('''$OPEN''')
pr = json.loads('''$PROPELO''')
so = json.loads('''$SOAK''')
pg = json.loads('''${PG_SUMMARY:-null}''')
al = json.loads('''$ALLSTACKS''')
wb = json.loads('''$WRK_BASE''')
ws = json.loads('''$WRK_SQLITE''')
wp = json.loads('''${WRK_PG:-null}''')
def mib(x): return f"{x/1048576:.0f} MiB" if x else "?"
def row(name, d):
    if not d: return f"| {name} | not run (no PostgreSQL on 127.0.0.1:5432) | | | | | |"
    l = d["latency_ms"]
    return f"| {name} | {d['throughput_per_s']:,.0f} | {l['p50']:.2f} | {l['p99']:.2f} | {l['max']:.1f} | {d['errors']} | {mib(d.get('server_rss_peak_bytes'))} |"
def share(d, base):
    return f"{d['throughput_per_s'] / base['throughput_per_s']:.1%}" if d else "not run"
def within(d):
    return f"{d['throughput_per_s'] / s['throughput_per_s'] - 1:+.1%}"
ratio = s["throughput_per_s"] / b["throughput_per_s"]
crit = open("$CRIT").read().strip()
rs = json.load(open("$WORK/reads-sqlite.json"))
rp = json.load(open("$WORK/reads-postgres.json"))
read_rows = [
    ("dora_30", "\`GET /api/v1/metrics/dora\` (last 30 days, the default)"),
    ("dora_all", "\`GET /api/v1/metrics/dora?since=…\` (the whole history)"),
    ("dora_30_pipeline", "\`GET /api/v1/metrics/dora?pipeline=shop/deploy-prod\` (30 days)"),
    ("dora_all_env", "\`GET /api/v1/metrics/dora?since=…&environment=prod\` (the whole history)"),
    ("ci_30", "\`GET /api/v1/metrics/ci\` (last 30 days, the default)"),
    ("ci_all", "\`GET /api/v1/metrics/ci?since=…\` (the whole history)"),
    ("ci_30_pipeline", "\`GET /api/v1/metrics/ci?pipeline=shop/api-build\` (30 days)"),
    ("ci_all_env", "\`GET /api/v1/metrics/ci?since=…&environment=prod\` (the whole history)"),
    ("overview", "the dashboard overview \`GET /\` (30 days)"),
    ("runs", "\`GET /api/v1/runs?limit=50\`"),
    ("runs_failure", "\`GET /api/v1/runs?limit=50&result=failure\`"),
]
def cells(d, k):
    v = d.get(k)
    return " | ".join(v.split()) if v else "– | – | –"
reads_table = "\n".join([
    f"\`cistern dev seed --runs $DORA_RUNS --days $DORA_DAYS\`, SQLite: {rs['seed']}",
    "",
    f"PostgreSQL: {rp['seed']}",
    "",
    "| request | SQLite median ms | p90 | max | PostgreSQL median ms | p90 | max |",
    "| --- | ---: | ---: | ---: | ---: | ---: | ---: |",
] + [f"| {label} | {cells(rs, k)} | {cells(rp, k)} |" for k, label in read_rows])
lines = f"""# Benchmarks

Figures from one run of \`scripts/bench.sh{' --quick' if $QUICK else ''}\` started $STARTED on this machine:
**$MACHINE**. The load generator (\`cistern bench ingest\`) runs on the same 2 cores as the server,
so every figure includes its cost; compare ratios taken in one run, not absolute figures across
machines. Durable acknowledgements throughout: a 2xx is sent only after the run's transaction
committed (SQLite WAL with \`synchronous=FULL\`; PostgreSQL with its default \`synchronous_commit=on\`).

Payload: the SEI run of \`cistern bench ingest\` (~2.2 KB: 2 stages × 3 steps, 2 commits, params,
an artifact, trigger chain), 90 % new runs and 10 % repeats (updates), 4 instances, 50 pipelines.

## Ingestion

| case | runs/s | p50 ms | p99 ms | max ms | errors | server RSS peak |
| --- | ---: | ---: | ---: | ---: | ---: | ---: |
{row(f"baseline 200-OK server, closed loop c=$CONCURRENCY, ${BENCH_SECONDS}s", b)}
{row(f"Cistern SQLite, closed loop c=$CONCURRENCY, ${BENCH_SECONDS}s", s)}
{row(f"Cistern SQLite, open loop {o['offered_rate']}/s offered, ${OPEN_SECONDS}s", o)}
{row(f"Cistern SQLite, Jenkins Job Reporter envelope (propelo), ${DIALECT_SECONDS}s", pr)}
{row(f"Cistern SQLite, Allstacks custom CD jobs, ${DIALECT_SECONDS}s", al)}
{row(f"Cistern PostgreSQL, closed loop c=$CONCURRENCY, ${BENCH_SECONDS}s", pg)}
{row(f"wrk: baseline 200-OK server, -t1 -c$CONCURRENCY, ${BENCH_SECONDS}s", wb)}
{row(f"wrk: Cistern SQLite, -t1 -c$CONCURRENCY, ${BENCH_SECONDS}s", ws)}
{row(f"wrk: Cistern PostgreSQL, -t1 -c$CONCURRENCY, ${BENCH_SECONDS}s", wp)}

The wrk rows post the same ~2.2 KB SEI run from \`scripts/bench/wrk-sei.lua\` (a new execution id
per request, 10 % repeats) to a fresh database each; wrk counts every non-2xx reply as an error.

| share of the baseline, same run | \`cistern bench ingest\` | wrk |
| --- | ---: | ---: |
| the load generator itself: \`cistern bench ingest\` / wrk, both against the baseline | {share(b, wb)} | 100 % |
| Cistern SQLite | {share(s, b)} | {share(ws, wb)} |
| Cistern PostgreSQL | {share(pg, b)} | {share(wp, wb)} |

- **Cistern SQLite / baseline: {ratio:.1%}** of the HTTP limit of this machine, measured in the same run.
- The other dialects against the SEI route, same SQLite hub: Jenkins Job Reporter envelope {within(pr)}, Allstacks {within(al)}.
- Runs stored in the SQLite database at the end: $STORED_SQLITE.
- Soak at {so['offered_rate']}/s for ${SOAK_SECONDS}s: {so['requests_ok']:,} ok, {so['errors']} errors, p99 {so['latency_ms']['p99']:.2f} ms; server RSS $SOAK_RSS.

## Reads over a large database

{reads_table}

Times are whole HTTP requests measured by curl on loopback (20 after 3 warm-ups).

## Criterion

\`cargo bench -p cistern-dialects --bench parse\` and \`cargo bench -p cistern-core --bench metrics\`:

\`\`\`
{crit}
\`\`\`

## Reproduce

\`\`\`
scripts/bench.sh            # BENCH_SECONDS=$BENCH_SECONDS OPEN_SECONDS=$OPEN_SECONDS SOAK_SECONDS=$SOAK_SECONDS DORA_RUNS=$DORA_RUNS
cargo run --release -- bench baseline --listen 127.0.0.1:27090
cargo run --release -- bench ingest --url http://127.0.0.1:8080 --key \$KEY --concurrency 64 --duration 60s --server-pid \$(pgrep -f 'cistern serve')
cargo run --release -- bench ingest --url http://127.0.0.1:8080 --key \$KEY --rate 3000 --duration 30s
\`\`\`
"""
notes = "BENCHMARKS.notes.md"
try:
    lines += "\n" + open(notes).read()
except FileNotFoundError:
    pass
open(out, "w").write(lines)
print(f"wrote {out}", file=sys.stderr)
PY
