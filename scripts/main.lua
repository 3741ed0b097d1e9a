-- `make run`: the demonstration.  For now the thread examples of the
-- Russian tutorial and its GIL experiment; later the full comparison of
-- locked and isolated interpreters.
local here = (arg and arg[0] or "scripts/main.lua"):match("^(.*)/[^/]*$") or "."
for _, name in ipairs{"threads.lua", "gil_experiment.lua"} do
  print(("\n######## %s"):format(name))
  assert(loadfile(here .. "/" .. name))()
end
