#!/usr/bin/env bash
# The signed apt repository (packaging/build-apt-repo.sh), checked the way apt checks it:
# gpgv verifies InRelease and Release.gpg with the exported key alone; apt-get, in a private
# apt root (nothing of this machine's sources or keys), updates from it through a
# `signed-by` source and finds the packages at their versions; the same repository with its
# signatures removed, or with an index changed after signing, is refused by apt.
#
#   packaging/tests/apt-repo.sh [DEB...]      (default: dist/*.deb)
set -euo pipefail
cd "$(dirname "$0")/../.."
fail() { echo "apt repository tests: $*" >&2; exit 1; }
for tool in apt-ftparchive gpg gpgv apt-get; do
  command -v "$tool" >/dev/null 2>&1 || fail "$tool is missing (apt-get install apt-utils gnupg gpgv)"
done
if [ $# -eq 0 ]; then set -- dist/*.deb; fi

WORK=$(mktemp -d)
trap 'gpgconf --homedir "$WORK/gnupg" --kill all >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
# A throwaway signing key, for this test only (a real repository's key is the operator's).
export GNUPGHOME=$WORK/gnupg
mkdir -m 700 "$GNUPGHOME"
gpg --batch --pinentry-mode loopback --passphrase '' \
  --quick-gen-key 'Lanyard test archive <archive@lanyard.invalid>' ed25519 sign 1d 2>/dev/null
KEY=$(gpg --batch --list-secret-keys --with-colons | awk -F: '/^fpr/ { print $10; exit }')
[ -n "$KEY" ] || fail "no test key was made"

echo "--> build the repository"
REPO=$WORK/repo
LANYARD_APT_KEY=$KEY bash packaging/build-apt-repo.sh "$REPO" "$@"
for f in dists/stable/InRelease dists/stable/Release dists/stable/Release.gpg \
  dists/stable/main/binary-amd64/Packages.gz lanyard-archive-keyring.gpg; do
  [ -s "$REPO/$f" ] || fail "$f missing or empty"
done
# Every architecture has its index (empty without packages for it: apt wants it there).
for arch in amd64 arm64 armhf; do
  [ -e "$REPO/dists/stable/main/binary-$arch/Packages" ] || fail "binary-$arch/Packages missing"
done
out=$(LANYARD_APT_KEY= bash packaging/build-apt-repo.sh "$WORK/nokey" "$@" 2>&1) && fail "built without a key"
grep -q "LANYARD_APT_KEY is not set" <<<"$out" || fail "no key: $out"

echo "--> gpgv, with the exported key alone"
gpgv --keyring "$REPO/lanyard-archive-keyring.gpg" "$REPO/dists/stable/InRelease" 2>&1 | grep -q "Good signature" \
  || fail "InRelease does not verify"
gpgv --keyring "$REPO/lanyard-archive-keyring.gpg" "$REPO/dists/stable/Release.gpg" "$REPO/dists/stable/Release" 2>&1 \
  | grep -q "Good signature" || fail "Release.gpg does not verify"
# A key that did not sign it verifies nothing.
other=$WORK/other-gnupg
mkdir -m 700 "$other"
GNUPGHOME=$other gpg --batch --pinentry-mode loopback --passphrase '' \
  --quick-gen-key 'Someone else <other@lanyard.invalid>' ed25519 sign 1d 2>/dev/null
GNUPGHOME=$other gpg --batch --export >"$WORK/other.gpg"
GNUPGHOME=$other gpgconf --kill all >/dev/null 2>&1 || true
if gpgv --keyring "$WORK/other.gpg" "$REPO/dists/stable/InRelease" >/dev/null 2>&1; then
  fail "InRelease verified with a key that did not sign it"
fi

# apt in a private root: its own sources, lists, cache and (empty) dpkg status.
apt_in() { # apt_in ROOT REPO_DIR -> sets APT_OPTS
  local root=$1 repo=$2
  mkdir -p "$root"/etc/{apt.conf.d,preferences.d,sources.list.d,trusted.gpg.d} \
    "$root"/state/lists/partial "$root"/cache/archives/partial
  : >"$root/state/status"
  echo "deb [signed-by=$REPO/lanyard-archive-keyring.gpg] file:$repo stable main" >"$root/etc/sources.list"
  APT_OPTS=(-o Dir::Etc="$root/etc" -o Dir::Etc::sourcelist="$root/etc/sources.list"
    -o Dir::Etc::sourceparts="$root/etc/sources.list.d" -o Dir::Etc::trustedparts="$root/etc/trusted.gpg.d"
    -o Dir::State="$root/state" -o Dir::State::status="$root/state/status"
    -o Dir::Cache="$root/cache" -o APT::Architecture=amd64 -o Debug::NoLocking=1
    -o APT::Sandbox::User=root)
}

echo "--> apt-get update from the signed repository"
apt_in "$WORK/apt" "$REPO"
apt-get "${APT_OPTS[@]}" update >"$WORK/update.log" 2>&1 || fail "apt-get update failed: $(cat "$WORK/update.log")"
for deb in "$@"; do
  arch=$(dpkg-deb --field "$deb" Architecture)
  [ "$arch" = amd64 ] || [ "$arch" = all ] || continue
  pkg=$(dpkg-deb --field "$deb" Package)
  version=$(dpkg-deb --field "$deb" Version)
  candidate=$(apt-cache "${APT_OPTS[@]}" policy "$pkg" | awk '/Candidate:/ { print $2 }')
  [ "$candidate" = "$version" ] || fail "apt sees $pkg at '$candidate', not $version"
  echo "$pkg $version: apt's candidate"
done

echo "--> an unsigned copy is refused"
cp -a "$REPO" "$WORK/unsigned"
rm "$WORK/unsigned/dists/stable/InRelease" "$WORK/unsigned/dists/stable/Release.gpg"
apt_in "$WORK/apt-unsigned" "$WORK/unsigned"
if apt-get "${APT_OPTS[@]}" update >"$WORK/unsigned.log" 2>&1; then
  fail "apt accepted an unsigned repository: $(cat "$WORK/unsigned.log")"
fi
grep -q "is not signed" "$WORK/unsigned.log" || fail "unexpected refusal: $(cat "$WORK/unsigned.log")"

echo "--> an index changed after signing is refused"
cp -a "$REPO" "$WORK/tampered"
echo "" >>"$WORK/tampered/dists/stable/main/binary-amd64/Packages"
gzip -9nkf "$WORK/tampered/dists/stable/main/binary-amd64/Packages"
apt_in "$WORK/apt-tampered" "$WORK/tampered"
apt-get "${APT_OPTS[@]}" update >"$WORK/tampered.log" 2>&1 || true
if apt-cache "${APT_OPTS[@]}" policy lanyard 2>/dev/null | grep -q "Candidate: [0-9]"; then
  fail "apt used an index changed after signing: $(cat "$WORK/tampered.log")"
fi
grep -qi "hash sum mismatch\|File has unexpected size\|Hashes of expected file" "$WORK/tampered.log" \
  || fail "unexpected result for a changed index: $(cat "$WORK/tampered.log")"
echo "apt repository: all checks passed"
