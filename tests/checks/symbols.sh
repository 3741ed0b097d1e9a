#!/usr/bin/env bash
# The two shared objects export the public API only: every defined dynamic
# symbol of $BUILD/libparlua.so and $BUILD/parlua.so is parlua_* or
# luaopen_* (include/parlua.h marks them PARLUA_API; the rest is hidden).
# A sanitizer's own instrumentation symbols (__asan_*, ...) are not ours.
set -u
BUILD=${BUILD:-build}
passed=0
failed=0
for so in "$BUILD/libparlua.so" "$BUILD/parlua.so"; do
  if [ ! -e "$so" ]; then
    failed=$((failed + 1)); echo "FAIL $so: missing"; continue
  fi
  extra=$(nm -D --defined-only "$so" | awk 'NF == 3 {print $3}' |
          grep -vE '^(parlua_|luaopen_)' | grep -vE '^__(asan|ubsan|tsan|sanitizer|odr_asan)' || true)
  if [ -z "$extra" ]; then
    passed=$((passed + 1)); echo "ok   $so exports only parlua_*/luaopen_*"
  else
    failed=$((failed + 1))
    echo "FAIL $so exports $(echo "$extra" | wc -l) other symbols:"
    echo "$extra" | head -20 | sed 's/^/       /'
  fi
done
echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
