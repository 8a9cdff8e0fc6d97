#!/usr/bin/env bash
# Builds the .debs and checks them the way Debian and systemd would: lintian without
# errors or warnings, `systemd-analyze verify` silent, `systemd-analyze security` exposure
# at or under 2.0, a signed apt repository of them that apt accepts (and refuses unsigned),
# install, files/owners/modes, the programs run (arm64 and armhf under qemu-user), purge leaves
# nothing behind, an upgrade from the 0.1.0 packages keeps every credential, and a second
# build of the same commit gives byte-identical .debs. With CI=true a missing tool fails the run.
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}

need() {
  command -v "$1" >/dev/null 2>&1 && return 0
  if [ "${CI:-}" = "true" ]; then echo "packaging tests: $1 is missing" >&2; exit 1; fi
  echo "packaging tests: $1 is missing; skipping what needs it" >&2
  return 1
}
fail() { echo "packaging tests: $*" >&2; exit 1; }

ARCHES=${LANYARD_DEB_ARCHES:-amd64 arm64 armhf}
# CI checks the arm64 agent package (what devices install); the arm64 CA package has the
# same layout as the amd64 one that is checked in full below.
# CI builds test packages (LANYARD_DEB_FAST, see build-debs.sh): what is checked here is
# the packages' layout, scripts and units, not the optimiser's output.
if [ "${CI:-}" = "true" ]; then
  export LANYARD_ARM64_PACKAGES=${LANYARD_ARM64_PACKAGES:-lanyard}
  export LANYARD_DEB_FAST=${LANYARD_DEB_FAST:-1}
fi
if ! need aarch64-linux-gnu-gcc; then ARCHES=${ARCHES/arm64/}; fi
if ! need arm-linux-gnueabihf-gcc; then ARCHES=${ARCHES/armhf/}; fi
rm -f dist/lanyard*.deb
LANYARD_DEB_ARCHES="$ARCHES" bash packaging/build-debs.sh

echo "--> lintian"
if need lintian; then
  for deb in dist/*.deb; do
    # Overrides, with reasons, live in packaging/lintian/.
    lintian --fail-on error,warning --profile debian \
      --suppress-tags-from-file packaging/lintian/suppressed "$deb"
  done
fi

echo "--> signed apt repository (build-apt-repo.sh; gpgv, and apt in a private root)"
if need apt-ftparchive && need gpg && need gpgv; then
  bash packaging/tests/apt-repo.sh dist/*.deb
fi

echo "--> systemd-analyze security (exposure must be 2.0 or lower)"
if need systemd-analyze; then
  for unit in lanyard lanyard-ca; do
    score=$(systemd-analyze security --offline=true "packaging/$unit.service" 2>/dev/null \
      | sed -n 's/.*Overall exposure level for [^:]*: \([0-9.]*\).*/\1/p')
    echo "$unit.service exposure $score"
    [ -n "$score" ] || fail "no exposure score for $unit.service"
    awk -v s="$score" 'BEGIN { exit !(s <= 2.0) }' || fail "$unit.service exposure $score is above 2.0"
  done
fi

deb() { ls dist/"$1"_*_"$2".deb; }

echo "--> install (amd64)"
need dpkg
dpkg -i "$(deb lanyard amd64)" "$(deb lanyard-ca amd64)" >/dev/null
for bin in lanyard lanyard-ca; do
  [ "$(stat -c '%a %U:%G' /usr/bin/$bin)" = "755 root:root" ] || fail "/usr/bin/$bin owner or mode"
  # --version names the commit built from (build.rs).
  version=$("/usr/bin/$bin" --version)
  echo "$version"
  [[ $version =~ \([0-9a-f]{12}\)$ ]] || fail "$bin --version does not name its commit: $version"
  [ -f "/usr/share/man/man1/$bin.1.gz" ] || fail "man page of $bin missing"
  [ -f "/usr/share/bash-completion/completions/$bin" ] || fail "bash completion of $bin missing"
  [ -f "/usr/share/zsh/vendor-completions/_$bin" ] || fail "zsh completion of $bin missing"
  [ -f "/usr/share/fish/vendor_completions.d/$bin.fish" ] || fail "fish completion of $bin missing"
  getent passwd "$bin" >/dev/null || fail "system user $bin missing"
  unit=$(ls /lib/systemd/system/$bin.service /usr/lib/systemd/system/$bin.service 2>/dev/null | head -1)
  [ -n "$unit" ] || fail "$bin.service not installed"
  if need systemd-analyze; then
    out=$(systemd-analyze verify "$unit" 2>&1 || true)
    [ -z "$out" ] || fail "systemd-analyze verify $unit: $out"
  fi
done
[ "$(stat -c '%a %U:%G' /etc/lanyard/agent.toml)" = "640 root:lanyard" ] || fail "/etc/lanyard/agent.toml owner or mode: $(stat -c '%a %U:%G' /etc/lanyard/agent.toml)"
grep -qx /etc/lanyard/agent.toml /var/lib/dpkg/info/lanyard.conffiles || fail "agent.toml is not a conffile"
grep -qx /etc/default/lanyard-ca /var/lib/dpkg/info/lanyard-ca.conffiles || fail "/etc/default/lanyard-ca is not a conffile"
# The installed config parses (an unenrolled agent reports not_enrolled, exit 1).
out=$(runuser -u lanyard -- /usr/bin/lanyard --config /etc/lanyard/agent.toml --state-dir "$(mktemp -d)" status 2>&1 || true)
grep -q "not_enrolled" <<<"$out" || fail "the shipped agent.toml does not load: $out"
# Zero-touch: the shipped config enrols from /etc/lanyard/enrol.token, and the unit starts
# an unenrolled device (no ConditionPathExists on the credential).
grep -q "enrolment token in /etc/lanyard/enrol.token" <<<"$out" || fail "the shipped agent.toml does not enrol from the token file: $out"
unit=$(ls /lib/systemd/system/lanyard.service /usr/lib/systemd/system/lanyard.service 2>/dev/null | head -1)
if grep -q '^ConditionPathExists' "$unit"; then fail "lanyard.service still waits for a manual enrolment"; fi

if [[ " $ARCHES " == *" arm64 "* ]]; then
  echo "--> arm64 under qemu-user"
  if need qemu-aarch64; then
    for bin in lanyard lanyard-ca; do
      profile=release; [ "$bin" = lanyard ] && [ "${LANYARD_DEB_FAST:-}" != 1 ] && profile=device
      [ -e "$TARGET_DIR/aarch64-unknown-linux-gnu/$profile/$bin" ] || { echo "$bin: not built for arm64 (LANYARD_ARM64_PACKAGES)"; continue; }
      qemu-aarch64 -L /usr/aarch64-linux-gnu "$TARGET_DIR/aarch64-unknown-linux-gnu/$profile/$bin" --version
    done
    # Not `dpkg-deb | grep -q`: grep -q exits at the first match, dpkg-deb then dies of
    # SIGPIPE and pipefail fails the pipeline although the line was there.
    info=$(dpkg-deb --field "$(deb lanyard arm64)" Architecture)
    [ "$info" = arm64 ] || fail "arm64 package architecture is '$info'"
  fi
fi

if [[ " $ARCHES " == *" armhf "* ]]; then
  echo "--> armhf under qemu-user"
  if need qemu-arm; then
    profile=device; [ "${LANYARD_DEB_FAST:-}" = 1 ] && profile=release
    exe="$TARGET_DIR/armv7-unknown-linux-gnueabihf/$profile/lanyard"
    [ -e "$exe" ] || fail "lanyard was not built for armhf ($exe)"
    file -b "$exe" 2>/dev/null | grep -q "ARM, EABI5" || fail "$exe is not a 32-bit ARM binary: $(file -b "$exe" 2>&1)"
    qemu-arm -L /usr/arm-linux-gnueabihf "$exe" --version
    # Real work on the board's instruction set: the armhf agent generates its key, makes a
    # CSR and enrols over TLS (aws-lc on 32-bit ARM) with the installed amd64 CA, into the
    # file store, and reports a valid credential.
    ca=$(mktemp -d) state=$(mktemp -d)
    /usr/bin/lanyard-ca init --dir "$ca" --public-url http://127.0.0.1:18580 >/dev/null
    /usr/bin/lanyard-ca serve --dir "$ca" --listen 127.0.0.1:18543 --http-listen 127.0.0.1:18580 >"$ca/serve.log" 2>&1 &
    ca_pid=$!
    for _ in $(seq 100); do curl -sfk https://127.0.0.1:18543/healthz >/dev/null 2>&1 && break; sleep 0.1; done
    token=$(/usr/bin/lanyard-ca token create --dir "$ca" --identity armhf.fleet.example.com --ttl 10m)
    fp=$(/usr/bin/lanyard-ca ca fingerprint --dir "$ca")
    armhf() { qemu-arm -L /usr/arm-linux-gnueabihf "$exe" --config "$ROOT/packaging/agent.toml" --state-dir "$state" "$@"; }
    LANYARD_TOKEN=$token armhf enrol --ca https://127.0.0.1:18543 --ca-fingerprint "$fp" >/dev/null 2>"$state/enrol.log" \
      || { kill $ca_pid; fail "the armhf agent did not enrol: $(cat "$state/enrol.log" "$ca/serve.log")"; }
    out=$(armhf status --json 2>&1 || true)
    kill $ca_pid; wait $ca_pid 2>/dev/null || true
    grep -q '"state": "valid"' <<<"$out" || fail "the armhf agent's credential is not valid: $out"
    echo "armhf agent enrolled under qemu-arm: $(grep -o '"serial": "[0-9a-f]*"' <<<"$out")"
    rm -rf "$ca" "$state"
    info=$(dpkg-deb --field "$(deb lanyard armhf)" Architecture)
    [ "$info" = armhf ] || fail "armhf package architecture is '$info'"
  fi
fi

echo "--> purge"
dpkg --purge lanyard lanyard-ca >/dev/null
for p in /usr/bin/lanyard /usr/bin/lanyard-ca /etc/lanyard /etc/default/lanyard-ca /var/lib/lanyard; do
  [ ! -e "$p" ] || fail "$p left after purge"
done
getent passwd lanyard >/dev/null && fail "user lanyard left after purge"
getent passwd lanyard-ca >/dev/null && fail "user lanyard-ca left after purge"

echo "--> lanyard-tpm replaces lanyard and back, keeping the device's state"
tpm_cfg=$(mktemp)
printf '[store]\nbackend = "tpm"\ntcti = "swtpm:host=127.0.0.1,port=9"\n' > "$tpm_cfg"
chmod 644 "$tpm_cfg"
tpm_status() { /usr/bin/lanyard --config "$tpm_cfg" --state-dir "$(mktemp -d)" status 2>&1 || true; }
dpkg -i "$(deb lanyard amd64)" >/dev/null
# (systemd makes the state directory when the service first starts; a device's credential
# lives there.)
install -d -o lanyard -g lanyard -m 700 /var/lib/lanyard
echo "device state" > /var/lib/lanyard/marker
out=$(tpm_status)
grep -q "install the lanyard-tpm package" <<<"$out" || fail "lanyard does not point a TPM config at lanyard-tpm: $out"
dpkg -i "$(deb lanyard-tpm amd64)" >/dev/null
[ "$(dpkg-query -W -f='${db:Status-Status}' lanyard-tpm)" = installed ] || fail "lanyard-tpm not installed"
[ "$(dpkg-query -W -f='${db:Status-Status}' lanyard 2>/dev/null)" != installed ] || fail "lanyard still installed beside lanyard-tpm"
grep -q "device state" /var/lib/lanyard/marker || fail "switching to lanyard-tpm lost /var/lib/lanyard"
grep -qx /etc/lanyard/agent.toml /var/lib/dpkg/info/lanyard-tpm.conffiles || fail "agent.toml is not lanyard-tpm's conffile"
out=$(tpm_status)
grep -q "not_enrolled" <<<"$out" || fail "lanyard-tpm does not take a TPM config: $out"
ldd /usr/bin/lanyard | grep -q libtss2-esys || fail "lanyard-tpm's agent does not link libtss2"
# Purging what is left of lanyard must not take the state lanyard-tpm now uses.
dpkg --purge lanyard >/dev/null 2>&1 || true
grep -q "device state" /var/lib/lanyard/marker || fail "purging the replaced lanyard deleted lanyard-tpm's state"
getent passwd lanyard >/dev/null || fail "purging the replaced lanyard deleted the lanyard user"
dpkg -i "$(deb lanyard amd64)" >/dev/null
[ "$(dpkg-query -W -f='${db:Status-Status}' lanyard)" = installed ] || fail "lanyard did not replace lanyard-tpm"
grep -q "device state" /var/lib/lanyard/marker || fail "switching back to lanyard lost /var/lib/lanyard"
dpkg --purge lanyard-tpm >/dev/null 2>&1 || true
grep -q "device state" /var/lib/lanyard/marker || fail "purging the replaced lanyard-tpm deleted lanyard's state"
dpkg --purge lanyard >/dev/null
[ ! -e /var/lib/lanyard ] || fail "/var/lib/lanyard left after purging lanyard"
rm -f "$tpm_cfg"
echo "lanyard <-> lanyard-tpm: state, configuration and user kept; purge of the last one cleans up"

echo "--> upgrade from 0.1.0 through the signed repository (packaging/tests/upgrade.sh)"
if need apt-ftparchive && need gpg; then
  bash packaging/tests/upgrade.sh "$(deb lanyard amd64)" "$(deb lanyard-ca amd64)"
fi

echo "--> reproducible: a second build from another path gives identical .debs (packaging/tests/reproducible.sh)"
bash packaging/tests/reproducible.sh
echo "packaging: all checks passed"
ls -l dist/*.deb
