#!/usr/bin/env bash
# Runs every cargo-fuzz target (fuzz/fuzz_targets) for a fixed time, starting from the seeds in
# fuzz/seeds/<target> (real payloads: the test fixtures), and reports executions and crashes per
# target. A crash leaves its input in fuzz/artifacts/<target>/; turn it into a regression test by
# copying it to crates/dialects/tests/fuzz-regressions/<target>/ (replayed by
# `cargo test -p cistern-dialects --test fuzz_regressions` on stable Rust).
#
# Usage: scripts/fuzz.sh [--time SECONDS] [--report FILE] [TARGET...]
# Needs a nightly toolchain and cargo-fuzz (`rustup toolchain install nightly`,
# `cargo install cargo-fuzz`).
set -euo pipefail
cd "$(dirname "$0")/.."

SECONDS_EACH=60
REPORT=""
TARGETS=()
while [ $# -gt 0 ]; do
  case "$1" in
    --time) SECONDS_EACH="$2"; shift ;;
    --report) REPORT="$2"; shift ;;
    -h|--help) sed -n '2,13p' "$0"; exit 0 ;;
    *) TARGETS+=("$1") ;;
  esac
  shift
done
command -v cargo-fuzz >/dev/null 2>&1 || { echo "cargo-fuzz is not installed: cargo install cargo-fuzz" >&2; exit 1; }
rustup run nightly rustc --version >/dev/null 2>&1 || { echo "a nightly toolchain is needed: rustup toolchain install nightly" >&2; exit 1; }
if [ ${#TARGETS[@]} -eq 0 ]; then
  mapfile -t TARGETS < <(cd fuzz && cargo +nightly fuzz list)
fi

echo "building the fuzz targets…" >&2
(cd fuzz && cargo +nightly fuzz build -O >/dev/null)

ROWS=()
CRASHED=0
for t in "${TARGETS[@]}"; do
  mkdir -p "fuzz/corpus/$t" "fuzz/artifacts/$t"
  [ -d "fuzz/seeds/$t" ] && cp -n fuzz/seeds/"$t"/* "fuzz/corpus/$t/" 2>/dev/null || true
  before=$(find "fuzz/artifacts/$t" -type f | wc -l)
  log="fuzz/artifacts/$t.log"
  echo "fuzzing $t for ${SECONDS_EACH}s…" >&2
  status=0
  (cd fuzz && cargo +nightly fuzz run -O "$t" "corpus/$t" -- \
      -max_total_time="$SECONDS_EACH" -rss_limit_mb=2048 -timeout=10 -max_len=262144 \
      -print_final_stats=1) >"$log" 2>&1 || status=$?
  after=$(find "fuzz/artifacts/$t" -type f | wc -l)
  execs=$(grep -oE 'stat::number_of_executed_units: *[0-9]+' "$log" | grep -oE '[0-9]+$' | tail -1 || true)
  cov=$(grep -oE 'cov: [0-9]+' "$log" | tail -1 | grep -oE '[0-9]+' || true)
  corpus=$(find "fuzz/corpus/$t" -type f | wc -l)
  crashes=$((after - before))
  if [ "$status" -ne 0 ] || [ "$crashes" -gt 0 ]; then
    CRASHED=1
    echo "CRASH in $t (exit $status): see $log and fuzz/artifacts/$t/" >&2
    grep -E "panicked|ERROR: libFuzzer|SUMMARY" "$log" | head -5 >&2 || true
  fi
  ROWS+=("| $t | $SECONDS_EACH | ${execs:-?} | ${cov:-?} | $corpus | $crashes |")
done

{
  echo "| target | seconds | executions | coverage (edges) | corpus | crashes |"
  echo "|---|---|---|---|---|---|"
  printf '%s\n' "${ROWS[@]}"
} | tee "${REPORT:-/dev/null}"
exit "$CRASHED"
