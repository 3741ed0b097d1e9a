/* Private to the parlua runtime: checks of debug builds.
 *
 * `make DEBUG=1` (and the sanitizer builds) define PL_DEBUG; then
 * PL_ASSERT(c) aborts with the file and line when c is false, and
 * PL_ASSERT_HELD(mu) when the calling thread does not hold the mutex mu.
 * Every function whose name ends in _locked states its mutex so at its
 * entry, and entering and leaving a state (enter.c) check the global
 * lock, as SQLite's mutex_held asserts do.  In other builds they cost
 * nothing (the condition is not evaluated).
 */
#ifndef PL_DEBUG_H
#define PL_DEBUG_H

#include <pthread.h>

#ifdef PL_DEBUG
#define PL_ASSERT(c) ((c) ? (void)0 : pl_assert_failed(#c, __FILE__, __LINE__))
#define PL_ASSERT_HELD(mu) PL_ASSERT(pl_mutex_held(mu))
#else
#define PL_ASSERT(c) ((void)0)
#define PL_ASSERT_HELD(mu) ((void)0)
#endif

/* Prints "file:line: assertion failed: what" and aborts. */
_Noreturn void pl_assert_failed(const char *what, const char *file, int line);
/* 1 when the calling thread holds mu (glibc records the owner of every
 * kind of mutex; elsewhere: when anybody holds it). */
int pl_mutex_held(pthread_mutex_t *mu);

#endif
