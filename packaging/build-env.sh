# Sourced by packaging/build-debs.sh and the packaging tests that build packages: the
# settings every package build shares. Needs ROOT (the checkout) set.
#
# Reproducible: two builds of one commit give byte-identical .debs. cargo-deb dates every
# file in the archive SOURCE_DATE_EPOCH (the last commit's time); the binaries carry no
# absolute path of this machine: workspace sources are compiled by relative path, symbols
# are stripped, and the paths of registry sources (panic locations, C assertions in
# aws-lc) are rewritten from CARGO_HOME to /cargo, in Rust and in C alike.
LANYARD_CARGO_HOME=$(cd "${CARGO_HOME:-$HOME/.cargo}" && pwd -P)
# Exported for the package builds only: the debug build (man pages) stays as the tests made
# it. The cc crate rebuilds C code when SOURCE_DATE_EPOCH changes, so exporting it earlier
# would rebuild aws-lc and SQLite in the debug profile at every commit.
package_build_env() {
  if [ -z "${SOURCE_DATE_EPOCH:-}" ]; then
    SOURCE_DATE_EPOCH=$(git -C "$ROOT" log -1 --format=%ct 2>/dev/null || true)
    [ -n "$SOURCE_DATE_EPOCH" ] || { echo "packaging: no git history for SOURCE_DATE_EPOCH; set it" >&2; exit 2; }
  fi
  export SOURCE_DATE_EPOCH
  export RUSTFLAGS="--remap-path-prefix=$LANYARD_CARGO_HOME=/cargo"
  export CFLAGS="-ffile-prefix-map=$LANYARD_CARGO_HOME=/cargo" CXXFLAGS="-ffile-prefix-map=$LANYARD_CARGO_HOME=/cargo"
  # LANYARD_DEB_FAST=1 (the packaging test in CI): packages to check, not to ship. The same
  # layout, scripts and units, but no LTO, 16 codegen units, opt-level 1. Release packages,
  # and the sizes in docs/BENCHMARKS.md, come from a build without it.
  if [ "${LANYARD_DEB_FAST:-}" = 1 ]; then
    export CARGO_PROFILE_RELEASE_LTO=off CARGO_PROFILE_RELEASE_CODEGEN_UNITS=16 \
      CARGO_PROFILE_RELEASE_OPT_LEVEL=1 CARGO_PROFILE_RELEASE_INCREMENTAL=false
  fi
}

# generate_docs BIN_DIR OUT_DIR: man pages and shell completions, from the programs themselves.
generate_docs() {
  local bin
  mkdir -p "$2"
  for bin in lanyard lanyard-ca; do
    "$1/$bin" completions bash >"$2/$bin.bash"
    "$1/$bin" completions zsh >"$2/_$bin"
    "$1/$bin" completions fish >"$2/$bin.fish"
    "$1/$bin" manpage | gzip -9n >"$2/$bin.1.gz"
  done
}
