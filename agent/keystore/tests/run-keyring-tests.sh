#!/usr/bin/env bash
# The credential store against real OS keystores: the Linux kernel keyring (inside a fresh
# session keyring, as systemd gives a service) and Secret Service (gnome-keyring on a
# private D-Bus session). With CI=true a missing tool fails the run.
set -euo pipefail
cd "$(dirname "$0")/../../.."

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then echo "keyring tests: $1 is missing (apt: $2)" >&2; exit 1; fi
    echo "keyring tests: $1 is missing (apt: $2); skipping" >&2
    return 1
  fi
}

cargo test -q -p lanyard-keystore --no-run

if need keyctl keyutils; then
  echo "--> kernel keyring (keyctl session)"
  keyctl session - env LANYARD_TEST_KERNEL_KEYRING=1 \
    cargo test -q -p lanyard-keystore kernel_keyring -- --ignored --test-threads=1
fi

if need dbus-run-session dbus && need gnome-keyring-daemon gnome-keyring && need secret-tool libsecret-tools; then
  echo "--> Secret Service (gnome-keyring on a private session bus)"
  # A throwaway HOME for the keyring files; cargo and rustup keep theirs.
  export RUSTUP_HOME="${RUSTUP_HOME:-$HOME/.rustup}" CARGO_HOME="${CARGO_HOME:-$HOME/.cargo}"
  home=$(mktemp -d)
  HOME=$home dbus-run-session -- bash -euo pipefail -c '
    export XDG_RUNTIME_DIR=$(mktemp -d)
    chmod 700 "$XDG_RUNTIME_DIR"
    eval "$(echo -n lanyard-test | gnome-keyring-daemon --unlock --components=secrets)"
    export GNOME_KEYRING_CONTROL
    LANYARD_TEST_SECRET_SERVICE=1 cargo test -q -p lanyard-keystore secret_service -- --ignored --test-threads=1
  '
  rm -rf "$home"
fi
