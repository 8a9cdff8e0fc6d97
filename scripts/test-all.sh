#!/usr/bin/env bash
# Every Lanyard test, the way CI runs them (CI=true: a test whose peer is missing fails).
# Peers it uses: openssl, curl, nginx, pkilint, keyutils, gnome-keyring, terraform,
# checkov, node, lintian, systemd-analyze, qemu-user, SoftHSM2 and pkcs11-tool, swtpm and
# tpm2-tools (libtss2-dev to build the `tpm` feature); a nightly toolchain and cargo-fuzz
# for the fuzz regression runs. `.ci/run` installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

started=$(date +%s)
TARGET=${CARGO_TARGET_DIR:-target}
# Each step's wall time, printed at the end whether the run passes or fails, so that a CI
# log (whose tail is all one sees) says where the time went.
timings=""
current=""
step_started=$started
step() {
  local now
  now=$(date +%s)
  [ -z "$current" ] || timings+="$(printf '%6ss  %s' "$((now - step_started))" "$current")"$'\n'
  current="$*"
  step_started=$now
  printf '\n==> %s\n' "$*"
}
report() {
  local rc=$?
  # Background steps (the expiry and fleet tests, the fuzzers) do not outlive a failure.
  [ $rc -eq 0 ] || kill $(jobs -p) 2>/dev/null || true
  step "(end)"
  printf '\nstep timings:\n%s' "$timings"
  # The disk is the one limit a run can hit that no step names: show what was left.
  printf 'disk: %s free at the end (%s at the start)\n' "$(disk_free)" "$disk_at_start"
  [ $rc -eq 0 ] || printf 'FAILED in step: see the output above (exit %s)\n' "$rc"
}
disk_free() { df -h --output=avail . 2>/dev/null | tail -n 1 | tr -d ' '; }
disk_at_start=$(disk_free)
trap report EXIT

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, the aws feature too; warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p lanyard-ca --all-targets --features aws -- -D warnings

step "build"
cargo build --workspace --all-targets

step "CA: renewal after expiry only within the group's grace (started in the background)"
# #[ignore]d so that a plain `cargo test` stays fast; the other ignored tests run below
# (keyrings) or as child processes of their own tests (keystore crash tests). It mostly
# waits 5 minutes for a real expiry, so it runs beside the steps that follow and is
# collected at the end.
cargo test -p lanyard-e2e --test reenrol -- --ignored > "$TARGET/reenrol.log" 2>&1 &
reenrol_pid=$!

step "unit, integration and end-to-end tests (openssl, curl, nginx, pkilint)"
cargo test --workspace

step "serverless CA (KMS, DynamoDB, S3, Lambda handler) against moto, and KMS against a strict stand-in (4 KB RAW limit, DIGEST)"
# Before the fleet test starts: this step's binary is target/debug/lanyard-ca built with the
# aws feature (its tests run `lanyard-ca console --backend aws` and `publish --s3`), and the
# end-to-end tests rebuild that path with the default features when they start
# (tests/src/bins.rs), which would swap the binary from under these tests.
cargo test -p lanyard-ca --features aws --test aws --test kms_strict

step "fleet: 300 real agents through pacing, a rotation and an outage (started in the background)"
# Also #[ignore]d and mostly waiting (4.5 minutes of compressed certificate lifetimes); it
# starts after the main tests, whose timing-sensitive flood tests it could disturb.
cargo test -p lanyard-e2e --test fleet -- --ignored > "$TARGET/fleet.log" 2>&1 &
fleet_pid=$!

step "credential stores against real OS keystores (kernel keyring, Secret Service)"
bash agent/keystore/tests/run-keyring-tests.sh

step "the whole loop (scripts/loop.sh)"
./scripts/loop.sh > "$TARGET/loop.log" 2>&1 || { cat "$TARGET/loop.log"; exit 1; }
tail -n 1 "$TARGET/loop.log"

if [ -x infra/tests/run.sh ] || [ -f infra/tests/run.sh ]; then
  step "infra: terraform fmt, checkov, provider schema, connection function, KVS sync"
  bundle_dir=$(mktemp -d)
  "$TARGET/debug/lanyard-ca" init --dir "$bundle_dir/ca" 2>/dev/null
  LANYARD_CA_BUNDLE="$bundle_dir/ca/ca-bundle.pem" bash infra/tests/run.sh
  rm -rf "$bundle_dir"
fi

fuzz_pid=""
if command -v cargo-fuzz >/dev/null 2>&1 && rustup run nightly rustc --version >/dev/null 2>&1; then
  step "fuzz: every target for 60 s, two at a time (started in the background)"
  # Its own instrumented build (fuzz/target); it runs beside packaging, whose fat-LTO links
  # leave a core idle, and is collected at the end.
  FUZZ_SECONDS=60 FUZZ_PARALLEL=2 CARGO_TERM_QUIET=true bash fuzz/run.sh > "$TARGET/fuzz.log" 2>&1 &
  fuzz_pid=$!
elif [ "${CI:-}" = "true" ]; then
  echo "fuzz: a nightly toolchain and cargo-fuzz are needed (.ci/run installs them)" >&2
  exit 1
else
  echo "note: skipping the fuzz regression runs (needs a nightly toolchain and cargo-fuzz)"
fi

if [ -f packaging/tests/run.sh ]; then
  step "packaging: .deb build, lintian, systemd-analyze, install and purge"
  # Quiet cargo: hundreds of "Compiling" lines would push a failure out of a CI log's tail.
  CARGO_TERM_QUIET=true bash packaging/tests/run.sh
fi

if [ -n "$fuzz_pid" ]; then
  step "fuzz: collect the 60 s runs"
  if ! wait "$fuzz_pid"; then cat "$TARGET/fuzz.log"; exit 1; fi
  grep "^fuzz " "$TARGET/fuzz.log"
fi

step "fleet: collect the real-traffic fleet test"
if ! wait "$fleet_pid"; then cat "$TARGET/fleet.log"; exit 1; fi
grep "test result" "$TARGET/fleet.log"

step "CA: collect the renewal-after-expiry test"
if ! wait "$reenrol_pid"; then cat "$TARGET/reenrol.log"; exit 1; fi
grep "test result" "$TARGET/reenrol.log"

printf '\nall test steps passed in %ss\n' "$(( $(date +%s) - started ))"
