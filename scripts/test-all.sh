#!/usr/bin/env bash
# Every Lanyard test, the way CI runs them (CI=true: a test whose peer is missing fails).
# Peers it uses: openssl, curl, nginx, pkilint, keyutils, gnome-keyring, terraform,
# checkov, node, lintian, systemd-analyze, qemu-user. `.ci/run` installs them.
set -euo pipefail
cd "$(dirname "$0")/.."

step() { printf '\n==> %s\n' "$*"; }
started=$(date +%s)
TARGET=${CARGO_TARGET_DIR:-target}

step "cargo fmt --check"
cargo fmt --all -- --check

step "cargo clippy (all targets, the aws feature too; warnings are errors)"
cargo clippy --workspace --all-targets -- -D warnings
cargo clippy -p lanyard-ca --all-targets --features aws -- -D warnings

step "build"
cargo build --workspace --all-targets

step "unit, integration and end-to-end tests (openssl, curl, nginx, pkilint)"
cargo test --workspace

step "CA: renewal after expiry only within the group's grace (waits 5 minutes for real expiry)"
# #[ignore]d so that a plain `cargo test` stays fast; the other ignored tests run below
# (keyrings) or as child processes of their own tests (keystore crash tests).
cargo test -p lanyard-e2e --test reenrol -- --ignored

step "serverless CA (KMS, DynamoDB, S3, Lambda handler) against moto"
cargo test -p lanyard-ca --features aws --test aws

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

if [ -f packaging/tests/run.sh ]; then
  step "packaging: .deb build, lintian, systemd-analyze, install and purge"
  bash packaging/tests/run.sh
fi

printf '\nall test steps passed in %ss\n' "$(( $(date +%s) - started ))"
