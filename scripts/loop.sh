#!/usr/bin/env bash
# The whole Lanyard loop on this machine, on embedded defaults: a CA, an enrolment, the key
# in a credential store, a local mTLS server standing in for CloudFront, the proxy, a
# request through it, a renewal and a revocation. Needs only the Rust toolchain.
# Set LANYARD_LOOP_DIR=/some/dir to keep the CA, agent state and logs afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
cargo build --quiet -p lanyard-ca -p lanyard-agent -p lanyard-local-loop
exec "${CARGO_TARGET_DIR:-target}/debug/lanyard-loop"
