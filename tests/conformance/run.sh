#!/usr/bin/env bash
# make conformance: the official Lua 5.4.4 test suite under $BUILD/parlua,
# copied into $BUILD/conformance (some files write beside themselves), each
# file in a fresh interpreter, twice: alone ("plain"), and with a busy
# par.thread started before it ("busy", see busy.lua).  Portable mode
# (_port=true, as all.lua reads it), except main.lua, which tests the
# interpreter itself and is all non-portable.  Ends with "N passed, N
# failed", one pass per file per mode.  docs/testing.md has the details.
# INTERP=lua5.4 runs the same under stock lua5.4 (with $BUILD/parlua.so for
# the busy thread), to see what the suite does there.
set -u
BUILD=${BUILD:-build}
SUITE=${LUA_TESTS:-../shared/lua-5.4.4-tests}
here=$(cd "$(dirname "$0")" && pwd)

if [ ! -f "$SUITE/all.lua" ]; then
  echo "conformance: no Lua test suite at $SUITE (set LUA_TESTS): skipped"
  echo "0 passed, 0 failed"
  exit 0
fi
abs_build=$(cd "$BUILD" && pwd)
PARLUA=$abs_build/parlua
if [ -n "${INTERP:-}" ]; then
  PARLUA=$INTERP
  export LUA_CPATH="$abs_build/?.so;;"
fi
dir=$BUILD/conformance
rm -rf "$dir"
cp -r "$SUITE" "$dir"
cp "$here/busy.lua" "$dir/parlua_busy.lua"
cd "$dir" || exit 1

# all.lua's order.  big.lua yields: it runs in a coroutine, as all.lua runs it.
files=(main gc db calls strings literals tpack attrib gengc locals constructs code big
       cstack nextvar pm utf8 api events vararg closure coroutine goto errors math sort
       bitwise verybig files)

# Files whose checks cannot hold beside another thread, with the reason: run,
# reported, not counted when they fail.
known_busy() {
  case $1 in
    gc) echo "its heap-size checks (collectgarbage('count') before and after a collection) assume no other thread allocates" ;;
    *) return 1 ;;
  esac
}

passed=0
failed=0
log=$(mktemp)
trap 'rm -f "$log"' EXIT

run_file() {  # mode file: run it, exit status of the interpreter
  local mode=$1 f=$2 args=()
  [ "$f" = main ] || args+=(-e "_port=true")
  [ "$mode" = busy ] && args+=(-e "require 'parlua_busy'")
  if [ "$f" = big ]; then
    args+=(-e "local f = coroutine.wrap(assert(loadfile('big.lua'))) assert(f() == 'b') assert(f() == 'a')")
  else
    args+=("$f.lua")
  fi
  # Its own session, so that what it leaves behind can be killed: a try of
  # main.lua's Ctrl-C part that fails leaves its `while true do end` child
  # running, reparented, burning a CPU for good.
  setsid timeout 300 "$PARLUA" "${args[@]}" > "$log" 2>&1 < /dev/null &
  local session=$! rc
  wait "$session"
  rc=$?
  kill -KILL -- "-$session" 2>/dev/null
  return $rc
}

for mode in plain busy; do
  for f in "${files[@]}"; do
    t0=$(date +%s%N)
    run_file "$mode" "$f"
    rc=$?
    # main.lua's Ctrl-C part races on a loaded machine (the shell's `echo $!`
    # against the script's first print), under lua5.4 too: up to 3 tries.
    for _ in 1 2; do
      if [ $rc -ne 0 ] && [ "$f" = main ]; then run_file "$mode" "$f"; rc=$?; fi
    done
    ms=$(( ($(date +%s%N) - t0) / 1000000 ))
    if [ $rc -eq 0 ]; then
      passed=$((passed + 1))
      printf 'ok   %-5s %-16s %6d ms\n' "$mode" "$f.lua" "$ms"
    elif [ "$mode" = busy ] && why=$(known_busy "$f"); then
      printf 'known %-5s %-15s (exit %d): %s\n' "$mode" "$f.lua" "$rc" "$why"
    else
      failed=$((failed + 1))
      printf 'FAIL %-5s %-16s (exit %d)\n' "$mode" "$f.lua" "$rc"
      tail -n 15 "$log" | sed 's/^/     | /'
    fi
  done
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
