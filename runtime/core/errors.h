/* Private to the parlua runtime: the error objects scripts see.
 *
 * An error is a table {kind = "Timeout", message = "...", where = "f.lua:3"}
 * (plus fields of its kind; `where` when raised from Lua code) whose
 * metatable gives tostring(e) == e.where .. ": " .. e.message, as luaL_error
 * would have put it.  Kinds are the strings below; par.errors maps each name
 * to itself.
 */
#ifndef PL_ERRORS_H
#define PL_ERRORS_H

#include "lua.h"
#include "core/tstate.h"

#define PL_TIMEOUT "Timeout"
#define PL_CANCELLED "Cancelled"
#define PL_BROKEN_POOL "BrokenPool"
#define PL_SHUTDOWN "Shutdown"
#define PL_TRANSFER "Transfer"
#define PL_CALLED_PROCESS_ERROR "CalledProcessError"
#define PL_TIMEOUT_EXPIRED "TimeoutExpired"
#define PL_OS_ERROR "OSError"
#define PL_BROKEN_BARRIER "BrokenBarrier"
#define PL_SOFT_TIME_LIMIT "SoftTimeLimit"

/* [-0, +1] a new error object of `kind` with a formatted message. */
void pl_error_push(lua_State *L, const char *kind, const char *fmt, ...);
/* [-0, +0] raise one, made here; never returns. */
int pl_error_raise(lua_State *L, const char *kind, const char *fmt, ...);
/* [-1, +0] raise the value on top, an error made for this raise (by
 * pl_error_push, or an error a protected call of the runtime's own gave):
 * an error object without a position gets the caller's as `where`
 * (file:line, what luaL_error puts in front of a message).  Never returns. */
int pl_error_throw(lua_State *L);
/* [-1, +0] raise the value on top again as it is: a task's or a thread's
 * error, or one a coroutine raised.  Never returns.  Both note the raise, so
 * that a stock lua5.4 dying of it prints a traceback (errors.c). */
int pl_error_rethrow(lua_State *L);
/* [-0, +0] raise an OSError for `err` (an errno) with a prefix. */
int pl_error_raise_os(lua_State *L, int err, const char *what);
/* [-0, +0] raise what stopped the thread (ts may be NULL): Timeout (a hard
 * time limit), SoftTimeLimit, lua.c's "interrupted!" (a host thread), or
 * Cancelled "interrupted"/"cancelled"; a forced cancel is then marked
 * delivered.  For a wait that returned PL_ECANCELLED; never returns. */
int pl_error_raise_cancelled(lua_State *L, pl_tstate *ts);
/* Raise it (as above) if the calling thread was force-cancelled or its
 * soft time limit ran out. */
void pl_check_cancel(lua_State *L, pl_tstate *ts);
/* A forced cancel or an interrupt is pending: after a wait for results, it
 * wins over what came (a task that an interrupt stopped too must not
 * report its own Cancelled in place of the waiter's interrupt). */
static inline int pl_cancel_forced(pl_tstate *ts) {
  return ts != NULL && pl_tstate_cancel_level(ts) == PL_CANCEL_FORCED;
}
/* [-1, +(1|2)] lua_pcall with a traceback handler that leaves the error
 * value untouched: on error the stack gets [error, traceback]. */
int pl_pcall_traced(lua_State *L, int nargs, int nresults);
/* 1 when the value at idx is an error object of `kind` (any kind if NULL). */
int pl_error_is(lua_State *L, int idx, const char *kind);
/* [-0, +1] the error-object metatable. */
void pl_error_metatable(lua_State *L);
/* [-0, +0] remember that the error value at `err` came from a worker whose
 * traceback is the string at `traceback`, so that a script dying of it
 * shows both tracebacks. */
void pl_error_note_origin(lua_State *L, int err, int traceback);
/* [-0, +0] when the string error at idx is an "attempt to call/index a nil
 * value (global 'x')", append why (globals are not copied to `kind`
 * workers) and how to fix it. */
void pl_error_add_global_hint(lua_State *L, int idx, const char *kind);
/* A message handler that keeps the error value as it is and records its
 * traceback in the table that is its upvalue 1, field "traceback". */
int pl_traceback_recorder(lua_State *L);
/* The traceback recorded in the table at `slot` (malloc'd, or NULL),
 * cleared for the next call. */
char *pl_take_traceback(lua_State *L, int slot);
/* [-0, +1] the message handler used for every pcall the runtime makes:
 * the message (an error object's "where: message", another object's
 * __tostring) plus a traceback. */
int pl_msghandler(lua_State *L);

#endif
