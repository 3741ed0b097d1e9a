#!/usr/bin/env bash
# The layers of docs/architecture.md, checked in the sources: runtime/ never
# calls up into bindings/ (no bindings header, no Lua-facing class name, no
# luaopen_ function), and only runtime/core takes a global lock directly.
# Prints one ok/FAIL line per rule, then "N passed, N failed".
set -u
cd "$(dirname "$0")/../.."
passed=0
failed=0

rule() {  # rule NAME OFFENDING-LINES
  if [ -z "$2" ]; then
    passed=$((passed + 1)); echo "ok   $1"
  else
    failed=$((failed + 1)); echo "FAIL $1:"; echo "$2" | sed 's/^/       /'
  fi
}

headers=$(cd bindings && ls *.h | sed 's/[.]/[.]/g' | paste -sd'|')
rule "no runtime/ file includes a bindings header" \
  "$(grep -rnE "#include \"($headers)\"" runtime || true)"

# Every metatable name a binding defines ("parlua.Queue" ...).
names=$(grep -hoE '_MT\[\] = "[^"]+"' bindings/*.c | sed -E 's/.*"([^"]+)"/\1/' | sort -u)
offenders=""
for n in $names; do
  hits=$(grep -rnF "\"$n\"" runtime || true)
  [ -n "$hits" ] && offenders+="$hits"$'\n'
done
rule "no runtime/ file names a Lua-facing class ($(echo $names | wc -w) names)" "${offenders%$'\n'}"

rule "no runtime/ file calls a luaopen_ function" "$(grep -rn 'luaopen_' runtime || true)"

rule "only runtime/core takes a global lock (pl_gil_acquire)" \
  "$(grep -rn 'pl_gil_acquire' runtime bindings src tests/unit | grep -v '^runtime/core/' || true)"

echo "$passed passed, $failed failed"
[ "$failed" -eq 0 ]
