#!/usr/bin/env bash
# The console's devices page over a large inventory: server time (p50, p99) and page weight.
#
#   tests/bench/console-devices.sh               # N=100000 devices, 300 page loads
#   N=20000 LOADS=100 tests/bench/console-devices.sh
#
# Builds lanyard-ca in release (skip with SKIP_BUILD=1, or point LANYARD_BIN_DIR at a folder
# holding lanyard-ca). Setup, not timed: `lanyard-ca init`, then N devices written straight
# into the CA's SQLite database (a certificate row and a check-in record each, as N
# enrolments and check-ins would leave them; a tenth report failing renewals), then
# `serve --admin-listen`. Measured: LOADS loads of /devices with curl, cycling through the
# first page, a deep page, a search, a state filter, the failing filter and two sorts;
# `time_starttransfer` is the server's time (loopback), `size_download` the page's weight.
# Also timed: one rebuild of the inventory (what the console's background snapshot costs),
# as `lanyard-ca devices list --json`.
set -euo pipefail

N=${N:-100000}
LOADS=${LOADS:-300}
ROOT=$(cd "$(dirname "$0")/../.." && pwd)
if [[ -n "${LANYARD_BIN_DIR:-}" ]]; then
    BIN="$LANYARD_BIN_DIR/lanyard-ca"
else
    [[ -n "${SKIP_BUILD:-}" ]] || (cd "$ROOT" && cargo build --release -p lanyard-ca)
    BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release/lanyard-ca"
fi
for p in curl python3; do command -v "$p" >/dev/null || { echo "$p is required" >&2; exit 1; }; done

WORK=$(mktemp -d "${BENCH_TMP:-/tmp}/lanyard-console-bench.XXXXXX")
SERVE_PID=
cleanup() {
    [[ -n "$SERVE_PID" ]] && kill "$SERVE_PID" 2>/dev/null && wait "$SERVE_PID" 2>/dev/null
    rm -rf "$WORK"
}
trap cleanup EXIT
export LANYARD_LOG=warn

"$BIN" init --dir "$WORK/ca" 2>/dev/null
"$BIN" devices list --dir "$WORK/ca" --json >/dev/null   # creates the schema
python3 - "$WORK/ca/lanyard-ca.db" "$N" <<'PY'
import json, os, sqlite3, sys, time
db, n = sys.argv[1], int(sys.argv[2])
c = sqlite3.connect(db)
now = int(time.time())
der = os.urandom(480)  # the inventory never parses a certificate's DER
certs, devices = [], []
for i in range(n):
    ident = f"sensor-{i:06d}.fleet.example.com"
    serial = f"{i:040x}"
    issued = now - (i % (5 * 86400))
    certs.append((serial, ident, "default", issued, issued + 7 * 86400, issued, f"{i:064x}", der))
    failing = i % 10 == 0
    report = {"serial": serial, "state": "valid", "agent_version": "0.1.0" if i % 3 else "0.2.0",
              "os": "Debian GNU/Linux 12 (bookworm)", "arch": "aarch64", "store": "file",
              "policy_source": "ca", "consecutive_failures": 3 if failing else 0,
              "next_renewal": time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(issued + 4 * 86400)),
              "routes": [{"name": "api", "requests": 120, "errors": 0, "last_status": 200}]}
    if failing:
        report["last_error_code"] = "busy"
        report["last_error"] = "the CA is busy"
    devices.append((ident, "default", now - (i % 7200), serial, "valid", "10.0.0.1:40000", json.dumps(report)))
c.executemany("INSERT INTO certs (serial, identity, group_name, not_before, not_after, issued_at, spki_sha256, der) VALUES (?,?,?,?,?,?,?,?)", certs)
c.executemany("INSERT INTO devices (identity, group_name, last_seen, serial, cert_status, remote, report) VALUES (?,?,?,?,?,?,?)", devices)
c.commit()
PY
echo "setup: $N devices in the database" >&2

t0=$(date +%s.%N)
ROWS=$("$BIN" devices list --dir "$WORK/ca" --json | grep -c '"identity"')
t1=$(date +%s.%N)
REBUILD=$(python3 -c "print(f'{$t1 - $t0:.2f}')")
[[ "$ROWS" == "$N" ]] || { echo "devices list shows $ROWS devices, not $N" >&2; exit 1; }

"$BIN" serve --dir "$WORK/ca" --listen 127.0.0.1:0 --http-listen off --admin-listen 127.0.0.1:0 \
    --addr-file "$WORK/addr.json" 2>"$WORK/serve.log" &
SERVE_PID=$!
for _ in $(seq 300); do [[ -s "$WORK/addr.json" ]] && break; sleep 0.1; done
ADMIN=$(sed -E 's/.*"admin":"([^"]+)".*/\1/' "$WORK/addr.json")
TOKEN=$("$BIN" admin token --dir "$WORK/ca" --name bench 2>/dev/null)
AUTH="Authorization: Bearer $TOKEN"
# The first load builds the snapshot; wait for it outside the measurement.
curl -sf -o /dev/null -H "$AUTH" "http://$ADMIN/devices" --max-time 120

QUERIES=("" "page=1000" "q=sensor-04242" "state=valid" "failing=1" "sort=last_seen&desc=1" "sort=not_after&page=50")
: >"$WORK/times"
for i in $(seq "$LOADS"); do
    q=${QUERIES[$(( i % ${#QUERIES[@]} ))]}
    curl -s -o /dev/null -H "$AUTH" -w '%{http_code} %{time_starttransfer} %{size_download}\n' \
        "http://$ADMIN/devices?$q" >>"$WORK/times"
done
grep -qv '^200 ' "$WORK/times" && { echo "some page loads failed" >&2; exit 1; }
curl -sf -H "$AUTH" "http://$ADMIN/devices?q=sensor-04242" | grep -q "sensor-042420" || { echo "search missed" >&2; exit 1; }
python3 - "$WORK/times" "$N" "$LOADS" "$REBUILD" <<'PY'
import statistics, sys
rows = [l.split() for l in open(sys.argv[1])]
t = sorted(float(r[1]) * 1000 for r in rows)
size = sorted(int(r[2]) for r in rows)
p = lambda q: t[min(len(t) - 1, int(q * len(t)))]
print(f"devices page over {int(sys.argv[2]):,} devices, {sys.argv[3]} loads: server time p50 {p(0.5):.1f} ms, p99 {p(0.99):.1f} ms, max {t[-1]:.1f} ms")
print(f"page weight: median {statistics.median(size)/1024:.1f} KiB (largest {size[-1]/1024:.1f} KiB), plus the stylesheet (3.4 KiB, cached for an hour)")
print(f"inventory rebuild (devices list --json, the console's background snapshot): {sys.argv[4]} s")
PY
