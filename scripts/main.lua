-- `make run`: the demonstration: the two tutorials' examples (the Russian
-- thread examples and GIL experiment, the Portuguese prices with a 0.1 s
-- sleep and the first-completed example), then the comparison of locked and
-- isolated interpreters on every kind this build offers, beside Python.
local here = (arg and arg[0] or "scripts/main.lua"):match("^(.*)/[^/]*$") or "."
local quick = os.getenv("PARLUA_SMOKE") and "0.02" or "0.1"
local parts = {
  {"threads.lua", {}},
  {"gil_experiment.lua", {}},
  {"prices.lua", {"--sleep", quick}},
  {"first_completed.lua", {"--sleep", quick}},
  {"compare.lua", os.getenv("PARLUA_SMOKE") and {} or {"--python"}},
}
for _, part in ipairs(parts) do
  local name, args = part[1], part[2]
  print(("\n######## %s %s"):format(name, table.concat(args, " ")))
  local chunk = assert(loadfile(here .. "/" .. name))
  local saved = arg
  arg = table.move(args, 1, #args, 1, {[0] = here .. "/" .. name})
  chunk(table.unpack(args))
  arg = saved
end
