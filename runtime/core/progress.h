/* Private to the parlua runtime: the progress bar pool:map draws on stderr
 * (`progress = true`), in the manner of Python's tqdm:
 *
 *    45%|#########           | 45/100 [00:02<00:03, 19.50it/s]
 *
 * fitted to the terminal's width, read again at every frame (TIOCGWINSZ),
 * so a resized terminal gets a bar that fits at the next frame.  The bar
 * lives in the terminal's last row, kept out of the scroll region as apt
 * keeps its progress line: output of tasks, of worker processes and of the
 * runtime scrolls above it and never lands on it.  A terminal of fewer
 * than three rows gets the bar on the current line instead; then whatever
 * the runtime itself writes to stderr first calls pl_stderr_claim, which
 * clears that line.  The last frame stays in the scrolling text, as tqdm's.
 */
#ifndef PL_PROGRESS_H
#define PL_PROGRESS_H

#include <stddef.h>
#include <stdint.h>

typedef struct pl_progress {
  int on;                 /* stderr is a terminal */
  int64_t start, last;    /* pl_now_ns of the start and of the last frame */
  long long done, total;
} pl_progress;

/* A bar for `total` items, drawn when stderr is a terminal (p->on). */
void pl_progress_start(pl_progress *p, long long total);
/* `done` items so far; a new frame at most ten times a second. */
void pl_progress_set(pl_progress *p, long long done);
/* The last frame, all items done, and the end of its line. */
void pl_progress_finish(pl_progress *p);

/* Before writing to stderr: clear the line of a bar drawn on it. */
void pl_stderr_claim(void);
/* A map that ends early (an error, a timeout) takes its bar away: the
 * terminal's last row scrolls again, or the bar's line is cleared.  Also
 * done at exit(), for os.exit in the middle of a map. */
void pl_progress_abandon(void);

/* The text of one frame for a terminal `width` columns wide, at most
 * width - 1 characters (a full last column would wrap on some terminals);
 * its length.  `elapsed` in seconds.  Exposed for the unit test. */
size_t pl_progress_format(char *buf, size_t cap, int width, long long done, long long total,
                          double elapsed);

#endif
