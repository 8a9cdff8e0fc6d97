#!/usr/bin/env bash
# Enrolments per second over HTTPS, next to the raw ECDSA P-256 bound of this machine.
#
#   tests/bench/enrol-rate.sh            # N=1000 enrolments, client concurrency 4
#   N=300 C=2 tests/bench/enrol-rate.sh
#
# Builds lanyard-ca in release (skip with SKIP_BUILD=1, or point LANYARD_BIN_DIR at a
# folder holding a lanyard-ca binary), makes a CA, N tokens and N P-256 CSRs (setup,
# not timed), then times N EST simpleenroll requests sent by one curl process with
# --parallel --parallel-max C, twice:
#   keep-alive   C streams over a reused HTTP/2 connection: one TLS handshake in all;
#   per-request  HTTP/1.1 with "Connection: close" and no TLS session reuse: a full
#                TLS handshake for every enrolment (what N separate devices cost).
# BENCH_TMP=/dev/shm puts the CA directory (SQLite) on tmpfs, where fsync costs nothing:
# the difference is what the per-issuance fsync (synchronous=FULL) costs.
# Then N check-ins (POST /v1/checkin) of the keep-alive devices, each with its own client
# certificate on its own connection, next to the per-request enrolments.
# The handshake floor: N GETs of /.well-known/est/cacerts (an answer from memory) on the same
# listener, and N GETs of a `return 200` from nginx with the same certificate and key, each
# with a new connection and a full handshake: what a per-request enrolment cannot beat.
# In the same run, `openssl speed -seconds 3 ecdsap256` gives sign/s and verify/s; one
# enrolment costs at least one verify (the CSR's proof of possession) and one sign (the
# certificate), so the raw bound is 1 / (1/sign + 1/verify) enrolments per second on one
# core. Machines are shared and noisy: compare the ratio, not the absolute numbers.
# PIN=1 (the default on 2 or more cores): the servers (lanyard-ca, nginx) on core 0 and
# curl on core 1 (taskset), so that the load generator never takes the server's core and
# the server's rate compares with the one-core bound; PIN=0 lets the scheduler decide.
set -euo pipefail

N=${N:-1000}
C=${C:-4}
PIN=${PIN:-1}
SRV=() CLI=()
if [[ "$PIN" == 1 && $(nproc) -ge 2 ]] && command -v taskset >/dev/null; then
    SRV=(taskset -c 0) CLI=(taskset -c 1)
fi
ROOT=$(cd "$(dirname "$0")/../.." && pwd)

if [[ -n "${LANYARD_BIN_DIR:-}" ]]; then
    BIN="$LANYARD_BIN_DIR/lanyard-ca"
else
    if [[ -z "${SKIP_BUILD:-}" ]]; then
        (cd "$ROOT" && cargo build --release -p lanyard-ca)
    fi
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/lanyard-ca"
fi
[[ -x "$BIN" ]] || { echo "no lanyard-ca at $BIN" >&2; exit 1; }
for p in openssl curl bc /usr/bin/time; do
    command -v "$p" >/dev/null || { echo "$p is required" >&2; exit 1; }
done

WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/lanyard-bench.XXXXXX")
SERVE_PID=
NGINX_PID=
cleanup() {
    [[ -n "$SERVE_PID" ]] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
    [[ -n "$NGINX_PID" ]] && kill "$NGINX_PID" 2>/dev/null && wait "$NGINX_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
export LANYARD_LOG=warn

now() { date +%s.%N; }

# --- setup (not timed) -------------------------------------------------------------
"$BIN" init --dir "$WORK/ca" 2>/dev/null
"${SRV[@]}" "$BIN" serve --dir "$WORK/ca" --listen 127.0.0.1:0 --http-listen 127.0.0.1:0 \
    --addr-file "$WORK/addr.json" 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 100); do [[ -s "$WORK/addr.json" ]] && break; sleep 0.1; done
HTTPS=$(sed -E 's/.*"https":"([^"]+)".*/\1/' "$WORK/addr.json")
URL="https://$HTTPS/.well-known/est/simpleenroll"
CACERT="$WORK/ca/root.crt"

# Appends transfer $2 to the curl config $1: POST or GET of URL $3 into $4, then the lines
# of $5 (what differs per set).
add_transfer() {
    [[ $2 == 1 ]] || echo next >>"$1"
    cat >>"$1" <<EOF
silent
show-error
url = "$3"
cacert = "$CACERT"
output = "$4"
write-out = "%{http_code}\n"
$5
EOF
}
# A new TCP connection and a full TLS handshake for every transfer.
NEW_CONNECTION=$'http1.1\nno-sessionid\nheader = "Connection: close"'

make_set() { # $1 = set name, $2 = extra curl options: N tokens, CSRs, a curl config
    local set=$1 extra=$2 dir="$WORK/$1"
    mkdir -p "$dir"
    : >"$dir/curl.cfg"
    for i in $(seq "$N"); do
        local id="bench-$set-$i.fleet.example.com"
        local tok
        tok=$("$BIN" token create --dir "$WORK/ca" --identity "$id" 2>/dev/null)
        openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes \
            -keyout "$dir/$i.key" -subj "/CN=$id" -outform DER -out "$dir/$i.der" 2>/dev/null
        openssl base64 -in "$dir/$i.der" -out "$dir/$i.b64"
        echo "$id:$tok" >"$dir/$i.user"
        add_transfer "$dir/curl.cfg" "$i" "$URL" "$dir/$i.p7" "user = \"$id:$tok\"
header = \"Content-Type: application/pkcs10\"
header = \"Expect:\"
data-binary = \"@$dir/$i.b64\"
$extra"
    done
}
echo "setup: $N tokens and P-256 CSRs per run (not timed)..." >&2
t0=$(now)
make_set keepalive ""
make_set perreq "$NEW_CONNECTION"
t1=$(now)
echo "setup took $(echo "$t1 - $t0" | bc) s" >&2

count_ok() { grep -c '^200$' "$1" || true; }
# CPU seconds (user + system) the server has used so far.
server_cpu() { awk -v hz="$(getconf CLK_TCK)" '{print ($14 + $15) / hz}' "/proc/$SERVE_PID/stat"; }

# Sends the requests of $WORK/$1/curl.cfg (C at a time) and sets OK (200 answers), SRV_MS
# and CLI_MS (server and curl CPU per request) and SECS (wall time).
measure() {
    local dir="$WORK/$1" c0 c1 t0 t1
    c0=$(server_cpu)
    t0=$(now)
    /usr/bin/time -f '%U %S' -o "$dir/client-cpu" "${CLI[@]}" curl -sS --parallel --parallel-max "$C" \
        -K "$dir/curl.cfg" >"$dir/codes" 2>"$dir/errors" || true
    t1=$(now)
    c1=$(server_cpu)
    OK=$(count_ok "$dir/codes")
    SRV_MS=$(echo "($c1 - $c0) * 1000 / $N" | bc -l)
    CLI_MS=$(awk -v n="$N" '{print ($1 + $2) * 1000 / n}' "$dir/client-cpu")
    SECS=$(echo "$t1 - $t0" | bc -l)
}

# --- measured: keep-alive -----------------------------------------------------------
# PERF=FILE: `perf record -g` of the server during the keep-alive run, into FILE (read it
# with `perf report -i FILE --no-children`; a build with symbols is in docs/BENCHMARKS.md).
if [[ -n "${PERF:-}" ]]; then
    perf record -q -F 9999 -g -p "$SERVE_PID" -o "$PERF" 2>/dev/null &
    PERF_PID=$!
    sleep 1
fi
measure keepalive
if [[ -n "${PERF:-}" ]]; then
    kill -INT "$PERF_PID"
    wait "$PERF_PID" || true
fi
KA_OK=$OK KA_SRV_MS=$SRV_MS KA_CLI_MS=$CLI_MS KA_S=$SECS

# --- measured: a new connection and full TLS handshake per enrolment -----------------
measure perreq
PR_OK=$OK PR_SRV_MS=$SRV_MS PR_CLI_MS=$CLI_MS PR_S=$SECS

# A sample answer must be a real certificate chaining to the bundle.
base64 -d "$WORK/keepalive/1.p7" | openssl pkcs7 -inform DER -print_certs |
    openssl x509 -out "$WORK/leaf.pem"
openssl verify -CAfile "$WORK/ca/ca-bundle.pem" "$WORK/leaf.pem" >/dev/null

# --- measured: the handshake floor (same listener; nginx with the same certificate) -----
make_floor() { # $1 = set, $2 = URL: N GETs, each on a new connection with a full handshake
    local dir="$WORK/$1" i
    mkdir -p "$dir"
    : >"$dir/curl.cfg"
    for i in $(seq "$N"); do
        add_transfer "$dir/curl.cfg" "$i" "$2" /dev/null "$NEW_CONNECTION"
    done
}
make_floor floor "https://$HTTPS/.well-known/est/cacerts"
measure floor
FL_OK=$OK FL_SRV_MS=$SRV_MS FL_S=$SECS
NGINX_BIN=$(command -v nginx || echo /usr/sbin/nginx)
if [[ -x "$NGINX_BIN" ]]; then
    NGX_PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
    mkdir -p "$WORK/nginx/logs"
    cat >"$WORK/nginx/nginx.conf" <<EOF
worker_processes 1;
error_log $WORK/nginx/logs/error.log;
pid $WORK/nginx/logs/nginx.pid;
events { worker_connections 1024; }
http {
    access_log off;
    server {
        listen 127.0.0.1:$NGX_PORT ssl;
        ssl_certificate $WORK/ca/tls/server.crt;
        ssl_certificate_key $WORK/ca/tls/server.key;
        ssl_session_cache off;
        ssl_session_tickets off;
        location / { return 200 "ok\n"; }
    }
}
EOF
    "${SRV[@]}" "$NGINX_BIN" -c "$WORK/nginx/nginx.conf" -p "$WORK/nginx" -g "daemon off;" 2>"$WORK/nginx/stderr" &
    NGINX_PID=$!
    for _ in $(seq 100); do (exec 3<>"/dev/tcp/127.0.0.1/$NGX_PORT") 2>/dev/null && break; sleep 0.1; done
    make_floor nginx "https://127.0.0.1:$NGX_PORT/"
    # Its CPU: the worker's, read like the CA's.
    SAVED=$SERVE_PID
    SERVE_PID=$(pgrep -P "$NGINX_PID" | head -1)
    measure nginx
    SERVE_PID=$SAVED
    NG_OK=$OK NG_SRV_MS=$SRV_MS NG_S=$SECS
    kill "$NGINX_PID"; wait "$NGINX_PID" 2>/dev/null || true; NGINX_PID=
fi

# --- measured: check-ins, each device on its own connection (as a fleet checks in) -----
# Setup (not timed): each keep-alive device's certificate, and one report per device.
mkdir -p "$WORK/checkin"
: >"$WORK/checkin/curl.cfg"
for i in $(seq "$N"); do
    base64 -d "$WORK/keepalive/$i.p7" | openssl pkcs7 -inform DER -print_certs |
        openssl x509 -out "$WORK/checkin/$i.pem"
    printf '{"serial":"","state":"valid","agent_version":"bench","os":"Debian","arch":"x86_64","store":"file","policy_source":"ca","routes":[{"name":"api","requests":10,"errors":0,"last_status":200}]}' \
        >"$WORK/checkin/$i.json"
    add_transfer "$WORK/checkin/curl.cfg" "$i" "https://$HTTPS/v1/checkin" "$WORK/checkin/$i.out" \
        "cert = \"$WORK/checkin/$i.pem\"
key = \"$WORK/keepalive/$i.key\"
header = \"Content-Type: application/json\"
header = \"Expect:\"
data-binary = \"@$WORK/checkin/$i.json\"
$NEW_CONNECTION"
done
measure checkin
CI_OK=$OK CI_SRV_MS=$SRV_MS CI_S=$SECS
grep -q '"policy_version"' "$WORK/checkin/1.out" || { echo "a check-in answer lacks the policy" >&2; exit 1; }
DEVICES=$("$BIN" devices list --dir "$WORK/ca" --json | grep -c '"agent_version": "bench"' || true)

kill "$SERVE_PID"; wait "$SERVE_PID" 2>/dev/null || true; SERVE_PID=

# --- the raw bound, same machine, same run ---------------------------------------------
SPEED=$(openssl speed -seconds 3 ecdsap256 2>/dev/null | grep -E 'nistp256|P-256' | tail -1)
SIGN=$(echo "$SPEED" | awk '{print $(NF-1)}')
VERIFY=$(echo "$SPEED" | awk '{print $NF}')
BOUND=$(echo "1 / (1/$SIGN + 1/$VERIFY)" | bc -l)

KA_RATE=$(echo "$KA_OK / $KA_S" | bc -l)
PR_RATE=$(echo "$PR_OK / $PR_S" | bc -l)
printf 'machine: %s cores, %s\n' "$(nproc)" "$(openssl version)"
printf 'openssl speed ecdsap256: %.0f sign/s, %.0f verify/s -> raw bound %.0f enrolments/s\n' \
    "$SIGN" "$VERIFY" "$BOUND"
printf 'keep-alive  (curl --parallel-max %s): %s/%s ok in %.2f s = %.0f enrolments/s, ratio %.2f\n' \
    "$C" "$KA_OK" "$N" "$KA_S" "$KA_RATE" "$(echo "$KA_RATE / $BOUND" | bc -l)"
printf '            CPU per enrolment: server %.2f ms, curl %.2f ms (wall per enrolment %.2f ms)\n' \
    "$KA_SRV_MS" "$KA_CLI_MS" "$(echo "$KA_S * 1000 / $N" | bc -l)"
printf 'per-request (new connection + full TLS handshake each, %s parallel): %s/%s ok in %.2f s = %.0f enrolments/s, ratio %.2f\n' \
    "$C" "$PR_OK" "$N" "$PR_S" "$PR_RATE" "$(echo "$PR_RATE / $BOUND" | bc -l)"
printf '            CPU per enrolment: server %.2f ms, curl %.2f ms (wall per enrolment %.2f ms)\n' \
    "$PR_SRV_MS" "$PR_CLI_MS" "$(echo "$PR_S * 1000 / $N" | bc -l)"
FL_RATE=$(echo "$FL_OK / $FL_S" | bc -l)
printf 'floor       (GET /.well-known/est/cacerts, new connection + full TLS handshake each, same listener): %s/%s ok = %.0f/s; the per-request enrolment does %.2f of it\n' \
    "$FL_OK" "$N" "$FL_RATE" "$(echo "$PR_RATE / $FL_RATE" | bc -l)"
printf '            server CPU per request %.2f ms (an enrolment costs %.2f ms more)\n' \
    "$FL_SRV_MS" "$(echo "$PR_SRV_MS - $FL_SRV_MS" | bc -l)"
if [[ -n "${NG_OK:-}" ]]; then
    NG_RATE=$(echo "$NG_OK / $NG_S" | bc -l)
    printf 'nginx       (return 200, same certificate and key, one worker, no session reuse): %s/%s ok = %.0f/s, worker CPU %.2f ms per request; the per-request enrolment does %.2f of it\n' \
        "$NG_OK" "$N" "$NG_RATE" "$NG_SRV_MS" "$(echo "$PR_RATE / $NG_RATE" | bc -l)"
fi
printf 'placement:  %s\n' "$([[ ${#SRV[@]} -gt 0 ]] && echo "servers on core 0, curl on core 1 (taskset)" || echo "not pinned")"
CI_RATE=$(echo "$CI_OK / $CI_S" | bc -l)
printf 'check-ins   (mTLS, new connection + full TLS handshake each, %s parallel): %s/%s ok in %.2f s = %.0f/s, %.2f x the per-request enrolment rate\n' \
    "$C" "$CI_OK" "$N" "$CI_S" "$CI_RATE" "$(echo "$CI_RATE / $PR_RATE" | bc -l)"
printf '            server CPU per check-in %.2f ms = %.2f x a per-request enrolment; %s devices in the inventory\n' \
    "$CI_SRV_MS" "$(echo "$CI_SRV_MS / $PR_SRV_MS" | bc -l)" "$DEVICES"
[[ "$KA_OK" == "$N" && "$PR_OK" == "$N" ]] || { echo "some enrolments failed" >&2; exit 1; }
[[ "$CI_OK" == "$N" && "$DEVICES" == "$N" ]] || { echo "some check-ins failed or were not recorded" >&2; exit 1; }
