-- parlua.ffi: C functions through libffi (API.md section 8).
-- Assumes 64-bit Linux with glibc (libm.so.6, LP64 type sizes, LC_ALL == 6).
local par = require "parlua"
local ffi = require "parlua.ffi"

local C = ffi.open()
local libm = ffi.open("libm.so.6")

-- The error message of f(...), which must fail.
local function err_of(f, ...)
  local ok, e = pcall(f, ...)
  assert(not ok, "expected an error")
  return tostring(e)
end

describe("parlua.ffi", function()
  describe("calls", function()
    it("calls cos and sqrt from libm", function()
      local cos = libm:fn("double cos(double)")
      local sqrt = libm:fn("double sqrt(double x);")
      assert.equal(1.0, cos(0))
      assert.is_true(math.abs(cos(math.pi) + 1) < 1e-15)
      assert.equal(1.5, sqrt(2.25))
      assert.equal(3.0, sqrt(9))  -- an integer is a fine double
      assert.equal("float", math.type(sqrt(9)))
    end)

    it("calls libc functions of the running program", function()
      assert.equal(5, C:fn("size_t strlen(const char *)")("hello"))
      assert.equal(0, C:fn("size_t strlen(const char *s)")(""))
      assert.equal(3, C:fn("size_t strlen(const char *)")("abc\0def"))  -- C sees up to the NUL
      assert.equal(42, C:fn("int abs(int x)")(-42))
      assert.equal(math.maxinteger, C:fn("long labs(long)")(-math.maxinteger))
      assert.equal(math.maxinteger, C:fn("long long int llabs(long long)")(-math.maxinteger))
      assert.equal(string.byte("Q"), C:fn("int toupper(int)")(string.byte("q")))
      assert.equal(0xBBAA, C:fn("uint16_t htons(uint16_t)")(0xAABB))
      assert.equal(0x44332211, C:fn("uint32_t htonl(uint32_t)")(0x11223344))
    end)

    it("returns const char * as a string and NULL as nil", function()
      local getenv = C:fn("const char *getenv(const char *name)")
      assert.equal(os.getenv("PATH"), getenv("PATH"))
      assert.is_nil(getenv("PARLUA_SURELY_NOT_SET_42"))
      local strchr = C:fn("const char *strchr(const char *, int)")
      assert.equal("llo", strchr("hello", string.byte("l")))
      assert.is_nil(strchr("hello", string.byte("z")))
      -- nil is NULL going in: setlocale(LC_ALL, NULL) asks for the locale
      local setlocale = C:fn("const char *setlocale(int category, const char *locale)")
      assert.is_string(setlocale(6, nil))
    end)

    it("returns void as nothing and bool as a boolean", function()
      local srand = C:fn("void srand(unsigned int)")
      assert.equal(0, select("#", srand(1)))
      local buf = ffi.buffer(1)
      buf:set("bool", 0, true)
      assert.is_true(buf:get("bool"))
      assert.equal("\1", buf:read())
      buf:set("_Bool", 0, false)
      assert.is_false(buf:get("bool"))
      assert.matches("buffer:set: expected a boolean for bool, got number",
                     err_of(buf.set, buf, "bool", 0, 1), 1, true)
    end)

    it("passes and returns float", function()
      local fabsf = libm:fn("float fabsf(float)")
      assert.equal(2.5, fabsf(-2.5))
      assert.equal(1/0, fabsf(-1/0))
      local sqrtf = libm:fn("float sqrtf(float)")
      assert.is_true(math.abs(sqrtf(2) - 1.41421356) < 1e-6)
      assert.matches("fabsf: argument 1: 1e+39 does not fit in float", err_of(fabsf, 1e39), 1, true)
      assert.matches("fabsf: argument 1: expected a number for float, got string", err_of(fabsf, "1"), 1, true)
    end)

    it("takes integral floats for integer parameters and rejects the rest", function()
      local abs = C:fn("int abs(int)")
      assert.equal(2, abs(-2.0))
      assert.equal("integer", math.type(abs(-2.0)))
      assert.matches("abs: argument 1: %-2%.5 has no integer representation %(int%)", err_of(abs, -2.5))
      assert.matches("has no integer representation", err_of(abs, 0/0), 1, true)
      assert.matches("does not fit in int", err_of(abs, 1/0), 1, true)
    end)
  end)

  describe("integer types", function()
    -- Each type through a variadic snprintf, which prints what C received.
    local snprintf = C:fn("int snprintf(char *, size_t, const char *, ...)")
    local buf = ffi.buffer(64)
    local signed = {
      ["int8_t"] = true, ["uint8_t"] = false, ["int16_t"] = true, ["uint16_t"] = false,
      ["int32_t"] = true, ["uint32_t"] = false, ["int64_t"] = true, ["uint64_t"] = false,
      ["signed char"] = true, ["unsigned char"] = false, ["short"] = true,
      ["unsigned short"] = false, ["int"] = true, ["unsigned int"] = false, ["unsigned"] = false,
      ["long"] = true, ["unsigned long"] = false, ["long long"] = true,
      ["unsigned long long"] = false, ["size_t"] = false, ["ssize_t"] = true,
      ["intptr_t"] = true, ["uintptr_t"] = false, ["ptrdiff_t"] = true,
    }
    local canonical = {["unsigned"] = "unsigned int"}

    -- Lua cannot hold 2^64 - 1: the largest uint64 it can pass is the
    -- float 2^64 - 2048; 2^63 and -2^63 - 2048 are floats just outside int64.
    local function limits(t)
      local bits = 8 * ffi.sizeof(t)
      if bits < 64 then
        if signed[t] then
          local max = (1 << (bits - 1)) - 1
          return -max - 1, max, -max - 2, max + 1
        end
        return 0, (1 << bits) - 1, -1, 1 << bits
      end
      if signed[t] then return math.mininteger, math.maxinteger, -2^63 - 2048, 2^63 end
      return 0, 2^64 - 2048, -1, 2^64
    end

    local function format_of(t)
      local size = ffi.sizeof(t)
      if size < 4 then return "%d" end  -- promoted to int
      if size == 4 then return signed[t] and "%d" or "%u" end
      return signed[t] and "%lld" or "%llu"
    end

    for t in pairs(signed) do
      it("accepts the limits of " .. t .. " and rejects one beyond", function()
        local f = snprintf:variadic(t)
        local min, max, below, above = limits(t)
        f(buf, #buf, format_of(t), min)
        assert.equal(math.type(min) == "integer" and tostring(min) or "0", ffi.string(buf))
        f(buf, #buf, format_of(t), max)
        local want = math.type(max) == "integer" and tostring(max) or "18446744073709549568"
        assert.equal(want, ffi.string(buf))
        local name = canonical[t] or t
        assert.matches("snprintf: argument 4: " .. tostring(above):gsub("[%.%+%-]", "%%%0") ..
                       " does not fit in " .. name, err_of(f, buf, #buf, "%d", above))
        assert.matches("snprintf: argument 4: " .. tostring(below):gsub("[%.%+%-]", "%%%0") ..
                       " does not fit in " .. name, err_of(f, buf, #buf, "%d", below))
        -- the same checks guard memory
        local mem = ffi.buffer(8)
        mem:set(t, 0, max)
        assert.equal(max, mem:get(t, 0))
        mem:set(t, 0, min)
        assert.equal(min, mem:get(t, 0))
        assert.matches("does not fit in " .. name, err_of(mem.set, mem, t, 0, above), 1, true)
      end)
    end

    it("names the example of the brief", function()
      local f = snprintf:variadic("uint8_t")
      assert.matches("argument 4: 300 does not fit in uint8_t", err_of(f, buf, #buf, "%d", 300), 1, true)
    end)

    it("passes char, bool and float extras with C's promotions", function()
      local f = snprintf:variadic("char", "bool", "float", "short")
      assert.equal(11, f(buf, #buf, "%c|%d|%.2f|%d", 65, true, 0.25, -7))
      assert.equal("A|1|0.25|-7", ffi.string(buf))
    end)

    it("returns unsigned 64-bit values above maxinteger as floats", function()
      local strtoull = C:fn("unsigned long long strtoull(const char *, char **, int)")
      assert.equal(math.maxinteger, strtoull("9223372036854775807", nil, 10))
      assert.equal("integer", math.type(strtoull("9223372036854775807", nil, 10)))
      assert.equal(2^64 - 2048, strtoull("18446744073709549568", nil, 10))
      assert.equal(-1, C:fn("long long strtoll(const char *, char **, int)")("-1", nil, 10))
    end)

    it("reports sizes", function()
      assert.equal(1, ffi.sizeof("char"))
      assert.equal(2, ffi.sizeof("unsigned short int"))
      assert.equal(4, ffi.sizeof("int"))
      assert.equal(8, ffi.sizeof("long long"))
      assert.equal(8, ffi.sizeof("double"))
      assert.equal(4, ffi.sizeof("float"))
      assert.equal(8, ffi.sizeof("struct timespec *"))
      assert.equal(8, ffi.sizeof("const char *"))
      assert.matches("void has no size", err_of(ffi.sizeof, "void"), 1, true)
      assert.matches("unexpected 'x' at column 5: expected the end of the type", err_of(ffi.sizeof, "int x"), 1, true)
    end)
  end)

  describe("variadic functions", function()
    local snprintf = C:fn("int snprintf(char *, size_t, const char *, ...)")

    it("takes the fixed arguments alone", function()
      local buf = ffi.buffer(16)
      assert.equal(5, snprintf(buf, #buf, "hello"))
      assert.equal("hello", ffi.string(buf))
      -- NULL buffer, size 0: snprintf only counts
      assert.equal(5, snprintf(nil, 0, "hello"))
    end)

    it("binds the extra argument types once, and caches the result", function()
      local buf = ffi.buffer(64)
      local f = snprintf:variadic("int", "double", "const char *")
      assert.equal(f, snprintf:variadic("int", "double", "const char *"))
      assert.equal(12, f(buf, #buf, "%d %.3f %s", 42, 1.5, "xyz"))
      assert.equal("42 1.500 xyz", ffi.string(buf))
      assert.matches("extra arguments: int, double, const char %*", tostring(f))
    end)

    it("refuses extra arguments without types, and bad type lists", function()
      local buf = ffi.buffer(8)
      assert.matches("snprintf: expected 3 arguments, got 4 (give the types of the extra arguments",
                     err_of(snprintf, buf, #buf, "%d", 1), 1, true)
      assert.matches("snprintf:variadic: argument 2: bad type \"dubble\": unexpected 'dubble' at column 1: expected a type",
                     err_of(snprintf.variadic, snprintf, "int", "dubble"), 1, true)
      assert.matches("void is not a type of value", err_of(snprintf.variadic, snprintf, "void"), 1, true)
      assert.matches("expected a type name, got number", err_of(snprintf.variadic, snprintf, 1), 1, true)
      local f = snprintf:variadic("int")
      assert.matches("already bound", err_of(f.variadic, f, "int"), 1, true)
      local abs = C:fn("int abs(int)")
      assert.matches("abs: not a variadic function", err_of(abs.variadic, abs, "int"), 1, true)
    end)
  end)

  describe("pointers and buffers", function()
    local malloc = C:fn("void *malloc(size_t)")
    local free = C:fn("void free(void *)")
    local memset = C:fn("void *memset(void *, int, size_t)")
    local memcpy = C:fn("void *memcpy(void *dst, const void *src, size_t n)")
    local strcpy = C:fn("char *strcpy(char *, const char *)")

    it("are userdata values: comparable, printable, with ffi.NULL", function()
      local p = malloc(32)
      assert.is_userdata(p)
      assert.is_true(p ~= ffi.NULL)
      assert.matches("^pointer: 0x%x+$", tostring(p))
      assert.equal("pointer: NULL", tostring(ffi.NULL))
      local q = memset(p, 0, 32)  -- returns its first argument
      assert.is_true(p == q)
      assert.is_false(rawequal(p, q))
      assert.is_true(p + 4 == q + 4)
      assert.is_false(p + 4 == q)
      assert.is_true(4 + p == p + 4)
      strcpy(p, "copied")
      assert.equal("copied", ffi.string(p))
      assert.equal("cop", ffi.string(p, 3))
      assert.equal("pied", ffi.string(p + 2))
      p:set("int", 8, -5)
      assert.equal(-5, p:get("int", 8))
      free(p)
      free(nil)  -- free(NULL) is fine
      free(ffi.NULL)
    end)

    it("NULL comes back as ffi.NULL", function()
      local strstr = C:fn("char *strstr(const char *, const char *)")
      assert.equal(ffi.NULL, strstr("abc", "x"))
      assert.is_true(rawequal(ffi.NULL, strstr("abc", "x")))
      assert.equal("bc", ffi.string(strstr("abc", "b")))
      assert.matches("ffi.string: argument 1 is a NULL pointer", err_of(ffi.string, ffi.NULL), 1, true)
      assert.matches("pointer:get: NULL pointer", err_of(ffi.NULL.get, ffi.NULL, "int"), 1, true)
    end)

    it("buffers are zeroed memory for char * and void * parameters", function()
      local buf = ffi.buffer(8)
      assert.equal(8, #buf)
      assert.equal(string.rep("\0", 8), buf:read())
      memset(buf, string.byte("A"), 4)
      assert.equal("AAAA\0\0\0\0", buf:read())
      assert.equal("AAAA", ffi.string(buf))  -- up to the NUL
      assert.equal("AA\0", buf:read(2, 3))
      memcpy(buf:ptr(4), "wxyz", 4)  -- a Lua string is fine for const void *
      assert.equal("AAAAwxyz", ffi.string(buf))  -- no NUL: the whole buffer
      assert.equal("AAAAwxyz", ffi.string(buf, 8))
      buf:write(1, "bc")
      assert.equal("AbcAwxyz", buf:read())
      assert.is_true(buf:ptr() + 4 == buf:ptr(4))
      assert.is_true(memset(buf, 0, 0) == buf:ptr())
      assert.matches("^buffer %(8 bytes%): 0x%x+$", tostring(buf))
    end)

    it("a pointer into a buffer keeps the buffer alive", function()
      local p = ffi.buffer(16):ptr(8)
      collectgarbage()
      collectgarbage()
      p:set("double", 0, 2.5)
      assert.equal(2.5, p:get("double"))
    end)

    it("checks buffer bounds", function()
      local buf = ffi.buffer(8)
      assert.matches("buffer:read: offset 4 with 5 bytes is outside the 8-byte buffer", err_of(buf.read, buf, 4, 5), 1, true)
      assert.matches("buffer:write: offset 6 with 3 bytes is outside the 8-byte buffer", err_of(buf.write, buf, 6, "abc"), 1, true)
      assert.matches("buffer:get: offset 4 with 8 bytes is outside", err_of(buf.get, buf, "double", 4), 1, true)
      assert.matches("buffer:set: offset %-1 with 1 bytes is outside", err_of(buf.set, buf, "char", -1, 0))
      assert.matches("buffer:ptr: offset 9 with 0 bytes is outside", err_of(buf.ptr, buf, 9), 1, true)
      assert.matches("ffi.string: offset 0 with 9 bytes is outside", err_of(ffi.string, buf, 9), 1, true)
      assert.equal("", buf:read(8))
      assert.is_true(buf:ptr(8) == buf:ptr() + 8)
      assert.matches("buffer size must be between 0 and 2^40", err_of(ffi.buffer, -1), 1, true)
      assert.equal(0, #ffi.buffer(0))
    end)

    it("refuses to store a Lua string's address in memory", function()
      local buf = ffi.buffer(8)
      assert.matches("cannot store a Lua string's address", err_of(buf.set, buf, "const char *", 0, "x"), 1, true)
      local other = ffi.buffer(4)
      other:write(0, "hi\0")
      buf:set("const char *", 0, other)
      assert.equal("hi", buf:get("const char *"))
      buf:set("void *", 0, nil)
      assert.equal(ffi.NULL, buf:get("void *"))
      assert.is_nil(buf:get("const char *"))
    end)

    it("passes structs by pointer through buffers", function()
      -- struct timespec { time_t tv_sec; long tv_nsec; } on LP64
      local clock_gettime = C:fn("int clock_gettime(int clk, struct timespec *ts)")
      local ts = ffi.buffer(16)
      assert.equal(0, clock_gettime(0, ts))  -- CLOCK_REALTIME
      local sec, nsec = ts:get("long", 0), ts:get("long", 8)
      assert.is_true(math.abs(sec - os.time()) <= 2)
      assert.is_true(nsec >= 0 and nsec < 1000000000)
      -- struct timeval { time_t tv_sec; suseconds_t tv_usec; }
      local gettimeofday = C:fn("int gettimeofday(struct timeval *tv, void *tz)")
      local tv = ffi.buffer(16)
      assert.equal(0, gettimeofday(tv, nil))
      assert.is_true(math.abs(tv:get("int64_t", 0) - os.time()) <= 2)
      local usec = tv:get("long", 8)
      assert.is_true(usec >= 0 and usec < 1000000)
      -- and a struct filled in Lua, read by C: nanosleep(&{0, 1000000}, NULL)
      local req = ffi.buffer(16)
      req:set("long", 0, 0)
      req:set("long", 8, 1000000)
      assert.equal(0, C:fn("int nanosleep(const struct timespec *, struct timespec *)")(req, nil))
    end)

    it("refuses values of the wrong kind for pointer parameters", function()
      assert.matches("memset: argument 1: expected a pointer, buffer or nil for void *, got number",
                     err_of(memset, 5, 0, 1), 1, true)
      assert.matches("strcpy: argument 1: expected a pointer, buffer or nil for char *, got string (a Lua string is read-only",
                     err_of(strcpy, "abc", "x"), 1, true)
      assert.matches("strlen: argument 1: expected a string, pointer, buffer or nil for const char *, got number",
                     err_of(C:fn("size_t strlen(const char *)"), 5), 1, true)
      assert.matches("got ffi library", err_of(C:fn("size_t strlen(const char *)"), C), 1, true)
    end)
  end)

  describe("errors", function()
    it("wrong argument count names the function", function()
      local abs = C:fn("int abs(int)")
      assert.matches("abs: expected 1 argument, got 2", err_of(abs, 1, 2), 1, true)
      assert.matches("abs: expected 1 argument, got 0", err_of(abs), 1, true)
      assert.matches("rand: expected 0 arguments, got 1", err_of(C:fn("int rand(void)"), 1), 1, true)
      assert.matches("cos: expected 1 argument, got 0", err_of(libm:fn("double cos(double)")), 1, true)
    end)

    it("wrong argument type names the argument and the function", function()
      local cos = libm:fn("double cos(double)")
      assert.matches("cos: argument 1: expected a number for double, got string", err_of(cos, "0"), 1, true)
      local ldexp = libm:fn("double ldexp(double, int)")
      assert.equal(8.0, ldexp(1, 3))
      assert.matches("ldexp: argument 2: expected an integer for int, got nil", err_of(ldexp, 1, nil), 1, true)
      assert.matches("ldexp: argument 2: expected an integer for int, got table", err_of(ldexp, 1, {}), 1, true)
      assert.matches("ldexp: argument 2: expected an integer for int, got boolean", err_of(ldexp, 1, true), 1, true)
      assert.matches("ldexp: argument 2: 2147483648 does not fit in int", err_of(ldexp, 1, 1 << 31), 1, true)
    end)

    it("an unknown symbol names the symbol and the library", function()
      assert.matches("unknown symbol 'no_such_function_xyz' in libm.so.6",
                     err_of(libm.fn, libm, "int no_such_function_xyz(int)"), 1, true)
      assert.matches("unknown symbol 'no_such_function_xyz' in the running program",
                     err_of(C.fn, C, "void no_such_function_xyz(void)"), 1, true)
    end)

    it("an unknown library names the library and says why", function()
      local e = err_of(ffi.open, "libparlua_no_such_lib.so.9")
      assert.matches("ffi.open: cannot open 'libparlua_no_such_lib.so.9': ", e, 1, true)
      assert.matches("No such file", e, 1, true)
    end)

    it("a bad declaration points at the bad token", function()
      local function decl_err(d) return err_of(C.fn, C, d) end
      assert.matches("bad C declaration \"int abs(foo)\": unexpected 'foo' at column 9: expected a type",
                     decl_err("int abs(foo)"), 1, true)
      assert.matches("unexpected 'foo' at column 12: expected a type", decl_err("int f(int, foo)"), 1, true)
      assert.matches("unexpected 'double' at column 10: cannot be combined with 'unsigned'",
                     decl_err("unsigned double f(void)"), 1, true)
      assert.matches("unexpected end of input at column 14: expected ',' or ')'", decl_err("int abs(int x"), 1, true)
      assert.matches("unexpected '(' at column 5: expected the function name", decl_err("int (*f)(int)"), 1, true)
      assert.matches("unexpected 'struct' at column 9: a struct or union cannot be passed by value",
                     decl_err("int abs(struct s)"), 1, true)
      assert.matches("unexpected 'double' at column 6: long double is not supported",
                     decl_err("long double cosl(long double)"), 1, true)
      assert.matches("unexpected '...' at column 7: '...' needs a named parameter before it",
                     decl_err("int f(...)"), 1, true)
      assert.matches("unexpected 'x' at column 15: expected the end of the declaration",
                     decl_err("int abs(int); x"), 1, true)
      assert.matches("unexpected '@' at column 9: expected a type", decl_err("int abs(@)"), 1, true)
      assert.matches("void cannot be a parameter type", decl_err("int abs(void, int)"), 1, true)
    end)

    it("checks lib:fn options", function()
      assert.matches("unknown option 'nogli'", err_of(C.fn, C, "int abs(int)", {nogli = true}), 1, true)
      assert.matches("nogil = true or false", err_of(C.fn, C, "int abs(int)", {nogil = 1}), 1, true)
    end)

    it("function objects keep library and declaration", function()
      local cos = libm:fn("double cos(double)")
      assert.equal("ffi function: double cos(double) from libm.so.6", tostring(cos))
      assert.equal("ffi library: libm.so.6", tostring(libm))
      assert.equal("ffi library: the running program", tostring(C))
      assert.equal("parlua.ffi", getmetatable(cos))  -- __call stays out of reach
    end)
  end)

  describe("nogil", function()
    -- 4 threads each sleeping 0.2 s in C.  Margins are generous: the
    -- machine is shared.
    local function run(opts)
      local usleep = C:fn("int usleep(unsigned int)", opts)
      local threads = {}
      local t0 = par.clock()
      for i = 1, 4 do
        threads[i] = par.thread(function() return usleep(200000) end)
        threads[i]:start()
      end
      local results = {}
      for i = 1, 4 do results[i] = threads[i]:result() end
      return par.clock() - t0, results
    end

    it("lets 4 threads run the C call at once", function()
      local elapsed, results = run({nogil = true})
      assert.same({0, 0, 0, 0}, results)
      assert.is_true(elapsed < 0.5, ("took %.3f s"):format(elapsed))
    end)

    it("without nogil, the calls take turns holding the lock (and are not interrupted)", function()
      local elapsed, results = run(nil)
      assert.same({0, 0, 0, 0}, results)  -- a poke for the lock must not cut a sleep short (EINTR)
      assert.is_true(elapsed > 0.6, ("took %.3f s"):format(elapsed))
    end)

    it("converts arguments before releasing the lock and results after", function()
      local snprintf = C:fn("int snprintf(char *, size_t, const char *, ...)", {nogil = true})
      local f = snprintf:variadic("const char *")
      local threads = {}
      for i = 1, 4 do
        threads[i] = par.thread(function()
          local buf = ffi.buffer(32)
          for j = 1, 200 do
            local s = ("t%d-%d"):format(i, j)
            assert(f(buf, #buf, "<%s>", s) == #s + 2)
            assert(ffi.string(buf) == "<" .. s .. ">")
          end
          return true
        end)
        threads[i]:start()
      end
      for i = 1, 4 do assert.is_true(threads[i]:result()) end
      local abs = C:fn("int abs(int)", {nogil = true})
      assert.matches("abs: argument 1: expected an integer for int, got string", err_of(abs, "x"), 1, true)
    end)
  end)
end)
