#!/usr/bin/env bash
# Proxy throughput and latency, side by side, against one nginx upstream that requires
# client certificates from the CA (the CloudFront stand-in):
#   (a) direct TLS to the upstream (wrk cannot present a client certificate, so this
#       server block asks for none: the cost of TLS alone, a lower bound);
#   (b) lanyard proxy (release build); (b') the same toward an upstream server block
#       without HTTP/2, so that the proxy speaks HTTP/1.1 upstream as (c) does;
#   (c) nginx as a reverse proxy with proxy_ssl_certificate (the usual alternative);
#   (d) stunnel in client mode.
# (b)-(d) take plain HTTP from wrk on loopback and keep mTLS connections upstream.
# Also: the proxy's RSS under 1,000 connections, and the daemon's idle RSS.
#   tests/bench/proxy/run.sh            (builds release binaries if missing)
#   PERF=/tmp/proxy.data tests/bench/proxy/run.sh   (also profiles the (b) run with perf)
#   CONNS=1 DUR=3s ROUNDS=7 tests/bench/proxy/run.sh (rows (a)-(c) in turn, ROUNDS times; then
#       the medians of each row and of lanyard's rate ratio and added p50 next to nginx's)
#   NGINX_WORKERS=2 ...  (nginx (c) with as many worker processes as lanyard has threads)
# Needs: nginx, wrk, stunnel4, openssl, curl. Prints a Markdown table.
set -euo pipefail
cd "$(dirname "$0")/../../.."
ROOT=$PWD
T=${CARGO_TARGET_DIR:-$ROOT/target}/release
DUR=${DUR:-10s}
CONNS=${CONNS:-50}
[ -x "$T/lanyard" ] && [ -x "$T/lanyard-ca" ] || cargo build --release -p lanyard-agent -p lanyard-ca
# AGENT=target/device/lanyard measures the device build (packaging/build-debs.sh makes it).
AGENT=${AGENT:-$T/lanyard}
W=$(mktemp -d)
pids=()
cleanup() { for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done; rm -rf "$W"; }
trap cleanup EXIT
port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
wait_port() { for _ in $(seq 100); do (exec 3<>/dev/tcp/127.0.0.1/$1) 2>/dev/null && return 0; sleep 0.1; done; echo "nothing on $1" >&2; exit 1; }

P_CA=$(port); P_UP=$(port); P_UP1=$(port); P_LY1=$(port); P_DIRECT=$(port); P_LY=$(port); P_NGX=$(port); P_ST=$(port); P_STATUS=$(port)
"$T/lanyard-ca" init --dir "$W/ca" 2>/dev/null
"$T/lanyard-ca" serve --dir "$W/ca" --listen 127.0.0.1:$P_CA --http-listen off 2>/dev/null & pids+=($!)
wait_port $P_CA
TOKEN=$("$T/lanyard-ca" token create --dir "$W/ca" --identity bench.fleet.example.com 2>/dev/null)
L=("$AGENT" --store file --state-dir "$W/agent")
LANYARD_CONFIG=/dev/null "${L[@]}" enrol --ca https://127.0.0.1:$P_CA --token "$TOKEN" --ca-bundle "$W/ca/root.crt" >/dev/null 2>&1
LANYARD_CONFIG=/dev/null "${L[@]}" export --cert "$W/dev.crt" --key "$W/dev.key" 2>/dev/null

mkdir -p "$W/ngx/logs" "$W/px/logs"
cat > "$W/ngx/nginx.conf" <<CONF
daemon off; worker_processes 1; pid $W/ngx/nginx.pid; error_log $W/ngx/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $W/ngx/b; proxy_temp_path $W/ngx/p; fastcgi_temp_path $W/ngx/f; uwsgi_temp_path $W/ngx/u; scgi_temp_path $W/ngx/s;
  server { listen 127.0.0.1:$P_UP ssl http2; ssl_certificate $W/ca/tls/server.crt; ssl_certificate_key $W/ca/tls/server.key;
           ssl_verify_client on; ssl_client_certificate $W/ca/ca-bundle.pem; ssl_verify_depth 2; keepalive_requests 100000;
           location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$P_UP1 ssl; ssl_certificate $W/ca/tls/server.crt; ssl_certificate_key $W/ca/tls/server.key;
           ssl_verify_client on; ssl_client_certificate $W/ca/ca-bundle.pem; ssl_verify_depth 2; keepalive_requests 100000;
           location / { return 200 "ok\n"; } }
  server { listen 127.0.0.1:$P_DIRECT ssl; ssl_certificate $W/ca/tls/server.crt; ssl_certificate_key $W/ca/tls/server.key; keepalive_requests 100000;
           location / { return 200 "ok\n"; } }
}
CONF
nginx -c "$W/ngx/nginx.conf" -p "$W/ngx" -e "$W/ngx/logs/error.log" 2>/dev/null & pids+=($!)
cat > "$W/px/nginx.conf" <<CONF
daemon off; worker_processes ${NGINX_WORKERS:-1}; pid $W/px/nginx.pid; error_log $W/px/logs/error.log;
events { worker_connections 4096; }
http {
  access_log off; client_body_temp_path $W/px/b; proxy_temp_path $W/px/p; fastcgi_temp_path $W/px/f; uwsgi_temp_path $W/px/u; scgi_temp_path $W/px/s;
  upstream up { server 127.0.0.1:$P_UP; keepalive 64; }
  server { listen 127.0.0.1:$P_NGX; keepalive_requests 100000;
           location / { proxy_pass https://up; proxy_http_version 1.1; proxy_set_header Connection "";
                        proxy_ssl_certificate $W/dev.crt; proxy_ssl_certificate_key $W/dev.key;
                        proxy_ssl_trusted_certificate $W/ca/root.crt; proxy_ssl_verify on; proxy_ssl_name 127.0.0.1;
                        proxy_ssl_session_reuse on; } }
}
CONF
nginx -c "$W/px/nginx.conf" -p "$W/px" -e "$W/px/logs/error.log" 2>/dev/null & pids+=($!)
cat > "$W/stunnel.conf" <<CONF
foreground = yes
pid =
[up]
client = yes
accept = 127.0.0.1:$P_ST
connect = 127.0.0.1:$P_UP
cert = $W/dev.crt
key = $W/dev.key
CAfile = $W/ca/root.crt
verifyChain = yes
checkHost = 127.0.0.1
CONF
stunnel "$W/stunnel.conf" >/dev/null 2>&1 & pids+=($!)
LANYARD_CONFIG=/dev/null "${L[@]}" proxy --listen 127.0.0.1:$P_LY --upstream https://127.0.0.1:$P_UP --upstream-ca "$W/ca/root.crt" 2>/dev/null & LY_PID=$!; pids+=($LY_PID)
LANYARD_CONFIG=/dev/null "${L[@]}" proxy --listen 127.0.0.1:$P_LY1 --upstream https://127.0.0.1:$P_UP1 --upstream-ca "$W/ca/root.crt" 2>/dev/null & pids+=($!)
for p in $P_UP $P_UP1 $P_DIRECT $P_NGX $P_ST $P_LY $P_LY1; do wait_port $p; done
curl -sf http://127.0.0.1:$P_LY/ >/dev/null && curl -sf http://127.0.0.1:$P_NGX/ >/dev/null && curl -sf http://127.0.0.1:$P_ST/ >/dev/null

wrk_run() {  # name url: wrk's output, or exit when an answer was not 2xx
  local out
  out=$(wrk -t$(( CONNS < 2 ? CONNS : 2 )) -c"$CONNS" -d"$DUR" --latency "$2")
  if echo "$out" | grep -q "Non-2xx"; then echo "$1: non-2xx answers" >&2; exit 1; fi
  echo "$out"
}
run() {  # name url [pid to profile]
  local out rps p50 p99 perf_pid=
  # PERF=FILE: `perf record -g` of the lanyard proxy during its (b) run, into FILE.
  if [ -n "${PERF:-}" ] && [ -n "${3:-}" ]; then
    perf record -q -F 9999 -g -p "$3" -o "$PERF" 2>/dev/null & perf_pid=$!; sleep 1
  fi
  out=$(wrk_run "$1" "$2")
  if [ -n "$perf_pid" ]; then kill -INT "$perf_pid"; wait "$perf_pid" || true; fi
  rps=$(echo "$out" | awk '/Requests\/sec/ {print $2}')
  p50=$(echo "$out" | awk '$1=="50%" {print $2}')
  p99=$(echo "$out" | awk '$1=="99%" {print $2}')
  printf '| %s | %s | %s | %s |\n' "$1" "$rps" "$p50" "$p99"
}
us() { awk '{v=$1; if (v ~ /ms$/) print v*1000; else if (v ~ /us$/) print v+0; else print v*1000000}' <<<"$1"; }
median() { sort -n | awk '{v[NR]=$1} END {print (NR%2 ? v[(NR+1)/2] : (v[NR/2]+v[NR/2+1])/2)}'; }
ROUNDS=${ROUNDS:-1}
if [ "$ROUNDS" -gt 1 ]; then
    # Paired rounds: the host's noise moves every row of a round together, so each round's
    # ratio and difference against nginx (c) is steadier than any one row on its own.
    echo "| round | (a) direct | (b) lanyard | (b') lanyard, HTTP/1.1 upstream | (c) nginx | (b) / (c) rate | (b) added p50 - (c) added | (b') added p50 - (c) added |"
    echo "| --- | --- | --- | --- | --- | --- | --- | --- |"
    : > "$W/rounds"
    cell() { printf '%s/s, p50 %s µs' "${rps[$1]}" "${p50[$1]}"; }
    for r in $(seq "$ROUNDS"); do
        p50=() rps=()
        for url in "https://127.0.0.1:$P_DIRECT/" "http://127.0.0.1:$P_LY/" "http://127.0.0.1:$P_LY1/" "http://127.0.0.1:$P_NGX/"; do
            out=$(wrk_run "$url" "$url")
            p50+=("$(us "$(echo "$out" | awk '$1=="50%" {print $2}')")")
            rps+=("$(echo "$out" | awk '/Requests\/sec/ {printf "%d", $2}')")
        done
        # (b) - (a) - ((c) - (a)) = (b) - (c): the direct row cancels out of the difference.
        ratio=$(awk -v b="${rps[1]}" -v c="${rps[3]}" 'BEGIN {printf "%.2f", b/c}')
        db=$(awk -v b="${p50[1]}" -v c="${p50[3]}" 'BEGIN {print b-c}')
        db1=$(awk -v b="${p50[2]}" -v c="${p50[3]}" 'BEGIN {print b-c}')
        echo "${p50[*]} ${rps[*]} $ratio $db $db1" >> "$W/rounds"
        printf '| %s | %s | %s | %s | %s | %s | %+g µs | %+g µs |\n' "$r" "$(cell 0)" "$(cell 1)" "$(cell 2)" "$(cell 3)" "$ratio" "$db" "$db1"
    done
    col() { awk -v c="$1" '{print $c}' "$W/rounds" | median; }
    echo
    echo "medians over $ROUNDS rounds: p50 (a) $(col 1) (b) $(col 2) (b') $(col 3) (c) $(col 4) µs; rate (a) $(col 5) (b) $(col 6) (b') $(col 7) (c) $(col 8) /s"
    echo "lanyard next to nginx, median of the rounds: rate (b)/(c) $(col 9); added p50 minus nginx's: (b) $(col 10) µs, (b') $(col 11) µs"
    exit 0
fi
echo "| path | requests/s | p50 | p99 |"
echo "| --- | --- | --- | --- |"
run "(a) direct TLS, no client certificate" "https://127.0.0.1:$P_DIRECT/"
run "(b) lanyard proxy" "http://127.0.0.1:$P_LY/" "$LY_PID"
run "(b') lanyard proxy, upstream without HTTP/2" "http://127.0.0.1:$P_LY1/"
run "(c) nginx proxy_ssl_certificate" "http://127.0.0.1:$P_NGX/"
run "(d) stunnel client" "http://127.0.0.1:$P_ST/"

rss() { awk '/VmRSS/ {r=$2} /RssAnon/ {a=$2} /RssFile/ {f=$2} END {print r " (anonymous " a ", file-backed " f ")"}' /proc/$1/status; }
hwm() { awk '/VmHWM/ {print $2}' /proc/$1/status; }
echo
echo "lanyard proxy RSS after the runs: $(rss $LY_PID) KiB (peak $(hwm $LY_PID) KiB)"
wrk -t2 -c1000 -d5s "http://127.0.0.1:$P_LY/" >/dev/null & W1=$!
sleep 3; under=$(rss $LY_PID); wait $W1
echo "lanyard proxy RSS under 1,000 connections: $under KiB (peak $(hwm $LY_PID) KiB)"

idle() {  # label, extra config: `lanyard run` for 10 s, then its RSS
  printf '[store]\nbackend = "file"\npath = "%s"\n%s\n' "$W/agent" "$2" > "$W/idle.toml"
  "$AGENT" --config "$W/idle.toml" run 2>/dev/null & D=$!; pids+=($D)
  sleep 10
  echo "lanyard run ($1) idle RSS after 10 s: $(rss $D) KiB"
  kill $D; wait $D 2>/dev/null || true
}
idle "one route, status listener" "[status]
listen = \"127.0.0.1:$P_STATUS\"
[[proxy.routes]]
listen = \"127.0.0.1:$(port)\"
upstream = \"https://127.0.0.1:$P_UP\"
upstream_ca = \"$W/ca/root.crt\""
idle "renewal only: no route, no status listener" ""
echo "binary: $AGENT, $(stat -c %s "$AGENT") bytes"
