#!/usr/bin/env bash
# Finds the schemathesis CLI (`st`, the property-based API fuzzer the drills run against the admin
# port from openapi/openapi.yaml) and prints its path on stdout; the version goes to stderr.
# Order: $SCHEMATHESIS_BIN, then the project-local venv .venv/schemathesis, into which it installs
# PyPI's schemathesis when it is not there (the only network it needs; the run itself stays on
# loopback).
#
#   scripts/schemathesis.sh              find, or install into .venv/schemathesis
#   scripts/schemathesis.sh --no-install find only; exit 3 (and say why on stderr) when there is none
#
# The version is pinned: its checks decide what a finding is (docs/RELIABILITY.md, "api-fuzz").
set -euo pipefail

SCHEMATHESIS_VERSION="${SCHEMATHESIS_VERSION:-4.32.5}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv/schemathesis"
install=1
[ "${1:-}" = "--no-install" ] && install=0

report() { # $1 = path; prints the version line, then the path
  local v
  if ! v="$("$1" --version 2>&1)"; then
    echo "schemathesis.sh: $1 does not run: $v" >&2
    exit 4
  fi
  echo "schemathesis.sh: using $1 ($v)" >&2
  echo "$1"
  exit 0
}

if [ -n "${SCHEMATHESIS_BIN:-}" ]; then
  [ -x "$SCHEMATHESIS_BIN" ] || { echo "schemathesis.sh: SCHEMATHESIS_BIN=$SCHEMATHESIS_BIN is not an executable file" >&2; exit 4; }
  report "$SCHEMATHESIS_BIN"
fi
if [ -x "$VENV/bin/st" ] && "$VENV/bin/st" --version 2>/dev/null | grep -q "version $SCHEMATHESIS_VERSION\$"; then report "$VENV/bin/st"; fi

if [ "$install" = 0 ]; then
  echo "schemathesis.sh: no schemathesis $SCHEMATHESIS_VERSION found (SCHEMATHESIS_BIN unset, none in $VENV); run scripts/schemathesis.sh to install it from PyPI" >&2
  exit 3
fi
command -v python3 >/dev/null 2>&1 || { echo "schemathesis.sh: python3 is missing, so schemathesis cannot be installed" >&2; exit 3; }
echo "schemathesis.sh: installing schemathesis==$SCHEMATHESIS_VERSION into $VENV" >&2
rm -rf "$VENV"
python3 -m venv "$VENV" >&2 || { echo "schemathesis.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 3; }
"$VENV/bin/pip" install --quiet --disable-pip-version-check "schemathesis==$SCHEMATHESIS_VERSION" >&2
report "$VENV/bin/st"
