#!/usr/bin/env bash
# Runs the fuzz targets (all, or those named) for FUZZ_SECONDS each (60 by default), or for
# FUZZ_RUNS executions each when that is set, from the committed seeds plus the corpus
# grown by earlier runs. FUZZ_PARALLEL targets run at a time (1 by default). A crash fails
# the run and leaves its input under fuzz/artifacts/TARGET/. Prints libFuzzer's final
# statistics per target.
#
# Needs a nightly toolchain and cargo-fuzz (`cargo install cargo-fuzz`).
# FUZZ_SANITIZER: none (the default) or address. Lanyard's crates forbid unsafe code, so
# what a target can find is a panic, an overflow (debug assertions are on), a hang or
# unbounded memory; AddressSanitizer adds little for safe Rust, runs about 7 times slower,
# and its quarantine and shadow memory make RSS grow for reasons of its own
# (docs/RELIABILITY.md, "Fuzzing").
set -euo pipefail
cd "$(dirname "$0")"
# Instrumented builds stay apart from the workspace's, whatever CARGO_TARGET_DIR says.
export CARGO_TARGET_DIR="$PWD/target"
secs=${FUZZ_SECONDS:-60}
runs=${FUZZ_RUNS:-}
parallel=${FUZZ_PARALLEL:-1}
sanitizer=${FUZZ_SANITIZER:-none}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(csr est_body ocsp_request ca_answer agent_config policy proxy_request checkin)
fi
cargo +nightly fuzz build --sanitizer "$sanitizer"
bin_dir=target/$(rustc -vV | sed -n 's/^host: //p')/release
logs=$(mktemp -d)
trap 'rm -rf "$logs"' EXIT

run_one() {
  local t=$1
  mkdir -p "corpus/$t" "artifacts/$t"
  local limit=(-max_total_time="$secs")
  [ -z "$runs" ] || limit=(-runs="$runs")
  local status=0
  # -timeout: one input taking over 25 s is a hang, reported as a failure.
  "$bin_dir/$t" "corpus/$t" "seeds/$t" "${limit[@]}" -timeout=25 -print_final_stats=1 \
    -artifact_prefix="artifacts/$t/" >"$logs/$t.log" 2>&1 || status=$?
  echo "$status" >"$logs/$t.rc"
}

pids=()
for t in "${targets[@]}"; do
  run_one "$t" &
  pids+=($!)
  if [ ${#pids[@]} -ge "$parallel" ]; then
    wait "${pids[0]}"
    pids=("${pids[@]:1}")
  fi
done
wait

failed=0
for t in "${targets[@]}"; do
  log=$logs/$t.log
  status=$(cat "$logs/$t.rc" 2>/dev/null || echo 1)
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
  rss=$(grep -E '^stat::peak_rss_mb' "$log" | awk '{print $2}' || true)
  cov=$(grep -E '^#[0-9]+[[:space:]]+DONE[[:space:]]+cov:' "$log" | sed -E 's/.*cov: ([0-9]+).*/\1/' || true)
  echo "fuzz $t: ${execs:-?} executions (${runs:-${secs}s}), coverage ${cov:-?}, peak RSS ${rss:-?} MB, exit $status"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    failed=1
  fi
done
exit "$failed"
