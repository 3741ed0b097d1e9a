/* The progress bar of pool:map (progress.h). */
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <sys/ioctl.h>
#include <unistd.h>

#include "core/clock.h"
#include "core/progress.h"

#define FRAME_NS 100000000  /* ten frames a second at most */

/* Whether a bar's frame is on the terminal's last line now.  One per
 * process, as the terminal is: whoever writes to stderr clears it first. */
static atomic_int bar_on_line;

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

static int terminal_width(void) {
  struct winsize ws;
  if (ioctl(STDERR_FILENO, TIOCGWINSZ, &ws) == 0 && ws.ws_col > 0) return ws.ws_col;
  return 80;
}

static void draw(pl_progress *p, int64_t now, int final) {
  char line[512];
  pl_progress_format(line, sizeof line, terminal_width(), p->done, p->total, (double)(now - p->start) / 1e9);
  flockfile(stderr);
  fprintf(stderr, "\r%s\033[K%s", line, final ? "\n" : "");
  fflush(stderr);
  atomic_store(&bar_on_line, !final);
  funlockfile(stderr);
  p->last = now;
}

void pl_progress_start(pl_progress *p, long long total) {
  memset(p, 0, sizeof *p);
  p->on = isatty(STDERR_FILENO);
  p->total = total;
  p->start = p->last = pl_now_ns();
  if (p->on) draw(p, p->start, 0);
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

void pl_stderr_claim(void) {
  if (!atomic_load(&bar_on_line)) return;
  flockfile(stderr);
  if (atomic_exchange(&bar_on_line, 0)) {
    fputs("\r\033[K", stderr);
    fflush(stderr);
  }
  funlockfile(stderr);
}
