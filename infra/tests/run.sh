#!/usr/bin/env bash
# Offline checks of infra/: formatting, checkov, every name against the AWS provider's
# schema, the connection function under node, the KeyValueStore sync and the bundle
# preconditions under pytest. With CI=true a missing tool fails the run.
set -euo pipefail
cd "$(dirname "$0")/.."
INFRA=$PWD

need() {
  if ! command -v "$1" >/dev/null 2>&1; then
    if [ "${CI:-}" = "true" ]; then echo "infra tests: $1 is missing" >&2; exit 1; fi
    echo "infra tests: $1 is missing; skipping what needs it" >&2
    return 1
  fi
}

# The HCL parser comes with checkov (bc-python-hcl2, imported as hcl2); installing
# python-hcl2 beside it would replace the module checkov needs.
python3 -c 'import pytest' 2>/dev/null || python3 -m pip install -q --disable-pip-version-check pytest 2>&1 | grep -v "^WARNING" || true

if need terraform; then
  echo "--> terraform fmt -check -recursive"
  terraform fmt -check -recursive "$INFRA"
fi

if need checkov; then
  echo "--> checkov"
  checkov -d "$INFRA" --framework terraform --skip-download --compact --quiet 2>&1 \
    | grep -v -e "CLI configuration" -e '^[│╷╵]' -e "^There are some problems"
  # checkov's exit status is what counts (grep above only trims its noise).
  checkov -d "$INFRA" --framework terraform --skip-download --quiet >/dev/null 2>&1
fi

# The AWS provider schema, from the Pulumi package generated from it (fetched once, cached
# outside the repository).
PULUMI_VERSION=7.48.0
CACHE=${XDG_CACHE_HOME:-$HOME/.cache}/lanyard/pulumi-aws-$PULUMI_VERSION
if need npm; then
  if [ ! -f "$CACHE/package/types/input.d.ts" ]; then
    mkdir -p "$CACHE"
    (cd "$CACHE" && npm pack "@pulumi/aws@$PULUMI_VERSION" --silent >/dev/null 2>&1 && tar xzf "pulumi-aws-$PULUMI_VERSION.tgz")
  fi
  echo "--> resource and argument names against the provider schema"
  python3 "$INFRA/tests/check_schema.py" "$CACHE/package" "$INFRA"
  export LANYARD_PULUMI_PKG="$CACHE/package"
fi

if need node; then
  echo "--> connection function (node --test)"
  node --test "$INFRA/tests/"
fi

need openssl >/dev/null || true
echo "--> KeyValueStore sync and bundle preconditions (pytest)"
python3 -m pytest -q "$INFRA/tests"
