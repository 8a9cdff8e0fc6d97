#!/usr/bin/env bash
# Kept-alive enrolments per second of two (or more) lanyard-ca builds, alternating, on the
# same tokens and CSRs: what to run before and after a change to the CA's request path.
#
#   tests/bench/enrol-ab.sh OLD/lanyard-ca NEW/lanyard-ca
#   N=2000 C=32 ROUNDS=6 tests/bench/enrol-ab.sh A B
#
# Setup (once, not timed): a CA made by the first binary, N tokens, N P-256 CSRs and one
# curl config. Each run then copies that CA directory afresh (so every binary sees the same
# database and unused tokens), starts `serve` from the binary, and sends the N EST
# simpleenroll requests over one HTTP/2 connection, C streams at a time (as the keep-alive
# set of enrol-rate.sh). Alternating the binaries ROUNDS times spreads the noise of a shared
# machine over both; setup is paid once, so a pair of runs takes seconds, not minutes.
# Printed per run: answers, enrolments/s, the server's CPU per enrolment, and the part of it
# spent on the SQLite store's own thread (`sqlite-store`, from /proc/PID/task); then each
# binary's median rate as a ratio of the raw P-256 bound measured after the runs.
# PIN=1 (default on 2 or more cores): server on core 0, curl on core 1.
# BENCH_TMP=/dev/shm puts the CA directories on tmpfs (no fsync cost).
# PERF=FILE records `perf record --call-graph dwarf` of the server during the runs of the
# last binary given (FILE holds its last run); build it with symbols first:
#   CARGO_PROFILE_RELEASE_STRIP=false CARGO_PROFILE_RELEASE_DEBUG=line-tables-only \
#     CARGO_TARGET_DIR=target/perf cargo build --release -p lanyard-ca
set -euo pipefail

N=${N:-2000}
C=${C:-32}
ROUNDS=${ROUNDS:-4}
PIN=${PIN:-1}
[[ $# -ge 1 ]] || { echo "usage: $0 LANYARD_CA [LANYARD_CA...]" >&2; exit 2; }
BINS=()
for b in "$@"; do
    [[ -x "$b" ]] || { echo "not an executable: $b" >&2; exit 2; }
    BINS+=("$(cd "$(dirname "$b")" && pwd)/$(basename "$b")")
done
for p in openssl curl taskset; do
    command -v "$p" >/dev/null || { echo "$p is required" >&2; exit 1; }
done
SRV=() CLI=()
if [[ "$PIN" == 1 && $(nproc) -ge 2 ]]; then
    SRV=(taskset -c 0) CLI=(taskset -c 1)
fi

WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/lanyard-ab.XXXXXX")
PID=
cleanup() {
    [[ -n "$PID" ]] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
export LANYARD_LOG=warn

echo "setup: a CA, $N tokens and P-256 CSRs (not timed)..." >&2
"${BINS[0]}" init --dir "$WORK/base/ca" >/dev/null 2>&1
mkdir -p "$WORK/set"
TEMPLATE="$WORK/set/curl.cfg.in"
: >"$TEMPLATE"
for i in $(seq "$N"); do
    id="ab-$i.fleet.example.com"
    tok=$("${BINS[0]}" token create --dir "$WORK/base/ca" --identity "$id" 2>/dev/null)
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout /dev/null \
        -subj "/CN=$id" -outform DER 2>/dev/null | openssl base64 >"$WORK/set/$i.b64"
    [[ $i == 1 ]] || echo next >>"$TEMPLATE"
    cat >>"$TEMPLATE" <<EOF
silent
show-error
url = "https://@ADDR@/.well-known/est/simpleenroll"
cacert = "@CACERT@"
output = "/dev/null"
write-out = "%{http_code}\n"
user = "$id:$tok"
header = "Content-Type: application/pkcs10"
header = "Expect:"
data-binary = "@$WORK/set/$i.b64"
EOF
done

# CPU ticks (user + system) of a process or thread, from its stat file.
ticks() { awk '{print $14 + $15}' "$1"; }
HZ=$(getconf CLK_TCK)

run_one() { # $1 = binary; prints "rate server_ms store_ms ok"
    local b=$1 run="$WORK/run" st c0 c1 s0 s1 t0 t1 ok addr
    rm -rf "$run"
    cp -a "$WORK/base" "$run"
    "${SRV[@]}" "$b" serve --dir "$run/ca" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
        --addr-file "$run/addr.json" 2>"$run/serve.log" &
    PID=$!
    for _ in $(seq 100); do [[ -s "$run/addr.json" ]] && break; sleep 0.1; done
    [[ -s "$run/addr.json" ]] || { echo "$b did not start:" >&2; cat "$run/serve.log" >&2; exit 1; }
    addr=$(sed -E 's/.*"https":"([^"]+)".*/\1/' "$run/addr.json")
    sed "s#@ADDR@#$addr#; s#@CACERT@#$run/ca/root.crt#" "$TEMPLATE" >"$run/curl.cfg"
    st=$(grep -lx sqlite-store /proc/"$PID"/task/*/comm 2>/dev/null | head -1 || true)
    st=${st%/comm}
    sleep 0.5
    c0=$(ticks "/proc/$PID/stat"); s0=0; [[ -n "$st" ]] && s0=$(ticks "$st/stat")
    local perf_pid=
    if [[ -n "${PERF:-}" && "$b" == "${BINS[-1]}" ]]; then
        perf record -q -F 2999 --call-graph dwarf,16384 -p "$PID" -o "$PERF" 2>/dev/null &
        perf_pid=$!
        sleep 0.3
    fi
    t0=$(date +%s.%N)
    "${CLI[@]}" curl -sS --parallel --parallel-max "$C" -K "$run/curl.cfg" >"$run/codes" \
        2>"$run/errors" || true
    t1=$(date +%s.%N)
    if [[ -n "$perf_pid" ]]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
    c1=$(ticks "/proc/$PID/stat"); s1=0; [[ -n "$st" ]] && s1=$(ticks "$st/stat")
    ok=$(grep -c '^200$' "$run/codes" || true)
    kill "$PID"
    wait "$PID" 2>/dev/null || true
    PID=
    awk -v ok="$ok" -v n="$N" -v t0="$t0" -v t1="$t1" -v c="$((c1 - c0))" -v s="$((s1 - s0))" \
        -v hz="$HZ" 'BEGIN { printf "%.0f %.3f %.3f %d\n", ok / (t1 - t0), c / hz * 1000 / n, s / hz * 1000 / n, ok }'
}

placement="unpinned"
[[ ${#SRV[@]} -gt 0 ]] && placement="server on core 0, curl on core 1 (taskset)"
echo "kept-alive enrolments, N=$N, curl --parallel-max $C, $ROUNDS rounds; $placement"
declare -A RESULTS
for r in $(seq "$ROUNDS"); do
    for b in "${BINS[@]}"; do
        run_one "$b" >"$WORK/result"
        read -r rate srv store ok <"$WORK/result"
        [[ "$ok" == "$N" ]] || echo "  $b: only $ok of $N answered 200 (see the CA's log)" >&2
        printf '%-48s %6s/s  server %s ms/enrolment, store thread %s ms\n' "$b" "$rate" "$srv" "$store"
        RESULTS[$b]+="$rate $srv $store"$'\n'
    done
done
# The raw bound of this machine now, as in enrol-rate.sh: one verify (the CSR) and one sign
# (the certificate) per enrolment, on one core.
read -r SIGN VERIFY < <(openssl speed -seconds 3 ecdsap256 2>/dev/null | grep -E 'nistp256|P-256' |
    tail -1 | awk '{ print $(NF-1), $NF }')
BOUND=$(awk -v s="$SIGN" -v v="$VERIFY" 'BEGIN { printf "%.0f", 1 / (1 / s + 1 / v) }')
echo "openssl speed ecdsap256: $SIGN sign/s, $VERIFY verify/s -> raw bound $BOUND enrolments/s"
echo "medians:"
for b in "${BINS[@]}"; do
    printf '%s' "${RESULTS[$b]}" | sort -n -k1 | awk -v b="$b" -v bound="$BOUND" '{ r[NR] = $1; a[NR] = $2; s[NR] = $3 }
        END { m = int((NR + 1) / 2); printf "%-48s %6s/s = %.2f of the raw bound; that run: server %s ms/enrolment, store thread %s ms\n", b, r[m], r[m] / bound, a[m], s[m] }'
done
