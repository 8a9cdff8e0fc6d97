#!/usr/bin/env bash
# TLS session resumption on the CA's HTTPS listener: what a device that comes back (a
# check-in, a renewal) costs with a full TLS 1.3 handshake and with a resumed session.
#
#   tests/bench/resumption.sh            # 10 s of each
#   SECS=30 tests/bench/resumption.sh
#
# Builds lanyard-ca in release (skip with SKIP_BUILD=1, or point LANYARD_BIN_DIR at a folder
# holding a lanyard-ca binary), makes a CA and enrols one device with curl (setup), then
# runs `openssl s_time` against GET /v1/certificate with the device's certificate for SECS
# seconds with a new handshake per connection (-new), then with the first connection's
# session resumed on every connection (-reuse), and prints connections per second and the
# server's CPU time per connection (from /proc/PID/stat). Client and server share the
# machine's cores: compare the ratio, not the absolute numbers.
set -euo pipefail

SECS=${SECS:-10}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -n "${LANYARD_BIN_DIR:-}" ]]; then
    BIN="$LANYARD_BIN_DIR/lanyard-ca"
else
    [[ -n "${SKIP_BUILD:-}" ]] || (cd "$ROOT" && cargo build --release -p lanyard-ca)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/lanyard-ca"
fi
[[ -x "$BIN" ]] || { echo "no lanyard-ca at $BIN" >&2; exit 1; }
for p in openssl curl; do
    command -v "$p" >/dev/null || { echo "$p is required" >&2; exit 1; }
done

WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/lanyard-resume.XXXXXX")
SERVE_PID=
cleanup() {
    [[ -n "$SERVE_PID" ]] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
export LANYARD_LOG=warn

"$BIN" init --dir "$WORK/ca" 2>/dev/null
"$BIN" serve --dir "$WORK/ca" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --addr-file "$WORK/addr.json" 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do [[ -s "$WORK/addr.json" ]] && break; sleep 0.1; done
HTTPS=$(sed -E 's/.*"https":"([^"]+)".*/\1/' "$WORK/addr.json")
CACERT="$WORK/ca/root.crt"
ID=resume-bench.fleet.example.com
TOKEN=$("$BIN" token create --dir "$WORK/ca" --identity "$ID" 2>/dev/null)
openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout "$WORK/dev.key" \
    -subj "/CN=$ID" -outform DER -out "$WORK/dev.der" 2>/dev/null
openssl base64 -in "$WORK/dev.der" -out "$WORK/dev.b64"
curl -sS --fail --cacert "$CACERT" -u "$ID:$TOKEN" -H 'Content-Type: application/pkcs10' \
    --data-binary @"$WORK/dev.b64" "https://$HTTPS/.well-known/est/simpleenroll" \
    | openssl base64 -d | openssl pkcs7 -inform DER -print_certs -out "$WORK/dev.crt"

cpu() { awk '{print $14 + $15}' "/proc/$SERVE_PID/stat"; }
TICK=$(getconf CLK_TCK)
for mode in new reuse; do
    before=$(cpu)
    out=$(openssl s_time -connect "$HTTPS" -CAfile "$CACERT" -cert "$WORK/dev.crt" \
        -key "$WORK/dev.key" -www /v1/certificate -time "$SECS" "-$mode" 2>&1)
    after=$(cpu)
    n=$(sed -nE 's/^([0-9]+) connections in ([0-9.]+)s;.*/\1/p' <<<"$out" | head -1)
    rate=$(sed -nE 's/.*; ([0-9.]+) connections\/user sec.*/\1/p' <<<"$out" | head -1)
    real=$(sed -nE 's/^[0-9]+ connections in [0-9.]+ real seconds.*/&/p' <<<"$out" | head -1)
    [[ -n "$n" && "$n" -gt 0 ]] || { echo "s_time -$mode failed:"; echo "$out"; exit 1; }
    per=$(awk -v c=$((after - before)) -v t="$TICK" -v n="$n" 'BEGIN { printf "%.3f", c / t / n * 1000 }')
    echo "-$mode: $n connections; $rate connections/user sec (client CPU); $real; server CPU $per ms per connection"
done
