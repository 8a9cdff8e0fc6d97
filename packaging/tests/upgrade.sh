#!/usr/bin/env bash
# Upgrade from the 0.1.0 packages to the ones in dist/, through the signed apt repository,
# on this machine's own dpkg (as root; the packaging test runs it after its own checks):
#
#   1. build the 0.1.0 .debs from the commit released as 0.1.0 (a git worktree; the build
#      shares this checkout's target directory, so only what changed since is compiled);
#   2. install them, create the CA and enrol the agent (file store) the way 0.1.0's README
#      says, and edit /etc/lanyard/agent.toml;
#   3. `apt-get install` the current packages from a signed repository made of dist/*.deb,
#      keeping local configuration edits as unattended upgrades do (--force-confold);
#   4. check: the maintainer scripts restarted the agent only once the new binary was in
#      place and never stopped it for the upgrade (recorded by stand-ins for
#      deb-systemd-invoke and systemctl, since no systemd runs the units here);
#      `lanyard status` is valid with the same serial, the edit is still there, the
#      CA took a backup of its database and migrated it, `lanyard-ca certs list` shows the
#      0.1.0 certificate, and the upgraded CA renews the upgraded agent.
#
#   packaging/tests/upgrade.sh [DEB...]      (default: dist/*.deb, amd64)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
# The commit released as 0.1.0: the state of the first release (2026-11-24), before
# schema versions, conffile changes and everything since.
V010=62150384b5d057554bd1bf529d5211ce42a35423
fail() { echo "upgrade test: $*" >&2; exit 1; }
[ "$(id -u)" -eq 0 ] || fail "needs root (it installs packages on this machine)"
for tool in git dpkg apt-get apt-ftparchive gpg openssl runuser; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing"
done
if [ $# -eq 0 ]; then set -- dist/lanyard_*_amd64.deb dist/lanyard-ca_*_amd64.deb; fi

WORK=$(mktemp -d)
CA_PID=""
SHIMS=""
cleanup() {
  [ -z "$CA_PID" ] || kill "$CA_PID" 2>/dev/null || true
  for f in $SHIMS; do rm -rf "$f"; done
  dpkg --purge lanyard lanyard-ca >/dev/null 2>&1 || true
  rm -rf /var/lib/lanyard-ca /var/lib/lanyard
  git -C "$ROOT" worktree remove --force "$WORK/src" >/dev/null 2>&1 || true
  gpgconf --homedir "$WORK/gnupg" --kill all >/dev/null 2>&1 || true
  rm -rf "$WORK"
}
trap cleanup EXIT

echo "--> build the 0.1.0 packages (commit ${V010:0:12})"
if ! git cat-file -e "$V010^{commit}" 2>/dev/null; then
  # A shallow checkout: fetch the history that holds it.
  git fetch -q --unshallow 2>/dev/null || git fetch -q origin "$V010" 2>/dev/null \
    || fail "commit $V010 (0.1.0) is not in this checkout and could not be fetched"
fi
git worktree add -q --detach "$WORK/src" "$V010"
(
  cd "$WORK/src"
  export CARGO_TARGET_DIR=$TARGET_DIR LANYARD_COMMIT=${V010:0:12}
  # The same settings as this checkout's package build (flags, test-package profile), so
  # that the dependencies it built are reused.
  . "$ROOT/packaging/build-env.sh"
  package_build_env
  cargo build --release -p lanyard-agent -p lanyard-ca
  generate_docs "$TARGET_DIR/release" packaging/generated
  # 0.1.0 shipped the agent built without Secret Service, as today.
  cargo deb -p lanyard-ca --no-build --output "$WORK/old/"
  cargo deb -p lanyard-agent --no-default-features --output "$WORK/old/"
) >"$WORK/old-build.log" 2>&1 || { tail -30 "$WORK/old-build.log" >&2; fail "building 0.1.0 failed"; }
old_agent=$(ls "$WORK"/old/lanyard_0.1.0*_amd64.deb)
old_ca=$(ls "$WORK"/old/lanyard-ca_0.1.0*_amd64.deb)

echo "--> install 0.1.0, create the CA, enrol the agent"
dpkg --purge lanyard lanyard-ca >/dev/null 2>&1 || true
dpkg -i "$old_agent" "$old_ca" >/dev/null
[ "$(dpkg-query -W -f '${Version}' lanyard)" = "0.1.0-1" ] || fail "0.1.0 is not what got installed"
# What systemd's StateDirectory= makes for the services (no systemd runs the units here).
install -d -m 0700 -o lanyard-ca -g lanyard-ca /var/lib/lanyard-ca
install -d -m 0700 -o lanyard -g lanyard /var/lib/lanyard
as_ca() { runuser -u lanyard-ca -- /usr/bin/lanyard-ca "$@"; }
as_agent() { runuser -u lanyard -- /usr/bin/lanyard --config /etc/lanyard/agent.toml "$@"; }
as_ca init --dir /var/lib/lanyard-ca --public-url http://127.0.0.1:18480 >/dev/null
port=18443
serve() {
  runuser -u lanyard-ca -- /usr/bin/lanyard-ca serve --dir /var/lib/lanyard-ca \
    --listen 127.0.0.1:$port --http-listen 127.0.0.1:18480 >>"$WORK/ca.log" 2>&1 &
  CA_PID=$!
  for _ in $(seq 100); do
    curl -sfk "https://127.0.0.1:$port/healthz" >/dev/null 2>&1 && return 0
    sleep 0.1
  done
  cat "$WORK/ca.log" >&2
  fail "the CA did not come up"
}
stop_ca() { kill "$CA_PID"; wait "$CA_PID" 2>/dev/null || true; CA_PID=""; }
serve
token=$(as_ca token create --dir /var/lib/lanyard-ca --identity upgrade-test.fleet.example.com --ttl 1h)
fingerprint=$(openssl x509 -in /var/lib/lanyard-ca/root.crt -noout -fingerprint -sha256 | cut -d= -f2)
LANYARD_TOKEN=$token as_agent enrol --ca "https://127.0.0.1:$port" --ca-fingerprint "$fingerprint" >/dev/null
before=$(as_agent status --json)
serial=$(python3 -c 'import json, sys; print(json.loads(sys.argv[1])["serial"])' "$before")
[ -n "$serial" ] || fail "0.1.0 enrolled without a serial: $before"
as_ca certs list --dir /var/lib/lanyard-ca | grep -qi "$serial" || fail "0.1.0's CA does not list $serial"
stop_ca
# A local edit, which an upgrade must keep.
printf '\n# upgrade-test: a local edit\n' >>/etc/lanyard/agent.toml
edited=$(sha256sum /etc/lanyard/agent.toml)

echo "--> apt-get install the current packages from the signed repository"
export GNUPGHOME=$WORK/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --pinentry-mode loopback --passphrase '' \
  --quick-gen-key 'Lanyard upgrade test <archive@lanyard.invalid>' ed25519 sign 1d 2>/dev/null
KEY=$(gpg --batch --list-secret-keys --with-colons | awk -F: '/^fpr/ { print $10; exit }')
LANYARD_APT_KEY=$KEY bash packaging/build-apt-repo.sh "$WORK/repo" "$@" >/dev/null
mkdir -p "$WORK/apt/lists/partial" "$WORK/apt/parts"
echo "deb [signed-by=$WORK/repo/lanyard-archive-keyring.gpg] file:$WORK/repo stable main" >"$WORK/apt/sources.list"
# This machine's dpkg, but only this repository as a source (and its own lists).
APT=(-o Dir::Etc::sourcelist="$WORK/apt/sources.list" -o Dir::Etc::sourceparts="$WORK/apt/parts"
  -o Dir::State::lists="$WORK/apt/lists" -o APT::Sandbox::User=root)
apt-get "${APT[@]}" update >"$WORK/update.log" 2>&1 || fail "apt-get update: $(cat "$WORK/update.log")"
new_version=$(dpkg-deb --field "$1" Version)
# Stand-ins for systemd's tools, first on the PATH apt gives dpkg (DPkg::Path): each call
# is recorded with the version of /usr/bin/lanyard at that moment. The scripts act only
# when /run/systemd/system exists (systemd is PID 1), so it is made for the upgrade if this
# machine lacks it, and removed after.
for tool in deb-systemd-invoke systemctl; do
  [ ! -e "/usr/local/sbin/$tool" ] || fail "/usr/local/sbin/$tool exists; the test would replace it"
  cat >"/usr/local/sbin/$tool" <<SHIM
#!/bin/sh
echo "$tool \$* [\$(/usr/bin/lanyard --version 2>/dev/null)]" >>"$WORK/systemd-calls"
SHIM
  chmod 755 "/usr/local/sbin/$tool"
  SHIMS+=" /usr/local/sbin/$tool"
done
if [ ! -d /run/systemd/system ]; then mkdir -p /run/systemd/system && SHIMS+=" /run/systemd/system"; fi
: >"$WORK/systemd-calls"
DEBIAN_FRONTEND=noninteractive apt-get "${APT[@]}" install -y --no-install-recommends \
  -o Dpkg::Options::=--force-confdef -o Dpkg::Options::=--force-confold \
  -o DPkg::Path=/usr/local/sbin:/usr/sbin:/usr/bin:/sbin:/bin \
  lanyard lanyard-ca >"$WORK/upgrade.log" 2>&1 || fail "apt-get upgrade: $(cat "$WORK/upgrade.log")"
for pkg in lanyard lanyard-ca; do
  got=$(dpkg-query -W -f '${Version}' "$pkg")
  [ "$got" = "$new_version" ] || fail "$pkg is at $got after the upgrade, not $new_version"
done
/usr/bin/lanyard --version | grep -q "^lanyard ${new_version%-*} " || fail "the new agent binary is not in place"
for f in $SHIMS; do rm -rf "$f"; done
SHIMS=""
echo "maintainer scripts called:"; sed 's/^/  /' "$WORK/systemd-calls"
grep -q "stop lanyard.service" "$WORK/systemd-calls" && fail "the upgrade stopped the agent: $(cat "$WORK/systemd-calls")"
restart=$(grep "restart lanyard.service" "$WORK/systemd-calls") || fail "the upgrade did not restart the agent"
grep -q "\[lanyard ${new_version%-*} " <<<"$restart" || fail "the agent was restarted before the new binary was in place: $restart"

echo "--> after the upgrade: the credential, the edit and the CA's records are kept"
[ "$(sha256sum /etc/lanyard/agent.toml)" = "$edited" ] || fail "the local edit of agent.toml was lost"
after=$(as_agent status --json)
python3 -c '
import json, sys
s = json.loads(sys.argv[2])
assert s["state"] == "valid", s["state"]
assert s["serial"] == sys.argv[1], (s["serial"], sys.argv[1])
' "$serial" "$after" || fail "lanyard status after the upgrade: $after"
list=$(as_ca certs list --dir /var/lib/lanyard-ca)
grep -qi "$serial" <<<"$list" || fail "the upgraded CA does not list 0.1.0's certificate: $list"
ls /var/lib/lanyard-ca/lanyard-ca.db.before-schema-* >/dev/null 2>&1 \
  || fail "the CA migrated its database without a backup: $(ls /var/lib/lanyard-ca)"
backup=$(ls /var/lib/lanyard-ca/lanyard-ca.db.before-schema-* | head -1)
[ "$(stat -c %a "$backup")" = 600 ] || fail "the backup $backup is not 0600"

echo "--> the upgraded CA renews the upgraded agent (no new token)"
serve
as_agent renew --force >/dev/null
renewed=$(as_agent status --json)
python3 -c '
import json, sys
s = json.loads(sys.argv[2])
assert s["state"] == "valid", s["state"]
assert s["serial"] != sys.argv[1], "the serial did not change"
' "$serial" "$renewed" || fail "renewal after the upgrade: $renewed"
stop_ca
echo "upgrade from 0.1.0 to $new_version: credential, state, local edits and CA records kept"
