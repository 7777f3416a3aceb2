#!/usr/bin/env bash
# `npm run bench [-- <scenario>...]` after the build: puts the tools the benchmarks need on PATH,
# runs the scenarios (bench/run.ts, writing bench/results.json), then writes docs/BENCHMARKS.md
# from the results (bench/report.ts), also when a scenario failed (its section says why).
#
#   h2load  Debian's nghttp2-client, installed with apt-get when missing (root)
#   Envoy   scripts/envoy.sh (installs into .venv/envoy when none is found), only when the
#           envoy scenario runs; without one that scenario is recorded as skipped with the reason
set -uo pipefail
cd "$(dirname "$0")/.."

if ! command -v h2load >/dev/null 2>&1; then
  echo "bench: h2load missing: installing nghttp2-client with apt-get" >&2
  for attempt in 1 2 3 4 5; do
    apt-get update -qq >/dev/null 2>&1 && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq nghttp2-client >/dev/null 2>&1 && break
    echo "bench: apt-get failed (attempt $attempt; apt may be locked), retrying in 10 s" >&2
    sleep 10
  done
fi

wants_envoy=1
if [ $# -gt 0 ]; then
  wants_envoy=0
  for a in "$@"; do [ "$a" = envoy ] && wants_envoy=1; done
fi
if [ "$wants_envoy" = 1 ] && [ -z "${ENVOY_BIN:-}" ]; then
  if bin="$(scripts/envoy.sh)"; then export ENVOY_BIN="$bin"; fi
fi

node dist-bench/bench/run.js "$@"
status=$?
case " $* " in *" --list "*) exit "$status" ;; esac
node dist-bench/bench/report.js || status=$?
exit "$status"
