#!/bin/sh
# Run every gateway benchmark in turn and print their figures (see bench/README.md).
# Usage: bench/run_all.sh [--quick]   (--quick: bench_rss at 5,000 keys / 200 doors instead of 50k / 2k)
set -eu
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
RSS_ARGS=""
if [ "${1:-}" = "--quick" ]; then RSS_ARGS="--keys 5000 --doors 200"; fi
echo "== $(date -u +%FT%TZ) $(nproc) CPUs, $(uname -sr)"
echo "== bench_jobs";    $PY bench/bench_jobs.py
echo "== bench_checkin"; $PY bench/bench_checkin.py
# shellcheck disable=SC2086
echo "== bench_rss";     $PY bench/bench_rss.py $RSS_ARGS
