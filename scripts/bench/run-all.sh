#!/usr/bin/env bash
# `make bench`: every benchmark in one run, each printing its numbers beside
# a baseline measured in the same run, then a summary of targets met.
set -u
BUILD=${BUILD:-build}
export PARLUA_BUILD=$BUILD
log=$(mktemp)   # the target lines of every benchmark, tagged with its name
out=$(mktemp)   # one benchmark's output
trap 'rm -f "$log" "$out"' EXIT
echo "machine: $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ *//'), $(uname -sr)"
echo "lua: $(lua5.4 -v 2>&1)   python: $(python3 --version 2>&1 || echo none)"
for b in scripts/bench/*.lua; do
  [ "$(basename "$b")" = common.lua ] && continue  # helpers, not a benchmark
  echo
  echo "######## $b"
  timeout 900 "$BUILD/parlua" "$b" 2>&1 | tee "$out"
  # the lines that state a target (report in common.lua)
  grep -E ' (ok|MISSED)$' "$out" | sed "s/^ */$(printf '%-11s' "$(basename "$b" .lua)")/" >> "$log"
done
echo
echo "######## summary: every target, its value in this run, and whether it was met"
cat "$log"
met=$(grep -cE ' ok$' "$log")
missed=$(grep -cE 'MISSED$' "$log")
echo "targets met: $met, missed: $missed"
