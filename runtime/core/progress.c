/* The progress bar of pool:map (progress.h). */
#include <pthread.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/progress.h"

#define FRAME_NS 100000000  /* ten frames a second at most */

/* Where the frame is on the terminal.  One per process, as the terminal
 * is; changed holding stderr's lock. */
enum { SHOWN_NONE, SHOWN_ON_LINE, SHOWN_LAST_ROW };
static atomic_int shown;
static int region_rows;      /* SHOWN_LAST_ROW: the rows the scroll region is set for */
static pid_t bar_pid;        /* the process drawing: a forked child's exit leaves its bar alone */
static pthread_once_t at_exit_once = PTHREAD_ONCE_INIT;

/* "MM:SS", or "H:MM:SS" from an hour on, as tqdm prints times. */
static void format_time(char *buf, size_t cap, double seconds) {
  long long s = seconds > 0 ? (long long)(seconds + 0.5) : 0;
  if (s >= 3600) snprintf(buf, cap, "%lld:%02lld:%02lld", s / 3600, s / 60 % 60, s % 60);
  else snprintf(buf, cap, "%02lld:%02lld", s / 60, s % 60);
}

size_t pl_progress_format(char *buf, size_t cap, int width, long long done, long long total,
                          double elapsed) {
  char el[24], rem[24], rate[32], left[8], right[128];
  if (cap == 0) return 0;
  size_t room = width > 1 ? (size_t)width - 1 : 0;
  if (room > cap - 1) room = cap - 1;
  double r = elapsed > 0 ? (double)done / elapsed : 0;
  format_time(el, sizeof el, elapsed);
  if (done >= total) format_time(rem, sizeof rem, 0);
  else if (r > 0) format_time(rem, sizeof rem, (double)(total - done) / r);
  else snprintf(rem, sizeof rem, "?");
  if (r <= 0) snprintf(rate, sizeof rate, "?it/s");
  else if (r < 1) snprintf(rate, sizeof rate, "%.2fs/it", 1 / r);  /* slow items: seconds each */
  else snprintf(rate, sizeof rate, "%.2fit/s", r);
  int pct = total > 0 ? (int)(100 * done / total) : 100;
  snprintf(left, sizeof left, "%3d%%|", pct);
  snprintf(right, sizeof right, "| %lld/%lld [%s<%s, %s]", done, total, el, rem, rate);
  size_t nl = strlen(left), nr = strlen(right);
  if (room >= nl + nr + 4) {  /* the whole line, the bar taking the room left */
    size_t bar = room - nl - nr;
    size_t filled = total > 0 ? (size_t)((double)bar * (double)done / (double)total) : bar;
    memcpy(buf, left, nl);
    for (size_t i = 0; i < bar; i++) buf[nl + i] = i < filled ? '#' : ' ';
    memcpy(buf + nl + bar, right, nr + 1);
    return room;
  }
  /* Narrow: without the bar, then the count alone, then cut. */
  snprintf(buf, cap, "%3d%% %lld/%lld [%s<%s, %s]", pct, done, total, el, rem, rate);
  if (strlen(buf) > room) snprintf(buf, cap, "%3d%% %lld/%lld", pct, done, total);
  if (strlen(buf) > room) snprintf(buf, cap, "%lld/%lld", done, total);
  size_t n = strlen(buf);
  if (n > room) buf[n = room] = '\0';
  return n;
}

static void terminal_size(int *cols, int *rows) {
  struct winsize ws;
  int ok = ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0;
  *cols = ok && ws.ws_col > 0 ? ws.ws_col : 80;
  *rows = ok ? ws.ws_row : 0;
}

/* One write of the whole sequence, so that no other writer's bytes land
 * in the middle of a cursor movement. */
static void put(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void put(const char *fmt, ...) {
  char buf[1024];
  va_list ap;
  va_start(ap, fmt);
  int n = vsnprintf(buf, sizeof buf, fmt, ap);
  va_end(ap);
  if (n > 0) (void)!write(STDERR_FILENO, buf, (size_t)n < sizeof buf ? (size_t)n : sizeof buf - 1);
}

/* Keep the terminal's last row for the bar, as apt does: the scroll region
 * becomes every row above it, so whatever anybody prints meanwhile (tasks,
 * worker processes, the runtime) scrolls there and never onto the bar.
 * The newline makes room at the bottom; setting the region homes the
 * cursor, so it is saved and restored around, then kept inside. */
static void reserve_last_row(int rows) {
  put("\n\0337\033[1;%dr\0338\033[1A", rows - 1);
  region_rows = rows;
}

/* The whole screen scrolls again; the bar's row is cleared. */
static void release_last_row(void) {
  put("\0337\033[r\033[%d;1H\033[K\0338", region_rows);
}

/* Give the terminal back as it was, however the bar ends (held: stderr's
 * lock, or nobody else runs). */
static void take_bar_away(void) {
  int was = atomic_exchange(&shown, SHOWN_NONE);
  if (was == SHOWN_LAST_ROW) release_last_row();
  else if (was == SHOWN_ON_LINE) put("\r\033[K");
}

/* os.exit in the middle of a map must not leave the scroll region set. */
static void at_exit(void) {
  if (getpid() == bar_pid) take_bar_away();
}
static void register_at_exit(void) { atexit(at_exit); }

static void draw(pl_progress *p, int64_t now, int final) {
  char line[512];
  int cols, rows;
  terminal_size(&cols, &rows);
  pl_progress_format(line, sizeof line, cols, p->done, p->total, (double)(now - p->start) / 1e9);
  flockfile(stderr);
  fflush(stderr);
  int was = atomic_load(&shown);
  if (final) {
    take_bar_away();
    put("\r%s\033[K\n", line);  /* the last frame stays, in the scrolling text */
  } else if (rows >= 3) {
    if (was != SHOWN_LAST_ROW) {
      if (was == SHOWN_ON_LINE) put("\r\033[K");
      reserve_last_row(rows);
    } else if (rows != region_rows) {  /* resized: the bar's row moved */
      release_last_row();
      reserve_last_row(rows);
    }
    put("\0337\033[%d;1H%s\033[K\0338", rows, line);
    atomic_store(&shown, SHOWN_LAST_ROW);
  } else {  /* no row to spare: the bar on the current line */
    put("\r%s\033[K", line);
    atomic_store(&shown, SHOWN_ON_LINE);
  }
  funlockfile(stderr);
  p->last = now;
}

void pl_progress_start(pl_progress *p, long long total) {
  memset(p, 0, sizeof *p);
  p->on = isatty(STDERR_FILENO);
  p->total = total;
  p->start = p->last = pl_now_ns();
  if (!p->on) return;
  pthread_once(&at_exit_once, register_at_exit);
  bar_pid = getpid();
  draw(p, p->start, 0);
}

void pl_progress_set(pl_progress *p, long long done) {
  p->done = done;
  if (!p->on) return;
  int64_t now = pl_now_ns();
  if (now - p->last >= FRAME_NS) draw(p, now, 0);
}

void pl_progress_finish(pl_progress *p) {
  p->done = p->total;
  if (p->on) draw(p, pl_now_ns(), 1);
  p->on = 0;
}

void pl_progress_abandon(void) {
  if (atomic_load(&shown) == SHOWN_NONE) return;
  flockfile(stderr);
  take_bar_away();
  funlockfile(stderr);
}

void pl_stderr_claim(void) {
  if (atomic_load(&shown) != SHOWN_ON_LINE) return;  /* a bar in the last row is out of the way */
  flockfile(stderr);
  if (atomic_load(&shown) == SHOWN_ON_LINE) {
    atomic_store(&shown, SHOWN_NONE);
    put("\r\033[K");
  }
  funlockfile(stderr);
}
