/* Private to the parlua runtime: monotonic time and deadlines. */
#ifndef PL_CLOCK_H
#define PL_CLOCK_H

#include <stdint.h>
#include <time.h>

/* Monotonic nanoseconds; the one clock every wait and statistic uses. */
static inline int64_t pl_now_ns(void) {
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

/* A deadline `seconds` from now; a negative `seconds` means "never". */
static inline int64_t pl_deadline_after(double seconds) {
  if (seconds < 0) return INT64_MAX;
  if (seconds > 1e9) return INT64_MAX;  /* about 31 years: treat as forever */
  return pl_now_ns() + (int64_t)(seconds * 1e9);
}

static inline struct timespec pl_timespec_of(int64_t ns) {
  struct timespec ts;
  ts.tv_sec = (time_t)(ns / 1000000000);
  ts.tv_nsec = (long)(ns % 1000000000);
  return ts;
}

#endif
