#!/usr/bin/env bash
# Runs the fuzz targets (all, or those named) for FUZZ_SECONDS each (60 by default), from
# the committed seeds plus the corpus grown by earlier runs. A crash fails the run and
# leaves its input under fuzz/artifacts/TARGET/. Needs a nightly toolchain and cargo-fuzz
# (`cargo install cargo-fuzz`). Prints libFuzzer's final statistics per target.
set -euo pipefail
cd "$(dirname "$0")"
secs=${FUZZ_SECONDS:-60}
targets=("$@")
if [ ${#targets[@]} -eq 0 ]; then
  targets=(csr est_body ocsp_request ca_answer agent_config policy proxy_request)
fi
cargo +nightly fuzz build
for t in "${targets[@]}"; do
  mkdir -p "corpus/$t"
  log=$(mktemp)
  status=0
  cargo +nightly fuzz run "$t" "corpus/$t" "seeds/$t" -- \
    -max_total_time="$secs" -print_final_stats=1 >"$log" 2>&1 || status=$?
  execs=$(grep -E '^stat::number_of_executed_units' "$log" | awk '{print $2}' || true)
  rss=$(grep -E '^stat::peak_rss_mb' "$log" | awk '{print $2}' || true)
  cov=$(grep -E '^#[0-9]+[[:space:]]+DONE[[:space:]]+cov:' "$log" | sed -E 's/.*cov: ([0-9]+).*/\1/' || true)
  echo "fuzz $t: ${execs:-?} executions in ${secs}s, coverage ${cov:-?}, peak RSS ${rss:-?} MB, exit $status"
  if [ "$status" -ne 0 ]; then
    tail -n 40 "$log"
    rm -f "$log"
    exit "$status"
  fi
  rm -f "$log"
done
