# parlua: one plain Makefile.  `make test` and `make run` set everything up
# on a fresh Debian machine (see README.md).

CC      ?= cc
BUILD   ?= build
PREFIX  ?= /usr/local
DESTDIR ?=
SANITIZER ?=
# DEBUG=1: the checks of runtime/core/debug.h (lock ownership at every
# _locked function and at each enter/leave of a state).
DEBUG ?=

LUA_CFLAGS := $(shell pkg-config --cflags lua5.4 2>/dev/null)
LUA_LIBS   := $(shell pkg-config --libs lua5.4 2>/dev/null)
FFI_CFLAGS := $(shell pkg-config --cflags libffi 2>/dev/null)
FFI_LIBS   := $(shell pkg-config --libs libffi 2>/dev/null)
# $(PREFIX)/lib/lua/5.4 is on Debian lua5.4's cpath for both /usr and /usr/local.
LUA_CMOD   ?= $(PREFIX)/lib/lua/5.4
# One version, written in include/parlua.h; the soname carries its major.
VERSION := $(shell sed -n 's/^\#define PARLUA_VERSION_NUMBER "\(.*\)"/\1/p' include/parlua.h)
SONAME  := libparlua.so.$(firstword $(subst ., ,$(VERSION)))
# Open MPI for kind mpi's module, when it is installed (pkg-config ompi, or mpicc).
MPI_CFLAGS := $(shell pkg-config --cflags ompi 2>/dev/null || mpicc --showme:compile 2>/dev/null)
MPI_LIBS   := $(shell pkg-config --libs ompi 2>/dev/null || mpicc --showme:link 2>/dev/null)
MPI_MODULE := $(if $(MPI_LIBS),$(BUILD)/parlua_mpi.so)

ifeq ($(SANITIZER),)
SAN_FLAGS :=
else ifeq ($(SANITIZER),address)
SAN_FLAGS := -fsanitize=address,undefined -fno-omit-frame-pointer -fno-sanitize-recover=undefined
else ifeq ($(SANITIZER),thread)
SAN_FLAGS := -fsanitize=thread
else
$(error SANITIZER must be empty, address or thread, not '$(SANITIZER)')
endif

ifeq ($(DEBUG),)
DEBUG_FLAGS :=
else ifeq ($(DEBUG),1)
DEBUG_FLAGS := -DPL_DEBUG
else
$(error DEBUG must be empty or 1, not '$(DEBUG)')
endif

WARN     = -Wall -Wextra -Wshadow -Wstrict-prototypes -Wmissing-prototypes
CFLAGS  ?= -O2 -g
# -fvisibility=hidden: the libraries export only what include/parlua.h marks
# PARLUA_API (checked by tests/check-symbols.sh).
XCFLAGS  = $(CFLAGS) $(WARN) -std=c11 -D_GNU_SOURCE -fPIC -fvisibility=hidden -pthread \
           -Iinclude -Iruntime -Ibindings $(LUA_CFLAGS) $(FFI_CFLAGS) $(SAN_FLAGS) $(DEBUG_FLAGS)
SYSLIBS  = $(FFI_LIBS) -lm -ldl -pthread

# runtime/mpi/openmpi.c is the one file that includes <mpi.h>: it goes into
# the optional module parlua_mpi.so alone, so nothing else links MPI.
MPI_SRC  = runtime/mpi/openmpi.c
SRC      = $(filter-out $(MPI_SRC),$(wildcard runtime/*/*.c bindings/*.c)) src/api.c
# Lua code built into the library as C strings (bindings/<name>.lua ->
# const char pl_<name>_lua[]): no file to find at run time.
EMBED_LUA = $(wildcard bindings/*.lua)
EMBED_SRC = $(EMBED_LUA:bindings/%.lua=$(BUILD)/gen/%.c)
OBJ      = $(SRC:%.c=$(BUILD)/obj/%.o) $(EMBED_SRC:$(BUILD)/gen/%.c=$(BUILD)/obj/gen/%.o)
UNIT_SRC = $(wildcard tests/unit/test_*.c)
UNIT_BIN = $(UNIT_SRC:tests/unit/%.c=$(BUILD)/tests/%)
HOST_EXAMPLE = $(BUILD)/embed_example

# The libc interposers (src/interpose.c): in the program, exporting only
# their names; for a stock lua5.4, the preload library.  Not in sanitizer
# builds, whose runtimes intercept the same calls.
ifeq ($(SANITIZER),)
INTERPOSE = src/interpose.c -Wl,--dynamic-list=src/interpose.sym
PRELOAD   = $(BUILD)/libparlua_preload.so
else
INTERPOSE =
PRELOAD   =
endif

.PHONY: all module deps test run bench bench-peers soak sanitize tsan fuzz install uninstall clean
all: $(BUILD)/parlua $(BUILD)/libparlua.a $(BUILD)/libparlua.so $(BUILD)/parlua.so $(PRELOAD) $(MPI_MODULE)
module: $(BUILD)/parlua.so  # what the rockspecs build

# Objects also depend on the flags they were compiled with: the file is
# rewritten only when they change, which then rebuilds everything.
FLAGS_FILE := $(BUILD)/obj/.flags
$(shell mkdir -p $(BUILD)/obj && echo '$(CC) $(XCFLAGS)' | cmp -s - $(FLAGS_FILE) || echo '$(CC) $(XCFLAGS)' > $(FLAGS_FILE))

# -MMD: each object depends on exactly the headers it includes.
$(BUILD)/obj/%.o: %.c $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) -MMD -MP -c $< -o $@

# Each line a string literal; '?' escaped so no trigraph can form.
$(BUILD)/gen/%.c: bindings/%.lua
	@mkdir -p $(dir $@)
	@{ echo '/* Generated from $< by the Makefile: do not edit. */'; \
	  echo '#include <stddef.h>'; \
	  echo 'const char pl_$*_lua[] ='; \
	  sed -e 's/\\/\\\\/g' -e 's/"/\\"/g' -e 's/?/\\?/g' -e 's/^/"/' -e 's/$$/\\n"/' $<; \
	  echo ';'; \
	  echo 'const size_t pl_$*_lua_len = sizeof pl_$*_lua - 1;'; } > $@

$(BUILD)/obj/gen/%.o: $(BUILD)/gen/%.c $(FLAGS_FILE)
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) -c $< -o $@

-include $(OBJ:.o=.d)

$(BUILD)/libparlua.a: $(OBJ)
	@mkdir -p $(BUILD)
	rm -f $@ && ar rcs $@ $^

# libparlua.so.X.Y.Z with its soname libparlua.so.X, and the usual links.
$(BUILD)/libparlua.so: $(OBJ)
	$(CC) $(SAN_FLAGS) -shared -Wl,-soname,$(SONAME) -o $(BUILD)/libparlua.so.$(VERSION) $^ $(LUA_LIBS) $(SYSLIBS)
	ln -sf libparlua.so.$(VERSION) $(BUILD)/$(SONAME)
	ln -sf $(SONAME) $@

# The Lua module: no -llua, the symbols come from the lua5.4 that loads it.
$(BUILD)/parlua.so: $(OBJ)
	$(CC) $(SAN_FLAGS) -shared -o $@ $^ $(SYSLIBS)

# Kind mpi's transport: no symbol of the core, only libmpi (runtime/mpi/transport.h).
$(BUILD)/parlua_mpi.so: $(MPI_SRC) runtime/mpi/transport.h
	@mkdir -p $(BUILD)
	$(CC) $(XCFLAGS) $(MPI_CFLAGS) -shared -o $@ $(MPI_SRC) $(MPI_LIBS) -pthread

# Line editing and history in the parlua prompt, as Debian's lua5.4 has:
# GNU readline when its development files are there (READLINE=no: without).
READLINE ?= $(shell pkg-config --exists readline 2>/dev/null && echo yes)
ifeq ($(READLINE),yes)
PROG_CFLAGS := -DPL_READLINE $(shell pkg-config --cflags readline)
PROG_LIBS   := $(shell pkg-config --libs readline)
endif

$(BUILD)/parlua: src/parlua.c src/interpose.c src/interpose.sym $(BUILD)/libparlua.a
	$(CC) $(XCFLAGS) $(PROG_CFLAGS) -o $@ src/parlua.c $(INTERPOSE) $(BUILD)/libparlua.a $(LUA_LIBS) $(SYSLIBS) $(PROG_LIBS)

$(BUILD)/libparlua_preload.so: src/interpose.c runtime/blockio/interpose.h
	$(CC) $(XCFLAGS) -fvisibility=hidden -shared -o $@ src/interpose.c -ldl

$(BUILD)/tests/%: tests/unit/%.c tests/unit/runner.h $(BUILD)/libparlua.a
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) -Itests/unit -o $@ $< $(BUILD)/libparlua.a $(LUA_LIBS) $(SYSLIBS)

# The out-of-memory sweep fails the C allocations of the runtime's own code:
# wrapped at link time in libparlua.a's objects (Lua's allocator, in
# liblua5.4.so, is left alone).
OOM_WRAP = -Wl,--wrap=malloc,--wrap=calloc,--wrap=realloc,--wrap=strdup
$(BUILD)/tests/test_oom: tests/unit/test_oom.c tests/unit/runner.h $(BUILD)/libparlua.a
	@mkdir -p $(dir $@)
	$(CC) $(XCFLAGS) -Itests/unit -o $@ $< $(BUILD)/libparlua.a $(LUA_LIBS) $(SYSLIBS) $(OOM_WRAP)

$(HOST_EXAMPLE): docs/examples/embed.c $(BUILD)/libparlua.a
	$(CC) $(XCFLAGS) -o $@ $< $(BUILD)/libparlua.a $(LUA_LIBS) $(SYSLIBS)

deps:
	@bash .ci/deps

test: deps
	@$(MAKE) --no-print-directory all $(UNIT_BIN) $(HOST_EXAMPLE)
	@BUILD=$(BUILD) LUA_TESTS=$(LUA_TESTS) bash tests/run-all.sh

run: deps
	@$(MAKE) --no-print-directory all
	$(BUILD)/parlua scripts/main.lua

# The official Lua 5.4.4 test suite under build/parlua, alone and beside a
# busy thread (also run by make test); skipped when LUA_TESTS is absent.
LUA_TESTS ?= ../shared/lua-5.4.4-tests
.PHONY: conformance
conformance: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) LUA_TESTS=$(LUA_TESTS) bash tests/conformance/run.sh

bench: deps
	@$(MAKE) --no-print-directory all
	@BUILD=$(BUILD) bash scripts/bench/run-all.sh

# parlua beside Lua Lanes and effil, when they can be required (LUA_PATH,
# LUA_CPATH); make bench runs it too.  Neither is a Debian package: see
# docs/benchmarks.md for how to get them.
bench-peers: all
	$(BUILD)/parlua scripts/bench/peers.lua

# Not in CI: 100,000 tasks over up to 10 minutes while workers are killed,
# time limits hit and pools interrupted (docs/testing.md); SOAK_SECONDS and
# SOAK_TASKS make it shorter.
soak: deps
	@$(MAKE) --no-print-directory all
	LUA_CPATH='$(BUILD)/?.so;;' lua5.4 tests/soak/soak.lua

# The sanitizer builds run the unit tests and the busted specs through the
# instrumented `parlua` program (host mode).
sanitize: deps
	@$(MAKE) --no-print-directory BUILD=build-asan SANITIZER=address DEBUG=1 all build-asan/parlua $(UNIT_BIN:$(BUILD)/%=build-asan/%) build-asan/embed_example
	@BUILD=build-asan MODE=host ASAN_OPTIONS=detect_leaks=1:fast_unwind_on_malloc=0 LSAN_OPTIONS="suppressions=$(CURDIR)/tests/lsan.supp print_suppressions=0" bash tests/run-all.sh

tsan: deps
	@$(MAKE) --no-print-directory BUILD=build-tsan SANITIZER=thread DEBUG=1 all $(UNIT_BIN:$(BUILD)/%=build-tsan/%) build-tsan/embed_example
	@BUILD=build-tsan MODE=host TSAN_OPTIONS="suppressions=$(CURDIR)/tests/tsan.supp halt_on_error=1 die_after_fork=0" bash tests/run-all.sh

# libFuzzer targets (clang from Debian: apt-get install clang), each run for
# FUZZ_SECONDS; new inputs go to build-fuzz/, the seeds stay untouched.
FUZZ_SECONDS ?= 600
FUZZ_CC = clang -g -O1 -fsanitize=fuzzer,address,undefined -std=c11 -D_GNU_SOURCE -pthread \
          -Iinclude -Iruntime -Ibindings $(LUA_CFLAGS) $(FFI_CFLAGS)
fuzz: $(EMBED_SRC)
	@command -v clang >/dev/null || { echo "make fuzz needs clang: apt-get install clang" >&2; exit 1; }
	@mkdir -p build-fuzz/cdecl_corpus build-fuzz/ffi_args_corpus build-fuzz/codec_corpus
	$(FUZZ_CC) tests/fuzz/fuzz_cdecl.c runtime/ffi/cdecl.c -o build-fuzz/fuzz_cdecl
	$(FUZZ_CC) tests/fuzz/fuzz_ffi_args.c $(SRC) $(EMBED_SRC) -o build-fuzz/fuzz_ffi_args $(LUA_LIBS) $(SYSLIBS)
	$(FUZZ_CC) tests/fuzz/fuzz_codec.c $(SRC) $(EMBED_SRC) -o build-fuzz/fuzz_codec $(LUA_LIBS) $(SYSLIBS)
	build-fuzz/fuzz_cdecl -max_total_time=$(FUZZ_SECONDS) -max_len=512 build-fuzz/cdecl_corpus tests/fuzz/cdecl_corpus
	build-fuzz/fuzz_ffi_args -max_total_time=$(FUZZ_SECONDS) -max_len=64 build-fuzz/ffi_args_corpus
	build-fuzz/fuzz_codec -max_total_time=$(FUZZ_SECONDS) build-fuzz/codec_corpus tests/fuzz/codec_corpus

INSTALLED = bin/parlua lib/libparlua.a lib/libparlua.so lib/$(SONAME) lib/libparlua.so.$(VERSION) \
            include/parlua.h lib/pkgconfig/parlua.pc lib/libparlua_preload.so
install: all
	install -d $(DESTDIR)$(PREFIX)/bin $(DESTDIR)$(PREFIX)/lib $(DESTDIR)$(PREFIX)/include \
	  $(DESTDIR)$(PREFIX)/lib/pkgconfig $(DESTDIR)$(LUA_CMOD)
	install -m 755 $(BUILD)/parlua $(DESTDIR)$(PREFIX)/bin/parlua
	install -m 644 $(BUILD)/libparlua.a $(DESTDIR)$(PREFIX)/lib/libparlua.a
	install -m 755 $(BUILD)/libparlua.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/libparlua.so.$(VERSION)
	ln -sf libparlua.so.$(VERSION) $(DESTDIR)$(PREFIX)/lib/$(SONAME)
	ln -sf $(SONAME) $(DESTDIR)$(PREFIX)/lib/libparlua.so
	install -m 644 include/parlua.h $(DESTDIR)$(PREFIX)/include/parlua.h
	install -m 755 $(BUILD)/libparlua_preload.so $(DESTDIR)$(PREFIX)/lib/libparlua_preload.so
	install -m 755 $(BUILD)/parlua.so $(DESTDIR)$(LUA_CMOD)/parlua.so
	$(if $(MPI_MODULE),install -m 755 $(MPI_MODULE) $(DESTDIR)$(LUA_CMOD)/parlua_mpi.so)
	sed -e 's|@PREFIX@|$(PREFIX)|g' -e 's|@VERSION@|$(VERSION)|g' parlua.pc.in > $(DESTDIR)$(PREFIX)/lib/pkgconfig/parlua.pc

# Removes what install put there, and the folders only parlua's files needed
# when they are left empty (the prefix's bin, lib and include stay).
uninstall:
	rm -f $(addprefix $(DESTDIR)$(PREFIX)/,$(INSTALLED)) $(DESTDIR)$(LUA_CMOD)/parlua.so $(DESTDIR)$(LUA_CMOD)/parlua_mpi.so
	rmdir $(DESTDIR)$(LUA_CMOD) $(dir $(DESTDIR)$(LUA_CMOD)) $(DESTDIR)$(PREFIX)/lib/pkgconfig 2>/dev/null || true

clean:
	rm -rf build build-asan build-tsan build-fuzz
