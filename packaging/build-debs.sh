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
# The whole workspace, as the tests build it: the same features (the end-to-end tests turn
# on the hardware stores), so the tests' target/debug/lanyard is not rebuilt without them.
cargo build --workspace
generate_docs "$TARGET_DIR/debug" "$ROOT/packaging/generated"

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
# Hardware key stores (docs/BENCHMARKS.md, "Hardware keys", for the sizes): PKCS#11 in
# every package (cryptoki loads the token's module at run time: no library to link,
# +0.18 MB); the TPM (+1.33 MB with tss-esapi, which would take the agent over 7 MB) in a
# package of its own, lanyard-tpm, which replaces lanyard and depends on libtss2; amd64
# only for now (the ARM builds need the target's libtss2-dev through multiarch).
AGENT_FLAGS="--profile $AGENT_PROFILE --no-default-features --features pkcs11"
TPM_FLAGS="--profile $AGENT_PROFILE --no-default-features --features pkcs11,tpm --variant tpm"

# Each architecture's toolchain, checked before anything is built: a missing cross compiler
# otherwise stops the build minutes later with a C compiler error deep in aws-lc-sys.
missing_for() {
  case "$1" in
    amd64)
      pkg-config --exists tss2-esys 2>/dev/null || echo "apt-get install libtss2-dev pkg-config"
      ;;
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

# cross RUST_TARGET GCC_PREFIX PACKAGES: the agent (and the CA if PACKAGES names it) for an
# ARM board, with Debian's cross compiler for the C in aws-lc and SQLite.
cross() {
  local target=$1 gcc=$2 packages=$3 var
  rustup target list --installed | grep -qx "$target" || rustup target add "$target"
  var=${target//-/_}
  export "CC_$var=$gcc-gcc" "AR_$var=$gcc-ar"
  cargo deb -p lanyard-agent $AGENT_FLAGS --target "$target" --output dist/
  if [[ " $packages " == *" lanyard-ca "* ]]; then
    cargo deb -p lanyard-ca --target "$target" --output dist/
  fi
}

for arch in $ARCHES; do
  case "$arch" in
    amd64)
      cargo deb -p lanyard-agent $AGENT_FLAGS --output dist/
      cargo deb -p lanyard-agent $TPM_FLAGS --output dist/
      cargo deb -p lanyard-ca --output dist/
      ;;
    arm64) cross aarch64-unknown-linux-gnu aarch64-linux-gnu "$ARM64_PACKAGES" ;;
    armhf) cross armv7-unknown-linux-gnueabihf arm-linux-gnueabihf "$ARMHF_PACKAGES" ;;
    *) echo "unknown architecture $arch (amd64, arm64, armhf)" >&2; exit 2 ;;
  esac
done
ls -l dist/*.deb
[ -z "$skipped" ] || echo "build-debs: built for$ARCHES; skipped:$skipped" >&2
