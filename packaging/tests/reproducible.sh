#!/usr/bin/env bash
# Reproducible packages: the amd64 .debs in dist/ (built from this checkout by
# build-debs.sh) and a second build of the same commit from a checkout at another path
# (a git worktree) must be byte-identical. The second build shares the target directory,
# so the dependencies are compiled once; what it rebuilds is every workspace crate (from
# the other path), the link, the man pages and completions, and the archives. The check
# with nothing shared (two target directories) is in docs/RELIABILITY.md.
#
#   packaging/tests/reproducible.sh        (after build-debs.sh, on a clean checkout)
set -euo pipefail
cd "$(dirname "$0")/../.."
ROOT=$PWD
fail() { echo "reproducible build test: $*" >&2; exit 1; }
# fuzz/ is outside the workspace (its own lock file, which the fuzz run beside this one may
# touch) and goes into no package.
if [ -n "$(git status --porcelain --untracked-files=no -- . ':!fuzz')" ]; then
  # dist/ was built from files that differ from the commit the second build checks out.
  [ "${CI:-}" = "true" ] && fail "the checkout has uncommitted changes"
  echo "reproducible build test: uncommitted changes; commit them to run it" >&2
  exit 0
fi
first=("$ROOT"/dist/lanyard_*_amd64.deb "$ROOT"/dist/lanyard-tpm_*_amd64.deb "$ROOT"/dist/lanyard-ca_*_amd64.deb)
for deb in "${first[@]}"; do [ -f "$deb" ] || fail "$deb missing: run packaging/build-debs.sh first"; done

WORK=$(mktemp -d)
trap 'git -C "$ROOT" worktree remove --force "$WORK/src" >/dev/null 2>&1 || true; rm -rf "$WORK"' EXIT
git worktree add -q --detach "$WORK/src" HEAD
(
  cd "$WORK/src"
  export CARGO_TARGET_DIR=${CARGO_TARGET_DIR:-$ROOT/target}
  LANYARD_DEB_ARCHES=amd64 bash packaging/build-debs.sh
) >"$WORK/build.log" 2>&1 || { tail -30 "$WORK/build.log" >&2; fail "the second build failed"; }

differs=0
for deb in "${first[@]}"; do
  second="$WORK/src/dist/$(basename "$deb")"
  [ -f "$second" ] || fail "the second build made no $(basename "$deb")"
  if cmp -s "$deb" "$second"; then
    echo "$(basename "$deb"): identical ($(sha256sum <"$deb" | cut -c1-16))"
    continue
  fi
  differs=1
  echo "$(basename "$deb"): the two builds differ" >&2
  if command -v diffoscope >/dev/null 2>&1; then
    diffoscope --text - "$deb" "$second" | head -60 >&2 || true
  else
    # Which files differ: every archive member, and every file in control and data.
    for side in a b; do
      d=$deb; [ "$side" = b ] && d=$second
      rm -rf "${WORK:?}/$side" && mkdir -p "$WORK/$side/control" "$WORK/$side/data"
      (cd "$WORK/$side" && ar x "$d" && tar -xf control.tar.* -C control && tar -xf data.tar.* -C data)
    done
    diff <(cd "$WORK/a" && find . -type f -exec sha256sum {} + | sort -k2) \
      <(cd "$WORK/b" && find . -type f -exec sha256sum {} + | sort -k2) >&2 || true
    diff <(tar -tv --full-time -f "$WORK"/a/data.tar.*) <(tar -tv --full-time -f "$WORK"/b/data.tar.*) >&2 || true
  fi
done
[ "$differs" = 0 ] || fail "two builds of $(git rev-parse --short=12 HEAD) gave different packages"
echo "reproducible: two builds of $(git rev-parse --short=12 HEAD) from different paths gave identical .debs"
