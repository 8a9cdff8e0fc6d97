#!/usr/bin/env bash
# The whole Lanyard loop on this machine, on embedded defaults: a CA, an enrolment, the key
# in a credential store, a local mTLS server standing in for CloudFront, the proxy, a
# request through it, a renewal and a revocation. Needs only the Rust toolchain.
# Set LANYARD_LOOP_DIR=/some/dir to keep the CA, agent state and logs afterwards.
set -euo pipefail
cd "$(dirname "$0")/.."
# The first build compiles every dependency (minutes on a small machine): say so, and let
# cargo show its progress rather than stay silent.
echo "loop.sh: building lanyard-ca, lanyard and the loop's helpers (the first build takes a few minutes)..." >&2
cargo build -p lanyard-ca -p lanyard-agent -p lanyard-local-loop
echo "loop.sh: built; running the loop" >&2
exec "${CARGO_TARGET_DIR:-target}/debug/lanyard-loop"
