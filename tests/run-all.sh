#!/usr/bin/env bash
# Run every suite against $BUILD and end with one line "N passed, N failed".
#   unit:  tests/unit/test_* binaries (each ends with "N passed, N failed")
#   spec:  busted specs in tests/spec, in stock lua5.4 loading $BUILD/parlua.so
#          (MODE=host: through the $BUILD/parlua program instead)
#   smoke: every scripts/*.lua example, run by $BUILD/parlua with PARLUA_SMOKE=1
#   embed: the embedding example host program
#   conformance: the official Lua test suite (tests/conformance/run.sh)
#   checks: tests/checks/*.sh (layers in the sources, exported symbols)
set -u
BUILD=${BUILD:-build}
MODE=${MODE:-module}
passed=0
failed=0
failures=()

count_line() {  # add the "N passed, N failed" line of a suite's output
  local line
  line=$(grep -E '^[0-9]+ passed, [0-9]+ failed' "$1" | tail -n 1)
  if [ -z "$line" ]; then
    failed=$((failed + 1)); failures+=("$2: no result line"); return
  fi
  local p f
  p=$(echo "$line" | sed -E 's/^([0-9]+) passed.*/\1/')
  f=$(echo "$line" | sed -E 's/.* ([0-9]+) failed.*/\1/')
  passed=$((passed + p)); failed=$((failed + f))
  [ "$f" -gt 0 ] && failures+=("$2: $f failed")
  return 0
}

out=$(mktemp)
trap 'rm -f "$out"' EXIT

echo "== unit tests"
for t in "$BUILD"/tests/test_*; do
  [ -x "$t" ] || continue
  PARLUA_BUILD="$BUILD" timeout 300 "$t" > "$out" 2>&1
  rc=$?
  cat "$out"
  count_line "$out" "$(basename "$t")"
  [ $rc -ne 0 ] && ! grep -qE '[1-9][0-9]* failed' "$out" && { failed=$((failed + 1)); failures+=("$(basename "$t"): exit $rc"); }
done

echo "== layer and symbol checks"
for c in tests/checks/*.sh; do
  BUILD="$BUILD" bash "$c" > "$out" 2>&1
  cat "$out"
  count_line "$out" "$(basename "$c")"
done

echo "== busted specs ($MODE mode)"
if [ "$MODE" = host ]; then
  runner=("$BUILD/parlua" /usr/bin/busted)
  export PARLUA_LUA="$BUILD/parlua"
else
  runner=(lua5.4 /usr/bin/busted)
fi
LUA_CPATH="$BUILD/?.so;;" PARLUA_BUILD="$BUILD" timeout 1200 "${runner[@]}" -o TAP tests/spec > "$out" 2>&1
rc=$?
cat "$out"
ok=$(grep -cE '^ok [0-9]+' "$out")
notok=$(grep -cE '^not ok [0-9]+' "$out")
passed=$((passed + ok)); failed=$((failed + notok))
[ "$notok" -gt 0 ] && failures+=("specs: $notok failed")
if [ $rc -ne 0 ] && [ "$notok" -eq 0 ]; then failed=$((failed + 1)); failures+=("specs: busted exited $rc"); fi

# Kind mpi's pool cases, in both launch modes, through the parlua program:
# static under mpiexec (ranks 1 and 2 serve rank 0), spawn from a singleton,
# and spawn again with MPI_THREAD_SERIALIZED (every MPI call behind a mutex).
echo "== mpi specs"
if [ ! -f "$BUILD/parlua_mpi.so" ] || ! command -v mpiexec >/dev/null; then
  echo "skipping the mpi specs: kind mpi is not built here (apt-get install libopenmpi-dev openmpi-bin)"
else
  # As root Open MPI must be told it may run; on a small machine, oversubscribe.
  export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 OMPI_MCA_rmaps_base_oversubscribe=1
  for m in static spawn serialized; do
    if [ $m = static ]; then launch=(mpiexec --oversubscribe -n 3); else launch=(); fi
    level=(); [ $m = serialized ] && level=(PARLUA_MPI_THREAD_LEVEL=serialized)
    env "${level[@]}" PARLUA_MPI_MODE=${m/serialized/spawn} LUA_CPATH="$BUILD/?.so;;" timeout 300 "${launch[@]}" "$BUILD/parlua" /usr/bin/busted \
      -o TAP tests/mpi > "$out" 2>&1
    rc=$?
    sed "s/^/[$m] /" "$out"
    ok=$(grep -cE '^ok [0-9]+' "$out")
    notok=$(grep -cE '^not ok [0-9]+' "$out")
    passed=$((passed + ok)); failed=$((failed + notok))
    [ "$notok" -gt 0 ] && failures+=("mpi specs ($m): $notok failed")
    if [ $rc -ne 0 ] && [ "$notok" -eq 0 ]; then failed=$((failed + 1)); failures+=("mpi specs ($m): exit $rc"); fi
  done
fi

echo "== smoke: scripts/*.lua"
for s in scripts/*.lua; do
  [ -f "$s" ] || continue
  if PARLUA_SMOKE=1 timeout 120 "$BUILD/parlua" "$s" > "$out" 2>&1; then
    passed=$((passed + 1)); echo "ok   $s"
  else
    failed=$((failed + 1)); failures+=("smoke: $s"); echo "FAIL $s"; cat "$out"
  fi
done

if [ -x "$BUILD/embed_example" ]; then
  echo "== embedding example"
  if timeout 60 "$BUILD/embed_example" > "$out" 2>&1; then
    passed=$((passed + 1)); echo "ok   embed_example"
  else
    failed=$((failed + 1)); failures+=("embed_example"); cat "$out"
  fi
fi

# The official Lua test suite under the program, alone and beside a busy
# thread (tests/conformance/run.sh); the sanitizer builds leave it out.
if [ "$MODE" = module ]; then
  echo "== conformance: the Lua 5.4.4 test suite"
  BUILD=$BUILD bash tests/conformance/run.sh > "$out" 2>&1
  cat "$out"
  count_line "$out" "conformance"
fi

for f in "${failures[@]}"; do echo "FAILED: $f"; done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
