#!/usr/bin/env bash
# Builds the lanyard and lanyard-ca .debs for amd64, arm64 and armhf into dist/.
#   packaging/build-debs.sh                 every architecture
#   LANYARD_DEB_ARCHES=amd64 packaging/build-debs.sh
# Without LANYARD_DEB_ARCHES, an architecture whose cross compiler is missing is skipped and
# named (with what to install); an architecture asked for by name fails at once instead.
# Needs: cargo-deb (installed here if missing), and for arm64 the Rust target
# aarch64-unknown-linux-gnu plus apt's gcc-aarch64-linux-gnu, for armhf (32-bit ARMv7 with
# hardware floating point: Raspberry Pi OS, many industrial boards) the Rust target
# armv7-unknown-linux-gnueabihf plus gcc-arm-linux-gnueabihf (see .cargo/config.toml).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
ARCHES=${LANYARD_DEB_ARCHES:-amd64 arm64 armhf}
# Which packages to build for arm64: devices run the agent; the CA on arm64 is for small
# single-board deployments. CI builds only the agent for arm64 (each fat-LTO cross build
# costs minutes); a release builds both.
ARM64_PACKAGES=${LANYARD_ARM64_PACKAGES:-lanyard lanyard-ca}
# armhf boards are devices: the agent only (LANYARD_ARMHF_PACKAGES="lanyard lanyard-ca" for both).
ARMHF_PACKAGES=${LANYARD_ARMHF_PACKAGES:-lanyard}
command -v cargo-deb >/dev/null || cargo install cargo-deb --locked
mkdir -p dist "$ROOT/packaging/generated"
# SOURCE_DATE_EPOCH, path remapping and the test-package settings (build-env.sh).
. "$ROOT/packaging/build-env.sh"

# Man pages and completions come from the programs themselves (same on every arch and
# profile, so the debug build, which the tests have already made, is enough).
cargo build -p lanyard-agent -p lanyard-ca
gen="$ROOT/packaging/generated"
for bin in lanyard lanyard-ca; do
  exe="$TARGET_DIR/debug/$bin"
  "$exe" completions bash > "$gen/$bin.bash"
  "$exe" completions zsh > "$gen/_$bin"
  "$exe" completions fish > "$gen/$bin.fish"
  "$exe" manpage | gzip -9n > "$gen/$bin.1.gz"
done

# The agent is built for devices: the size-optimised `device` profile, without Secret
# Service (a system service has no session bus; the file and kernel-keyring stores remain).
AGENT_PROFILE=device
# LANYARD_DEB_FAST=1 (the packaging test in CI; build-env.sh): the agent in the release
# profile too, so that it shares the CA's dependency builds (aws-lc above all). Three
# fat-LTO builds took about half of CI's time; these take a fraction of it.
package_build_env
if [ "${LANYARD_DEB_FAST:-}" = 1 ]; then
  AGENT_PROFILE=release
  echo "LANYARD_DEB_FAST=1: test packages (no LTO, opt-level 1), not release packages"
fi
AGENT_FLAGS="--profile $AGENT_PROFILE --no-default-features"

# Each architecture's toolchain, checked before anything is built: a missing cross compiler
# otherwise stops the build minutes later with a C compiler error deep in aws-lc-sys.
missing_for() {
  case "$1" in
    amd64) ;;
    arm64)
      command -v aarch64-linux-gnu-gcc >/dev/null || echo "apt-get install gcc-aarch64-linux-gnu libc6-dev-arm64-cross"
      ;;
    armhf)
      command -v arm-linux-gnueabihf-gcc >/dev/null || echo "apt-get install gcc-arm-linux-gnueabihf libc6-dev-armhf-cross"
      ;;
    *) echo "no such architecture (amd64, arm64, armhf)" ;;
  esac
}
built="" skipped=""
requested=${LANYARD_DEB_ARCHES:+yes}
for arch in $ARCHES; do
  need=$(missing_for "$arch")
  [ -z "$need" ] && { built+=" $arch"; continue; }
  if [ -n "$requested" ]; then
    echo "build-debs: cannot build for $arch: $need" >&2
    exit 2
  fi
  echo "build-debs: skipping $arch: $need" >&2
  skipped+=" $arch ($need)"
done
ARCHES=$built

for arch in $ARCHES; do
  case "$arch" in
    amd64)
      cargo deb -p lanyard-agent $AGENT_FLAGS --output dist/
      cargo deb -p lanyard-ca --output dist/
      ;;
    arm64)
      rustup target list --installed | grep -qx aarch64-unknown-linux-gnu || rustup target add aarch64-unknown-linux-gnu
      export CC_aarch64_unknown_linux_gnu=aarch64-linux-gnu-gcc AR_aarch64_unknown_linux_gnu=aarch64-linux-gnu-ar
      cargo deb -p lanyard-agent $AGENT_FLAGS --target aarch64-unknown-linux-gnu --output dist/
      if [[ " $ARM64_PACKAGES " == *" lanyard-ca "* ]]; then
        cargo deb -p lanyard-ca --target aarch64-unknown-linux-gnu --output dist/
      fi
      ;;
    armhf)
      rustup target list --installed | grep -qx armv7-unknown-linux-gnueabihf || rustup target add armv7-unknown-linux-gnueabihf
      export CC_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-gcc AR_armv7_unknown_linux_gnueabihf=arm-linux-gnueabihf-ar
      cargo deb -p lanyard-agent $AGENT_FLAGS --target armv7-unknown-linux-gnueabihf --output dist/
      if [[ " $ARMHF_PACKAGES " == *" lanyard-ca "* ]]; then
        cargo deb -p lanyard-ca --target armv7-unknown-linux-gnueabihf --output dist/
      fi
      ;;
    *) echo "unknown architecture $arch (amd64, arm64, armhf)" >&2; exit 2 ;;
  esac
done
ls -l dist/*.deb
[ -z "$skipped" ] || echo "build-debs: built for$ARCHES; skipped:$skipped" >&2
