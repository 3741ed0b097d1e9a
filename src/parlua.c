/* parlua: the command-line program.  A `lua`-compatible front end, modelled
 * on Lua 5.4's lua.c, written on the public embedding API (parlua.h) and the
 * plain Lua C API alone.
 *
 * Running code.  parlua_dostring and parlua_dofile are the way to run code
 * with the runtime's error handler (message, traceback, and a failed task's
 * worker traceback) and its interrupt bookkeeping, but they pass no
 * arguments and keep no results.  So a function compiled here is "parked"
 * with its arguments in a hidden global (a name no identifier can spell),
 * and a fixed trampoline chunk run by parlua_dostring takes it out and calls
 * it: a script by a tail call, so that no frame of ours shows in its
 * traceback; a REPL line through a C function that prints its results.
 *
 * Ctrl-C.  As in lua.c, SIGINT is caught only while code runs
 * (parlua_catch_sigint around each run, as lua.c's docall): the first one
 * makes running code fail with "interrupted!" (every other thread gets
 * Cancelled), and the second ends the program.  A script that dies of it
 * exits 130; the REPL reports it and reads on.  When nothing was running
 * (the prompt, startup, shutdown) the program dies of SIGINT, as lua does.
 *
 * The lock.  The main state's lock is taken (parlua_enter) only for short
 * direct uses of the state (compiling, parking, reading _PROMPT), never while
 * reading input, so par.thread threads run while the REPL waits.  Each such
 * section leaves the state's stack as it found it: other host threads use
 * the same stack between our sections.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/types.h>
#include <unistd.h>

#include "lua.h"
#include "lauxlib.h"
#include "lualib.h"
#include "parlua.h"

#ifdef PL_READLINE
#include <readline/history.h>
#include <readline/readline.h>
#endif

#define PROMPT "> "
#define PROMPT2 ">> "
#define EOFMARK "<eof>"
#define INIT_VAR "LUA_INIT"
#define INIT_VAR_VERSION INIT_VAR "_" LUA_VERSION_MAJOR "_" LUA_VERSION_MINOR

/* The status a program killed by Ctrl-C reports, as shells do. */
#define EXIT_INTERRUPTED 130

/* Where a compiled function waits for the trampoline. */
#define PARK "(parlua call)"

/* t[1] is the function, t[2..t.n] its arguments; t.repl runs a REPL line
 * and prints its results, t.global names the global that takes the result
 * (-l g=mod). */
static const char TRAMPOLINE[] =
    "local t = _ENV['" PARK "']\n"
    "_ENV['" PARK "'] = nil\n"
    "if t.repl then return t.repl(t)\n"
    "elseif t.global then _ENV[t.global] = t[1](t.unpack(t))\n"
    "else return t[1](t.unpack(t)) end\n";

static const char *progname = "parlua";  /* NULL inside the REPL, as in lua.c */

/* Messages name the program as it was invoked, as lua.c's do. */
static void take_progname(char **argv) {
  if (argv[0] != NULL && argv[0][0] != '\0') progname = argv[0];
}

static void message(const char *pname, const char *msg) {
  if (pname != NULL) fprintf(stderr, "%s: ", pname);
  fprintf(stderr, "%s\n", msg);
  fflush(stderr);
}

#define GIL_TRACE_OPTION "--gil-trace"

static void print_usage(const char *badoption) {
  fprintf(stderr, "%s: ", progname);
  if (badoption[1] == 'e' || badoption[1] == 'l' || strcmp(badoption, GIL_TRACE_OPTION) == 0)
    fprintf(stderr, "'%s' needs argument\n", badoption);
  else
    fprintf(stderr, "unrecognized option '%s'\n", badoption);
  fprintf(stderr,
          "usage: %s [options] [script [args]]\n"
          "Available options are:\n"
          "  -e stat   execute string 'stat'\n"
          "  -i        enter interactive mode after executing 'script'\n"
          "  -l mod    require library 'mod' into global 'mod'\n"
          "  -l g=mod  require library 'mod' into global 'g'\n"
          "  -v        show version information\n"
          "  -E        ignore environment variables\n"
          "  -W        turn warnings on\n"
          "  --gil-trace file  write the lock timeline of the run to 'file'\n"
          "                    (SVG; Chrome's trace-event JSON if it ends in .json)\n"
          "  --        stop handling options\n"
          "  -         stop handling options and execute stdin\n",
          progname);
  fflush(stderr);
}

/* lua.c's banner, exactly: tools read it for the Lua version, and the
 * official suite checks that nothing follows on its line.  parlua's own
 * version is par._VERSION. */
static void print_version(void) {
  printf("%s\n", LUA_COPYRIGHT);
  fflush(stdout);
}

/* ---- Ctrl-C ---------------------------------------------------------- */

/* As lua.c's docall: SIGINT is caught only while code runs (see
 * parlua_catch_sigint).  The first one interrupts the run, and puts the
 * default back so that a second ends the program; outside a run (the
 * prompt, startup, shutdown) Ctrl-C ends it at once.  A SIGINT that came
 * too late to stop the code it meant (the chunk was ending) still counts:
 * the run is reported as interrupted. */
static int late_interrupt;

static int caught(parlua *rt, int status) {
  late_interrupt = parlua_release_sigint(rt) && status == LUA_OK;
  return status;
}

static int dostring(parlua *rt, const char *code, const char *chunkname) {
  parlua_catch_sigint(rt);
  return caught(rt, parlua_dostring(rt, code, chunkname));
}

static int dofile(parlua *rt, const char *path) {
  parlua_catch_sigint(rt);
  return caught(rt, parlua_dofile(rt, path));
}

/* ---- direct use of the main state ------------------------------------ */

/* Run f(ud) under the lock, protected so that a memory error is reported
 * rather than fatal.  Returns a Lua status. */
static int run_locked(parlua *rt, lua_CFunction f, void *ud) {
  parlua_enter(rt);
  lua_State *L = parlua_state(rt);
  lua_pushcfunction(L, f);
  lua_pushlightuserdata(L, ud);
  int status = lua_pcall(L, 1, 0, 0);
  if (status != LUA_OK) {
    const char *msg = lua_tostring(L, -1);
    message(progname, msg != NULL ? msg : "(error object is not a string)");
    lua_pop(L, 1);
  }
  parlua_leave(rt);
  return status;
}

/* t.unpack(t): the arguments t[2..t.n]. */
static int unpack_args(lua_State *L) {
  lua_getfield(L, 1, "n");
  lua_Integer n = lua_tointeger(L, -1);
  luaL_checkstack(L, (int)n, "too many arguments");
  for (lua_Integer i = 2; i <= n; i++) lua_rawgeti(L, 1, i);
  return (int)(n - 1);
}

/* t.repl(t): call a REPL line and print its results with the global
 * `print`, as lua.c does.  The line is called from C so that its traceback
 * names it "main chunk", as lua's does. */
static int repl_line(lua_State *L) {
  lua_rawgeti(L, 1, 1);
  lua_call(L, 0, LUA_MULTRET);
  int n = lua_gettop(L) - 1;
  if (n > 0) {
    luaL_checkstack(L, LUA_MINSTACK, "too many results to print");
    lua_getglobal(L, "print");
    lua_insert(L, 2);
    if (lua_pcall(L, n, 0, 0) != LUA_OK) {
      const char *msg = luaL_tolstring(L, -1, NULL);
      message(progname, lua_pushfstring(L, "error calling 'print' (%s)", msg));
    }
  }
  return 0;
}

/* [-(n+1), +0] Park the function under its n arguments for the trampoline. */
static void park(lua_State *L, int n, int repl, const char *global) {
  lua_createtable(L, n + 1, 4);
  lua_insert(L, -(n + 2));
  int t = lua_absindex(L, -(n + 2));
  for (int i = n + 1; i >= 1; i--) lua_rawseti(L, t, i);
  lua_pushinteger(L, n + 1);
  lua_setfield(L, t, "n");
  lua_pushcfunction(L, unpack_args);
  lua_setfield(L, t, "unpack");
  if (repl) {
    lua_pushcfunction(L, repl_line);
    lua_setfield(L, t, "repl");
  }
  if (global != NULL) {
    lua_pushstring(L, global);
    lua_setfield(L, t, "global");
  }
  lua_rawgeti(L, LUA_REGISTRYINDEX, LUA_RIDX_GLOBALS);
  lua_pushliteral(L, PARK);
  lua_pushvalue(L, t);
  lua_rawset(L, -3);  /* raw: a strict-mode __newindex must not see it */
  lua_pop(L, 2);      /* globals, t */
}

static int run_parked(parlua *rt) {
  return dostring(rt, TRAMPOLINE, "=(parlua)");
}

/* ---- reporting ------------------------------------------------------- */

/* An internal frame at the bottom of a traceback: the trampoline's tail
 * call or main chunk, or the C function that runs a REPL line. */
static int internal_frame(const char *line, size_t len) {
  static const char TAIL[] = "\t(...tail calls...)", REPL[] = "\t[C]: in field 'repl'",
                    CHUNK[] = "\t(parlua):";
  return (len == sizeof TAIL - 1 && memcmp(line, TAIL, len) == 0) ||
         (len == sizeof REPL - 1 && memcmp(line, REPL, len) == 0) ||
         (len >= sizeof CHUNK - 1 && memcmp(line, CHUNK, sizeof CHUNK - 1) == 0);
}

/* msg with its traceback ending as lua.c's does, in "[C]: in ?" (the
 * program's own call), not in the frames through which the program runs
 * code, and without a position in the trampoline (require names its
 * caller's, and lua.c calls it from C for -l).  A worker's traceback after
 * it stays as it is.  malloc'd, or NULL without memory. */
static char *lua_like_traceback(const char *msg) {
  static const char MARK[] = "\nstack traceback:", BOTTOM[] = "\n\t[C]: in ?",
                    OURS[] = "(parlua):";
  if (strncmp(msg, OURS, sizeof OURS - 1) == 0) {
    const char *p = msg + sizeof OURS - 1;
    while (*p >= '0' && *p <= '9') p++;
    if (p[0] == ':' && p[1] == ' ') msg = p + 2;
  }
  const char *tb = strstr(msg, MARK);
  if (tb == NULL) return strdup(msg);
  const char *rest = strstr(tb, "\n[worker] ");
  if (rest == NULL) rest = msg + strlen(msg);
  const char *end = rest;
  for (;;) {  /* drop internal frames from the end */
    const char *line = end;
    while (line > tb + sizeof MARK - 1 && line[-1] != '\n') line--;
    if (line <= tb + sizeof MARK - 1 || !internal_frame(line, (size_t)(end - line))) break;
    end = line - 1;
  }
  size_t head = (size_t)(end - msg), tail = strlen(rest);
  char *out = malloc(head + sizeof BOTTOM - 1 + tail + 1);
  if (out == NULL) return NULL;
  memcpy(out, msg, head);
  memcpy(out + head, BOTTOM, sizeof BOTTOM - 1);
  memcpy(out + head + sizeof BOTTOM - 1, rest, tail + 1);
  return out;
}

static void report_error(const char *pname, const char *msg) {
  char *shown = lua_like_traceback(msg);
  message(pname, shown != NULL ? shown : msg);
  free(shown);
}

/* The exit status a parlua_dostring/dofile status calls for, with the
 * error reported. */
static int report(parlua *rt, int status) {
  if (status == LUA_OK && !late_interrupt) return EXIT_SUCCESS;
  if (status == LUA_OK) message(progname, "interrupted!");
  else report_error(progname, parlua_error(rt));
  return status == LUA_OK || parlua_interrupted(rt) ? EXIT_INTERRUPTED : EXIT_FAILURE;
}

/* ---- options --------------------------------------------------------- */

enum { has_error = 1, has_i = 2, has_v = 4, has_e = 8, has_E = 16 };

/* --gil-trace: where the lock timeline goes, or NULL. */
static const char *gil_trace_path;

/* As lua.c: the options present; *first is the index of the script name
 * (argc when there is none) or of the bad option. */
static int collect_args(char **argv, int *first) {
  int args = 0;
  int i;
  if (argv[0] == NULL) {
    *first = 0;
    return 0;
  }
  for (i = 1; argv[i] != NULL; i++) {
    *first = i;
    if (argv[i][0] != '-') return args;  /* not an option: the script */
    switch (argv[i][1]) {
      case '-':  /* '--', or '--gil-trace file' */
        if (strcmp(argv[i], GIL_TRACE_OPTION) == 0) {
          if (argv[++i] == NULL) return has_error;
          gil_trace_path = argv[i];
          break;
        }
        if (argv[i][2] != '\0') return has_error;
        *first = i + 1;
        return args;
      case '\0':  /* '-': the script is stdin */
        return args;
      case 'E':
        if (argv[i][2] != '\0') return has_error;
        args |= has_E;
        break;
      case 'W':
        if (argv[i][2] != '\0') return has_error;
        break;
      case 'i':
        args |= has_i;  /* -i implies -v */
        /* FALLTHROUGH */
      case 'v':
        if (argv[i][2] != '\0') return has_error;
        args |= has_v;
        break;
      case 'e':
        args |= has_e;
        /* FALLTHROUGH */
      case 'l':
        if (argv[i][2] == '\0') {  /* the argument is the next word */
          i++;
          if (argv[i] == NULL || argv[i][0] == '-') return has_error;
        }
        break;
      default:
        return has_error;
    }
  }
  *first = i;
  return args;
}

typedef struct ArgTable {
  char **argv;
  int argc, script;
} ArgTable;

/* The global `arg`: the script name at 0, its arguments at 1.., the
 * interpreter and its options at negative indices. */
static int create_arg_table(lua_State *L) {
  ArgTable *a = lua_touserdata(L, 1);
  int script = a->script == a->argc ? 0 : a->script;
  int narg = a->argc - (script + 1);
  lua_createtable(L, narg > 0 ? narg : 0, script + 1);
  for (int i = 0; i < a->argc; i++) {
    lua_pushstring(L, a->argv[i]);
    lua_rawseti(L, -2, i - script);
  }
  lua_setglobal(L, "arg");
  return 0;
}

/* -E: what lua.c gets by setting LUA_NOENV before opening the libraries. */
static int ignore_env(lua_State *L) {
  lua_pushboolean(L, 1);
  lua_setfield(L, LUA_REGISTRYINDEX, "LUA_NOENV");
  luaL_getsubtable(L, LUA_REGISTRYINDEX, LUA_LOADED_TABLE);
  if (lua_getfield(L, -1, LUA_LOADLIBNAME) == LUA_TTABLE) {
    lua_pushliteral(L, LUA_PATH_DEFAULT);
    lua_setfield(L, -2, "path");
    lua_pushliteral(L, LUA_CPATH_DEFAULT);
    lua_setfield(L, -2, "cpath");
  }
  lua_pop(L, 2);
  return 0;
}

/* lua.c runs everything with the collector in generational mode. */
static int generational_gc(lua_State *L) {
  lua_gc(L, LUA_GCGEN, 0, 0);
  return 0;
}

static int warnings_on(lua_State *L) {
  lua_warning(L, "@on", 0);
  return 0;
}

static int handle_luainit(parlua *rt) {
  const char *name = "=" INIT_VAR_VERSION;
  const char *init = getenv(name + 1);
  if (init == NULL) {
    name = "=" INIT_VAR;
    init = getenv(name + 1);
  }
  if (init == NULL) return EXIT_SUCCESS;
  if (init[0] == '@') return report(rt, dofile(rt, init + 1));
  return report(rt, dostring(rt, init, name));
}

typedef struct Library {
  const char *global, *module;
} Library;

static int park_library(lua_State *L) {
  Library *lib = lua_touserdata(L, 1);
  lua_getglobal(L, "require");
  lua_pushstring(L, lib->module);
  park(L, 1, 0, lib->global);
  return 0;
}

/* -l g=mod or -l mod: g = require(mod). */
static int do_library(parlua *rt, char *spec) {
  Library lib = {spec, spec};
  char *eq = strchr(spec, '=');
  if (eq != NULL) {
    *eq = '\0';
    lib.module = eq + 1;
  }
  if (run_locked(rt, park_library, &lib) != LUA_OK) return EXIT_FAILURE;
  return report(rt, run_parked(rt));
}

/* Run -e and -l (and apply -W) in order. */
static int run_args(parlua *rt, char **argv, int n) {
  for (int i = 1; i < n; i++) {
    int option = argv[i][1];
    switch (option) {
      case 'e':
      case 'l': {
        char *extra = argv[i] + 2;
        if (*extra == '\0') extra = argv[++i];
        int code = option == 'e' ? report(rt, dostring(rt, extra, "=(command line)"))
                                 : do_library(rt, extra);
        if (code != EXIT_SUCCESS) return code;
        break;
      }
      case 'W':
        if (run_locked(rt, warnings_on, NULL) != LUA_OK) return EXIT_FAILURE;
        break;
      case '-':  /* --gil-trace file: handled by pmain */
        i++;
        break;
    }
  }
  return EXIT_SUCCESS;
}

typedef struct Script {
  const char *fname;  /* NULL: standard input */
  int load_failed;
} Script;

/* Load the script and park it with arg[1..#arg] as its arguments. */
static int park_script(lua_State *L) {
  Script *s = lua_touserdata(L, 1);
  if (luaL_loadfile(L, s->fname) != LUA_OK) {
    s->load_failed = 1;
    return lua_error(L);
  }
  if (lua_getglobal(L, "arg") != LUA_TTABLE) return luaL_error(L, "'arg' is not a table");
  int n = (int)luaL_len(L, -1);
  luaL_checkstack(L, n + 3, "too many arguments to script");
  for (int i = 1; i <= n; i++) lua_rawgeti(L, -i, i);
  lua_remove(L, -(n + 1));  /* the arg table */
  park(L, n, 0, NULL);
  return 0;
}

static int handle_script(parlua *rt, char **argv) {
  Script s = {argv[0], 0};
  if (strcmp(s.fname, "-") == 0 && strcmp(argv[-1], "--") != 0) s.fname = NULL;
  if (run_locked(rt, park_script, &s) != LUA_OK) return EXIT_FAILURE;
  return report(rt, run_parked(rt));
}

/* ---- the REPL -------------------------------------------------------- */

typedef struct Prompt {
  int first;
  char *text;  /* malloc'd */
} Prompt;

static int get_prompt(lua_State *L) {
  Prompt *p = lua_touserdata(L, 1);
  const char *text = p->first ? PROMPT : PROMPT2;
  if (lua_getglobal(L, p->first ? "_PROMPT" : "_PROMPT2") != LUA_TNIL)
    text = luaL_tolstring(L, -1, NULL);
  p->text = strdup(text);
  return 0;
}

#ifdef PL_READLINE
/* Line editing and history with GNU readline, as Debian's lua5.4 has (the
 * Makefile chooses).  readline catches SIGINT itself while it reads, puts
 * the terminal back and passes the signal on, so it is not held here. */
static void init_line_editing(void) { rl_readline_name = "parlua"; }

static char *read_raw_line(const char *prompt) { return readline(prompt); }

static void remember_line(const char *line) {
  if (line[0] != '\0') add_history(line);
}
#else
static void init_line_editing(void) {}

/* The prompt, then one line without its newline; NULL at end of input. */
static char *read_raw_line(const char *prompt) {
  fputs(prompt, stdout);
  fflush(stdout);
  char *line = NULL;
  size_t cap = 0;
  ssize_t len = getline(&line, &cap, stdin);
  if (len < 0) {
    free(line);
    return NULL;
  }
  if (len > 0 && line[len - 1] == '\n') line[len - 1] = '\0';
  return line;
}

static void remember_line(const char *line) { (void)line; }
#endif

/* Prompt and read one line, without the lock; NULL at end of input. */
static char *read_line(parlua *rt, int first) {
  Prompt p = {first, NULL};
  run_locked(rt, get_prompt, &p);
  char *line = read_raw_line(p.text != NULL ? p.text : (first ? PROMPT : PROMPT2));
  free(p.text);
  return line;
}

enum { LINE_PARKED, LINE_INCOMPLETE, LINE_FAILED };

typedef struct Line {
  char *code;    /* what was read so far, lines joined by "\n" */
  int first;     /* only one line yet: try it as an expression first */
  int last;      /* no more input: report an incomplete statement */
  int result;
} Line;

/* An error that only says the input ended too early (lua.c's incomplete). */
static int incomplete(lua_State *L, int status) {
  if (status != LUA_ERRSYNTAX) return 0;
  size_t len;
  const char *msg = lua_tolstring(L, -1, &len);
  size_t marklen = sizeof EOFMARK - 1;
  return len >= marklen && strcmp(msg + len - marklen, EOFMARK) == 0;
}

static int compile_line(lua_State *L) {
  Line *ln = lua_touserdata(L, 1);
  int status;
  if (ln->first) {  /* "return <line>;" first, to print an expression's value */
    const char *ret = lua_pushfstring(L, "return %s;", ln->code);
    status = luaL_loadbuffer(L, ret, strlen(ret), "=stdin");
    lua_remove(L, -2);
    if (status == LUA_OK) {
      park(L, 0, 1, NULL);
      ln->result = LINE_PARKED;
      return 0;
    }
    lua_pop(L, 1);
  }
  status = luaL_loadbuffer(L, ln->code, strlen(ln->code), "=stdin");
  if (status == LUA_OK) {
    park(L, 0, 1, NULL);
    ln->result = LINE_PARKED;
  } else if (!ln->last && incomplete(L, status)) {
    lua_pop(L, 1);
    ln->result = LINE_INCOMPLETE;
  } else {
    message(progname, lua_tostring(L, -1));
    lua_pop(L, 1);
    ln->result = LINE_FAILED;
  }
  return 0;
}

/* Read and compile one statement, asking for more lines while it is
 * incomplete.  0 at end of input. */
static int read_statement(parlua *rt, Line *ln) {
  char *line = read_line(rt, 1);
  if (line == NULL) return 0;
  if (line[0] == '=') {  /* "=expr", as in Lua 5.2 */
    ln->code = malloc(strlen(line) + 7);
    if (ln->code != NULL) sprintf(ln->code, "return %s", line + 1);
    free(line);
  } else {
    ln->code = line;
  }
  if (ln->code == NULL) {
    message(progname, "not enough memory");
    return 0;
  }
  ln->first = 1;
  ln->last = 0;
  for (;;) {
    if (run_locked(rt, compile_line, ln) != LUA_OK) ln->result = LINE_FAILED;
    if (ln->result != LINE_INCOMPLETE) {
      remember_line(ln->code);  /* the whole statement, as lua.c keeps it */
      return 1;
    }
    ln->first = 0;
    char *more = read_line(rt, 0);
    if (more == NULL) {  /* compile once more to report what is missing */
      ln->last = 1;
      continue;
    }
    char *joined = malloc(strlen(ln->code) + strlen(more) + 2);
    if (joined == NULL) {
      free(more);
      message(progname, "not enough memory");
      ln->result = LINE_FAILED;
      return 1;
    }
    sprintf(joined, "%s\n%s", ln->code, more);
    free(ln->code);
    free(more);
    ln->code = joined;
  }
}

static void do_repl(parlua *rt) {
  init_line_editing();
  const char *oldprogname = progname;
  progname = NULL;
  Line ln;
  while (read_statement(rt, &ln)) {
    free(ln.code);
    if (ln.result != LINE_PARKED) continue;
    if (run_parked(rt) != LUA_OK) report_error(progname, parlua_error(rt));
    else if (late_interrupt) message(progname, "interrupted!");
  }
  fputs("\n", stdout);
  fflush(stdout);
  progname = oldprogname;
}

/* ---- --gil-trace ------------------------------------------------------ */

/* The module, kept from the start of the trace: the script may replace
 * `require` or the module's fields. */
static int gil_trace_module = LUA_NOREF;

/* par.gil_trace(), with `par` required before anything runs. */
static int gil_trace_start(lua_State *L) {
  lua_getglobal(L, "require");
  lua_pushliteral(L, "parlua");
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "gil_trace_stop");
  lua_getfield(L, -2, "gil_trace");
  lua_call(L, 0, 0);
  gil_trace_module = luaL_ref(L, LUA_REGISTRYINDEX);  /* gil_trace_stop */
  lua_pop(L, 1);
  return 0;
}

/* Stop, write the file (JSON when it ends in .json) and say on stderr
 * what each thread did. */
static int gil_trace_write(lua_State *L) {
  const char *path = gil_trace_path;
  size_t len = strlen(path);
  const char *format = len >= 5 && strcmp(path + len - 5, ".json") == 0 ? "json" : "svg";
  lua_rawgeti(L, LUA_REGISTRYINDEX, gil_trace_module);
  lua_call(L, 0, 1);
  int trace = lua_gettop(L);
  lua_getfield(L, trace, format);
  lua_pushvalue(L, trace);
  lua_pushstring(L, path);
  lua_call(L, 2, 0);
  lua_getfield(L, trace, "summary");
  lua_pushvalue(L, trace);
  lua_call(L, 1, 1);
  lua_getfield(L, -1, "duration");
  fprintf(stderr, "%s: lock timeline of %.3f s written to %s\n", progname, lua_tonumber(L, -1), path);
  lua_pop(L, 1);
  for (lua_Integer i = 1; lua_rawgeti(L, -1, i) == LUA_TTABLE; i++) {
    static const char *const fields[] = {"thread", "held_ratio", "waited_ratio", "free_ratio",
                                         "handoffs", "longest_wait"};
    for (int f = 0; f < 6; f++) lua_getfield(L, -1 - f, fields[f]);
    fprintf(stderr, "  %-24s held %3.0f%%  waited %3.0f%%  ran free %3.0f%%  %4d hand-offs  longest wait %.1f ms\n",
            lua_tostring(L, -6), 100 * lua_tonumber(L, -5), 100 * lua_tonumber(L, -4),
            100 * lua_tonumber(L, -3), (int)lua_tointeger(L, -2), 1000 * lua_tonumber(L, -1));
    lua_pop(L, 7);
  }
  fflush(stderr);
  return 0;
}

/* LUA_INIT, the -e and -l options and the script, in that order. */
static int run_program(parlua *rt, int argc, char **argv, int args, int script) {
  int code;
  if (!(args & has_E) && (code = handle_luainit(rt)) != EXIT_SUCCESS) return code;
  if ((code = run_args(rt, argv, script)) != EXIT_SUCCESS) return code;
  if (script < argc && (code = handle_script(rt, argv + script)) != EXIT_SUCCESS) return code;
  return EXIT_SUCCESS;
}

/* ---- main ------------------------------------------------------------ */

static int pmain(parlua *rt, int argc, char **argv, int args, int script) {
  int code;
  if (args & has_v) print_version();
  if ((args & has_E) && run_locked(rt, ignore_env, NULL) != LUA_OK) return EXIT_FAILURE;
  ArgTable at = {argv, argc, script};
  if (run_locked(rt, create_arg_table, &at) != LUA_OK) return EXIT_FAILURE;
  if (run_locked(rt, generational_gc, NULL) != LUA_OK) return EXIT_FAILURE;
  if (gil_trace_path != NULL && run_locked(rt, gil_trace_start, NULL) != LUA_OK) return EXIT_FAILURE;
  code = run_program(rt, argc, argv, args, script);
  /* Written even when the script failed: that run may be the one to see. */
  if (gil_trace_path != NULL && run_locked(rt, gil_trace_write, NULL) != LUA_OK &&
      code == EXIT_SUCCESS)
    code = EXIT_FAILURE;
  if (code != EXIT_SUCCESS) return code;
  if (args & has_i) {
    do_repl(rt);
  } else if (script == argc && !(args & (has_e | has_v))) {  /* no active option */
    if (isatty(STDIN_FILENO)) {
      print_version();
      do_repl(rt);
    } else {
      return report(rt, dofile(rt, NULL));
    }
  }
  return EXIT_SUCCESS;
}

int main(int argc, char **argv) {
  int served = parlua_mpi_serve();  /* an MPI rank that serves pools does only that */
  if (served >= 0) return served;
  take_progname(argv);
  int code = EXIT_FAILURE;
  int script = 0;
  int args = collect_args(argv, &script);
  if (args == has_error) {
    print_usage(argv[script]);
  } else {
    parlua *rt = parlua_new(NULL);
    if (rt == NULL) {
      message(progname, "cannot create state: not enough memory");
    } else {
      code = pmain(rt, argc, argv, args, script);
      parlua_close(rt);
    }
  }
  return code;
}
