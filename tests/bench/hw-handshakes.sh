#!/usr/bin/env bash
# TLS client handshakes per second with the device key in software (the file store's),
# on a SoftHSM2 token and in swtpm: what each new upstream connection of the proxy costs
# with a hardware store. Results in docs/BENCHMARKS.md ("Hardware keys").
#
#   tests/bench/hw-handshakes.sh          # 10 s of each
#   SECS=30 tests/bench/hw-handshakes.sh
#
# Builds the agent's `hw-handshakes` example in release with both hardware features (skip
# with SKIP_BUILD=1), makes a SoftHSM2 token and starts swtpm in a scratch directory, and
# runs the example once per store. Client, server and the token or TPM share the
# machine's cores: compare the ratios, not the absolute numbers.
set -euo pipefail

SECS=${SECS:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
[[ -n "${SKIP_BUILD:-}" ]] || (cd "$ROOT" && cargo build -q --release -p lanyard-agent --features pkcs11,tpm --example hw-handshakes)
BIN="$TARGET/release/examples/hw-handshakes"
for p in softhsm2-util swtpm; do
    command -v "$p" >/dev/null || { echo "$p is required (apt-get install softhsm2 swtpm)" >&2; exit 1; }
done
MODULE=""
for m in /usr/lib/softhsm/libsofthsm2.so /usr/lib/*/softhsm/libsofthsm2.so; do
    [[ -f "$m" ]] && { MODULE=$m; break; }
done
[[ -n "$MODULE" ]] || { echo "libsofthsm2.so not found" >&2; exit 1; }

WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/lanyard-hw.XXXXXX")
SWTPM_PID=""
cleanup() { [[ -z "$SWTPM_PID" ]] || kill "$SWTPM_PID" 2>/dev/null || true; rm -rf "$WORK"; }
trap cleanup EXIT

mkdir -p "$WORK/tokens" "$WORK/tpm"
printf 'directories.tokendir = %s\nobjectstore.backend = file\n' "$WORK/tokens" > "$WORK/softhsm2.conf"
export SOFTHSM2_CONF="$WORK/softhsm2.conf"
softhsm2-util --init-token --free --label bench --pin 1234 --so-pin 5678 >/dev/null
printf '1234\n' > "$WORK/pin"

# swtpm's server port P and control port P+1, both free.
PORT=$(python3 - <<'PY'
import socket
while True:
    a = socket.socket(); a.bind(("127.0.0.1", 0)); p = a.getsockname()[1]
    b = socket.socket()
    try:
        b.bind(("127.0.0.1", p + 1)); print(p); break
    except OSError:
        pass
    finally:
        a.close(); b.close()
PY
)
swtpm socket --tpm2 --tpmstate dir="$WORK/tpm" --server type=tcp,port="$PORT" \
    --ctrl type=tcp,port=$((PORT + 1)) --flags not-need-init,startup-clear &
SWTPM_PID=$!
for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/"$PORT") 2>/dev/null && break; sleep 0.1; done
kill -0 "$SWTPM_PID" 2>/dev/null || { echo "swtpm did not start on port $PORT" >&2; exit 1; }

echo "== $(nproc) cores; ${SECS} s each; $(date -u +%FT%TZ)"
"$BIN" software "$SECS"
"$BIN" pkcs11 "$MODULE" bench "$WORK/pin" "$SECS"
TSS2_LOG=all+none "$BIN" tpm "swtpm:host=127.0.0.1,port=$PORT" "$SECS"
