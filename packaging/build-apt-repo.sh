#!/usr/bin/env bash
# A signed apt repository from the .debs packaging/build-debs.sh makes.
#
#   LANYARD_APT_KEY=<fingerprint> packaging/build-apt-repo.sh REPO_DIR [DEB...]
#
# DEB... defaults to dist/*.deb. LANYARD_APT_KEY names a secret key in the operator's
# GnuPG keyring (GNUPGHOME; `gpg --list-secret-keys`): a key kept offline or in a
# hardware token, for a real repository. Writes, under REPO_DIR:
#
#   pool/main/*.deb
#   dists/stable/main/binary-{amd64,arm64,armhf}/Packages, Packages.gz
#   dists/stable/Release, InRelease (clearsigned), Release.gpg (detached)
#   lanyard-archive-keyring.gpg   the public key, for /usr/share/keyrings/
#
# and prints the source line users add (`signed-by`: the key is trusted for this
# repository only, not for every source, as apt-key once did). Publish REPO_DIR as is (S3
# and CloudFront, nginx, any static host). Running it again with more .debs adds them.
set -euo pipefail
cd "$(dirname "$0")/.."

die() { echo "build-apt-repo.sh: $*" >&2; exit 1; }
[ $# -ge 1 ] || die "usage: LANYARD_APT_KEY=<fingerprint> $0 REPO_DIR [DEB...]"
for tool in apt-ftparchive gpg; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is missing (Debian: apt-get install apt-utils gnupg)"
done
KEY=${LANYARD_APT_KEY:-}
[ -n "$KEY" ] || die "LANYARD_APT_KEY is not set: give the fingerprint of the repository's signing key (gpg --list-secret-keys)"
gpg --batch --list-secret-keys "$KEY" >/dev/null 2>&1 \
  || die "no secret key $KEY in ${GNUPGHOME:-~/.gnupg} (gpg --list-secret-keys)"

REPO=$1
shift
if [ $# -eq 0 ]; then
  shopt -s nullglob
  set -- dist/*.deb
  shopt -u nullglob
fi
[ $# -gt 0 ] || die "no .deb given and none in dist/ (packaging/build-debs.sh makes them)"

ARCHES="amd64 arm64 armhf"
SUITE=stable
mkdir -p "$REPO/pool/main"
for deb in "$@"; do
  [ -f "$deb" ] || die "$deb: no such file"
  dpkg-deb --field "$deb" Package >/dev/null 2>&1 || die "$deb is not a Debian package"
  cp -f "$deb" "$REPO/pool/main/"
done

cd "$REPO"
# Fixed timestamps inside the index files (gzip -n): the same .debs give the same indexes.
for arch in $ARCHES; do
  dir=dists/$SUITE/main/binary-$arch
  mkdir -p "$dir"
  apt-ftparchive --arch "$arch" packages pool/main >"$dir/Packages"
  gzip -9nkf "$dir/Packages"
done
release=$(mktemp)
trap 'rm -f "$release"' EXIT
apt-ftparchive \
  -o APT::FTPArchive::Release::Origin=Lanyard \
  -o APT::FTPArchive::Release::Label=Lanyard \
  -o APT::FTPArchive::Release::Suite="$SUITE" \
  -o APT::FTPArchive::Release::Codename="$SUITE" \
  -o APT::FTPArchive::Release::Architectures="$ARCHES" \
  -o APT::FTPArchive::Release::Components=main \
  -o APT::FTPArchive::Release::Description="Lanyard device identity agent and CA" \
  release "dists/$SUITE" >"$release"
mv "$release" "dists/$SUITE/Release"
rm -f "dists/$SUITE/InRelease" "dists/$SUITE/Release.gpg"
gpg --batch --yes --local-user "$KEY" --digest-algo SHA512 --clearsign \
  --output "dists/$SUITE/InRelease" "dists/$SUITE/Release"
gpg --batch --yes --local-user "$KEY" --digest-algo SHA512 --armor --detach-sign \
  --output "dists/$SUITE/Release.gpg" "dists/$SUITE/Release"
gpg --batch --yes --export "$KEY" >lanyard-archive-keyring.gpg

echo "apt repository in $PWD ($(ls pool/main | wc -l) packages), signed by $KEY" >&2
echo "users install the key and add the source:" >&2
echo "  sudo install -m 0644 lanyard-archive-keyring.gpg /usr/share/keyrings/" >&2
echo "  echo 'deb [signed-by=/usr/share/keyrings/lanyard-archive-keyring.gpg] https://apt.example.com $SUITE main' | sudo tee /etc/apt/sources.list.d/lanyard.list" >&2
