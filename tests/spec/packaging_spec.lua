-- What a user installs: the rock (luarocks make into a temporary tree, then
-- required from stock lua5.4), make install / uninstall, the shared
-- library's soname and links, and one version everywhere.
local par = require "parlua"
local support = dofile("tests/spec/support.lua")

-- Run a shell command; its output (stdout and stderr) and whether it exited 0.
local function sh(cmd)
  local p = io.popen("(" .. cmd .. ") 2>&1")
  local out = p:read("a")
  return out, p:close() == true
end

local function must(cmd)
  local out, ok = sh(cmd)
  assert(ok, cmd .. "\n" .. out)
  return out
end

local function tmpdir()
  return (must("mktemp -d"):gsub("%s+$", ""))
end

-- Every file, link and folder under dir, one a line, with what a link points to.
local function listing(dir)
  return must(("cd %q && find . -printf '%%y %%p %%l\\n' | sort"):format(dir))
end

local VERSION = par._VERSION:match("^parlua (%d+%.%d+%.%d+)$")

describe("packaging", function()
  it("has one version: par._VERSION and the release rockspec agree (parlua.pc: below)", function()
    assert.is_truthy(VERSION, par._VERSION)
    assert.is_truthy(io.open(("parlua-%s-1.rockspec"):format(VERSION)),
                     "no parlua-" .. VERSION .. "-1.rockspec beside the Makefile")
    local rockspec = io.open(("parlua-%s-1.rockspec"):format(VERSION)):read("a")
    assert.is_truthy(rockspec:find(('version = "%s-1"'):format(VERSION), 1, true))
    assert.is_truthy(rockspec:find(('tag = "v%s"'):format(VERSION), 1, true))
  end)

  it("luarocks make installs parlua and parlua.ffi into a tree that stock lua5.4 requires from", function()
    if not sh("command -v luarocks") then return pending("luarocks is not installed") end
    -- A copy of the checkout without its builds, as a fresh clone is: the
    -- user's build/ is left alone.
    local src, tree = tmpdir(), tmpdir()
    finally(function() must(("rm -rf %q %q"):format(src, tree)) end)
    must(("tar -cf - --exclude=./.git --exclude='./build*' . | tar -xf - -C %q"):format(src))
    -- Without the BUILD of the run (tests/run-all.sh exports it): the rock
    -- builds in its own build/, as a clone would.
    local out = must(("cd %q && env -u BUILD MAKEFLAGS=-j2 luarocks --lua-version 5.4 make --tree %q"):format(src, tree))
    assert.matches("parlua scm%-1 is now installed", out)
    local script = [[
      local par = require "parlua"
      local ffi = require "parlua.ffi"
      local cos = ffi.open("libm.so.6"):fn("double cos(double)")
      local pool <close> = par.pool{workers = 2, kind = "states"}
      print(par._VERSION, cos(0), pool:submit(function(x) return x * 2 end, 21):result())
      print(package.searchpath("parlua", package.cpath))]]
    out = must(("LUA_CPATH='%s/lib/lua/5.4/?.so' lua5.4 -e %q"):format(tree, script))
    assert.equal(("%s\t1.0\t42\n%s/lib/lua/5.4/parlua.so\n"):format(par._VERSION, tree), out)
  end)

  describe("make install and make uninstall", function()
    local build = support.build_dir()
    -- make install would rebuild an instrumented build without its
    -- sanitizer in the middle of the run, and a host program built without
    -- the sanitizer cannot load an instrumented libparlua.so.
    if support.sanitizer() then
      pending("make install of a sanitizer build: run it in a plain build")
      return
    end
    local root, prefix
    before_each(function()
      -- A prefix like Debian's /usr/local, with someone else's file in it.
      root = tmpdir()
      prefix = root .. "/usr/local"
      must(("mkdir -p %q/bin %q/lib %q/include %q/share && echo x > %q/lib/other.so"):format(
        prefix, prefix, prefix, prefix, prefix))
    end)
    after_each(function() must(("rm -rf %q"):format(root)) end)

    it("installs libparlua.so.0 with its soname and links; uninstall leaves the prefix as it was", function()
      local before = listing(root)
      must(("make --no-print-directory -s install BUILD=%q PREFIX=/usr/local DESTDIR=%q"):format(build, root))
      local lib = prefix .. "/lib/"
      assert.matches("Library soname: %[libparlua%.so%.0%]",
                     must(("readelf -d %q"):format(lib .. "libparlua.so." .. VERSION)))
      assert.equal("libparlua.so.0\n", must(("readlink %q"):format(lib .. "libparlua.so")))
      assert.equal("libparlua.so." .. VERSION .. "\n", must(("readlink %q"):format(lib .. "libparlua.so.0")))
      assert.equal(VERSION .. "\n",
                   must(("PKG_CONFIG_PATH=%q pkg-config --modversion parlua"):format(lib .. "pkgconfig")))
      must(("make --no-print-directory -s uninstall BUILD=%q PREFIX=/usr/local DESTDIR=%q"):format(build, root))
      assert.equal(before, listing(root))
    end)

    it("a host program built with pkg-config and an rpath runs against the shared library", function()
      local before = listing(prefix)
      must(("make --no-print-directory -s install BUILD=%q PREFIX=%q"):format(build, prefix))
      local c = prefix .. "/host.c"
      local f = assert(io.open(c, "w"))
      f:write([[
#include <stdio.h>
#include <parlua.h>
int main(void) {
  parlua *rt = parlua_new(NULL);
  int rc = parlua_dostring(rt, "print(require'parlua'._VERSION)", "=host");
  if (rc != LUA_OK) fprintf(stderr, "%s\n", parlua_error(rt));
  parlua_close(rt);
  return rc;
}
]])
      f:close()
      local env = ("PKG_CONFIG_PATH=%q"):format(prefix .. "/lib/pkgconfig")
      must(("%s cc -o %q %q $(%s pkg-config --cflags --libs parlua) -Wl,-rpath,$(%s pkg-config --variable=libdir parlua)"):format(
        env, prefix .. "/host", c, env, env))
      assert.equal(par._VERSION .. "\n", must(("env -u LD_LIBRARY_PATH %q"):format(prefix .. "/host")))
      assert.matches("libparlua%.so%.0 => " .. prefix:gsub("%p", "%%%0") .. "/lib/libparlua%.so%.0",
                     must(("ldd %q"):format(prefix .. "/host")))
      os.remove(prefix .. "/host"); os.remove(c)
      must(("make --no-print-directory -s uninstall BUILD=%q PREFIX=%q"):format(build, prefix))
      assert.equal(before, listing(prefix))
    end)
  end)
end)
