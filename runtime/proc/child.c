/* Child processes: starting them, waiting for them, talking to them.
 *
 * Starting.  posix_spawnp: glibc runs the child with clone(CLONE_VFORK)
 * sharing our memory until exec, so spawning costs the same in a 10 GB
 * parent as in a small one, and it reports a failed exec (or a failed file
 * action such as the chdir) as its return value after reaping the failed
 * child itself.  Every descriptor we open is O_CLOEXEC; on top of that the
 * child closes everything above 2 (closefrom) so a host's own inheritable
 * descriptors do not leak into it either.  Sources of dup2 are moved above
 * 2 first, so `stdout = 2, stderr = 1` cannot clobber one with the other.
 *
 * Signals.  The child starts with an empty mask (a waiter of ours may have
 * SIGURG or SIGPIPE blocked at that moment) and default dispositions for
 * SIGPIPE and SIGXFSZ (which hosts, like Python, ignore for their own I/O),
 * SIGCHLD (ignored, it breaks every wait the child makes) and the runtime's
 * poke signal.  SIGINT, SIGQUIT and SIGHUP are left as inherited: an
 * ignored SIGINT or SIGHUP is how a shell's background job and `nohup` say
 * "do not let a terminal kill this", and that must reach the children too.
 *
 * Groups.  A child may start in a new session (setsid) or process group
 * (setpgid), as Python's start_new_session and process_group do.  One that
 * leads its own group is stopped with its group -- by a timeout's kill and
 * by Ctrl-C -- so what it started (`sh -c 'sleep 100 & sleep 100'`) goes
 * too.  The group is signalled even after its leader was reaped: Linux
 * gives out no pid that is still some group's id, so while any member
 * lives the number is theirs, and an empty group only gives ESRCH.
 *
 * Waiting.  Only for our own pid: waitpid(pid), never waitpid(-1) or a
 * SIGCHLD handler, so a host's children are left to the host.  Where the
 * kernel has pidfd_open (Linux 5.3) the wait is a poll on the pidfd;
 * elsewhere waitpid(WNOHANG) with sleeps from 0.5 ms doubling to 50 ms, as
 * Python does.
 */
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

#include "core/debug.h"
#include "core/background.h"
#include "core/bigmem.h"
#include "core/clock.h"
#include "proc/child.h"

extern char **environ;

static void close_quietly(int fd) {
  if (fd >= 0) (void)close(fd);
}

/* --------------------------------------------------------------- starting */

/* Move fd above 2 (keeping O_CLOEXEC), so it cannot be a dup2 target. */
static int move_high(int *fd) {
  if (*fd > 2) return 0;
  int high = fcntl(*fd, F_DUPFD_CLOEXEC, 3);
  if (high < 0) return errno;
  close_quietly(*fd);
  *fd = high;
  return 0;
}

/* PARLUA_NO_PIDFD=1 makes waits use the fallback (to test it). */
static pthread_once_t pidfd_once = PTHREAD_ONCE_INIT;
static int pidfd_disabled;

static void read_pidfd_setting(void) {
  const char *e = getenv("PARLUA_NO_PIDFD");
  pidfd_disabled = e != NULL && e[0] != '\0' && strcmp(e, "0") != 0;
}

static int open_pidfd(pid_t pid) {
  pthread_once(&pidfd_once, read_pidfd_setting);
  if (pidfd_disabled) return -1;
#ifdef SYS_pidfd_open
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);  /* always close-on-exec */
  return fd >= 0 ? fd : -1;
#else
  (void)pid;
  return -1;
#endif
}

/* The signals whose disposition the child gets reset (see the top). */
static void default_signals(sigset_t *set) {
  sigemptyset(set);
  sigaddset(set, SIGPIPE);
  sigaddset(set, SIGXFSZ);
  sigaddset(set, SIGCHLD);
  sigaddset(set, PL_POKE_SIGNAL);
}

int pl_spawn(const pl_spawn_req *req, pl_spawn_res *res) {
  int theirs[3] = {-1, -1, -1};  /* what the child dup2s onto 0, 1, 2 */
  int err = 0;
  res->pid = -1;
  res->pidfd = -1;
  for (int i = 0; i < 3; i++) res->fds[i] = -1;

  for (int i = 0; i < 3 && err == 0; i++) {
    const pl_io *io = &req->io[i];
    if (io->how == PL_IO_PIPE) {
      int p[2];
      if (pipe2(p, O_CLOEXEC) != 0) {
        err = errno;
        break;
      }
      res->fds[i] = i == 0 ? p[1] : p[0];
      theirs[i] = i == 0 ? p[0] : p[1];
      /* Our end only: the child's end is its own file description. */
      if (fcntl(res->fds[i], F_SETFL, O_NONBLOCK) != 0) err = errno;
      if (err == 0) err = move_high(&theirs[i]);
    } else if (io->how == PL_IO_FD) {
      theirs[i] = fcntl(io->fd, F_DUPFD_CLOEXEC, 3);
      if (theirs[i] < 0) err = errno;
    }
  }

  posix_spawn_file_actions_t fa;
  posix_spawnattr_t attr;
  if (err == 0) {
    err = posix_spawn_file_actions_init(&fa);
    if (err == 0) {
      err = posix_spawnattr_init(&attr);
      if (err != 0) posix_spawn_file_actions_destroy(&fa);
    }
  }
  if (err == 0) {
    for (int i = 0; i < 3 && err == 0; i++) {
      switch (req->io[i].how) {
        case PL_IO_PIPE:
        case PL_IO_FD:
          err = posix_spawn_file_actions_adddup2(&fa, theirs[i], i);
          break;
        case PL_IO_DEVNULL:
          err = posix_spawn_file_actions_addopen(&fa, i, "/dev/null", i == 0 ? O_RDONLY : O_WRONLY, 0);
          break;
        case PL_IO_STDOUT:
          err = posix_spawn_file_actions_adddup2(&fa, 1, 2);
          break;
        default:
          break;
      }
    }
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 34))
    if (err == 0) err = posix_spawn_file_actions_addclosefrom_np(&fa, 3);
#endif
    if (err == 0 && req->cwd != NULL) {
#if defined(__GLIBC__) && (__GLIBC__ > 2 || (__GLIBC__ == 2 && __GLIBC_MINOR__ >= 29))
      err = posix_spawn_file_actions_addchdir_np(&fa, req->cwd);
#else
      err = ENOSYS;
#endif
    }
    sigset_t none, defaults;
    sigemptyset(&none);
    default_signals(&defaults);
    short flags = POSIX_SPAWN_SETSIGMASK | POSIX_SPAWN_SETSIGDEF;
    if (req->group == PL_GROUP_SESSION) flags |= POSIX_SPAWN_SETSID;
    if (req->group == PL_GROUP_NEW || req->group == PL_GROUP_JOIN) flags |= POSIX_SPAWN_SETPGROUP;
    if (err == 0 && req->group == PL_GROUP_JOIN) err = posix_spawnattr_setpgroup(&attr, req->pgid);
    if (err == 0) err = posix_spawnattr_setflags(&attr, flags);
    if (err == 0) err = posix_spawnattr_setsigmask(&attr, &none);
    if (err == 0) err = posix_spawnattr_setsigdefault(&attr, &defaults);
    if (err == 0) {
      pid_t pid;
      err = posix_spawnp(&pid, req->argv[0], &fa, &attr, req->argv,
                         req->envp != NULL ? req->envp : environ);
      if (err == 0) res->pid = pid;
    }
    posix_spawnattr_destroy(&attr);
    posix_spawn_file_actions_destroy(&fa);
  }

  for (int i = 0; i < 3; i++) close_quietly(theirs[i]);
  if (err != 0) {
    for (int i = 0; i < 3; i++) {
      close_quietly(res->fds[i]);
      res->fds[i] = -1;
    }
    return err;
  }
  res->pidfd = open_pidfd(res->pid);
  return 0;
}

int pl_spawn_check_cwd(const char *cwd) {
  struct stat st;
  if (stat(cwd, &st) != 0) return errno;
  if (!S_ISDIR(st.st_mode)) return ENOTDIR;
  if (access(cwd, X_OK) != 0) return errno;
  return 0;
}

/* ---------------------------------------------------- waiting for a child */

void pl_proc_init(pl_proc *p, pid_t pid, int pidfd) {
  memset(p, 0, sizeof *p);
  p->pid = pid;
  p->pidfd = pidfd;
  pthread_mutex_init(&p->mu, NULL);
}

void pl_proc_destroy(pl_proc *p) {
  close_quietly(p->pidfd);
  p->pidfd = -1;
  pthread_mutex_destroy(&p->mu);
}

/* Reap without blocking.  The pidfd stays open while a thread polls it
 * (closing it could hand its number to an unrelated file mid-poll). */
static int reap_locked(pl_proc *p) {
  PL_ASSERT_HELD(&p->mu);
  if (p->reaped) return 1;
  int st = 0;
  pid_t r;
  do r = waitpid(p->pid, &st, WNOHANG);
  while (r < 0 && errno == EINTR);
  if (r == 0) return 0;
  /* ECHILD: someone else reaped it (a host with SIGCHLD ignored, or one
   * calling waitpid(-1)); the status is lost, and like Python we say 0. */
  p->status = r == p->pid ? st : 0;
  p->reaped = 1;
  if (p->waiters == 0) {
    close_quietly(p->pidfd);
    p->pidfd = -1;
  }
  return 1;
}

int pl_proc_poll(pl_proc *p) {
  pthread_mutex_lock(&p->mu);
  int done = reap_locked(p);
  pthread_mutex_unlock(&p->mu);
  return done;
}

int pl_proc_wait(pl_proc *p, pl_poller *w, int64_t deadline_ns) {
  pthread_mutex_lock(&p->mu);
  if (reap_locked(p)) {
    pthread_mutex_unlock(&p->mu);
    return PL_OK;
  }
  p->waiters++;
  int fd = p->pidfd;
  pthread_mutex_unlock(&p->mu);

  int rc = PL_OK;
  int64_t delay = 500000;  /* the fallback's first sleep: 0.5 ms */
  for (;;) {
    int r;
    if (fd >= 0) {
      struct pollfd pf = {fd, POLLIN, 0};
      r = pl_poller_poll(w, &pf, 1, deadline_ns);
    } else {
      int64_t now = pl_now_ns();
      int64_t until = deadline_ns - now > delay ? now + delay : deadline_ns;
      r = pl_poller_poll(w, NULL, 0, until);
      if (r == 0 && until != deadline_ns) r = 1;  /* a slice, not the deadline */
      if (delay < 50000000) delay *= 2;
    }
    pthread_mutex_lock(&p->mu);
    int done = reap_locked(p);
    pthread_mutex_unlock(&p->mu);
    if (done) break;
    if (r == PL_ECANCELLED) {
      rc = PL_ECANCELLED;
      break;
    }
    if (r == 0) {
      rc = PL_ETIMEOUT;
      break;
    }
    if (r < 0) fd = -1;  /* a broken pidfd: fall back to sleeping */
  }

  pthread_mutex_lock(&p->mu);
  if (--p->waiters == 0 && p->reaped) {
    close_quietly(p->pidfd);
    p->pidfd = -1;
  }
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int pl_proc_signal(pl_proc *p, int sig) {
  int err = 0;
  pthread_mutex_lock(&p->mu);
  /* While not reaped the pid is ours (a zombie keeps it), so no reuse. */
  if (!p->reaped && kill(p->pid, sig) != 0) err = errno;
  pthread_mutex_unlock(&p->mu);
  return err;
}

int pl_proc_signal_group(pl_proc *p, int sig) {
  PL_ASSERT(p->leads_group);
  if (kill(-p->pid, sig) == 0 || errno == ESRCH) return 0;
  return errno;
}

int pl_proc_stop(pl_proc *p, int sig) {
  return p->leads_group ? pl_proc_signal_group(p, sig) : pl_proc_signal(p, sig);
}

/* Whether the group of the child p leads still has a member (a zombie
 * its new parent has not reaped yet counts). */
static int group_alive(const pl_proc *p) {
  return kill(-p->pid, 0) == 0 || errno == EPERM;
}

void pl_proc_finish_stop(pl_proc *p, int64_t deadline_ns) {
  pl_poller w;
  pl_poller_begin(&w, NULL, 0);
  int ended = pl_proc_wait(p, &w, deadline_ns) == PL_OK;
  while (ended && p->leads_group && group_alive(p) && pl_now_ns() < deadline_ns)
    (void)pl_poller_poll(&w, NULL, 0, pl_now_ns() + 10000000);  /* 10 ms */
  if (!ended) (void)pl_proc_signal(p, SIGKILL);
  if (p->leads_group && group_alive(p)) (void)pl_proc_signal_group(p, SIGKILL);
  if (!ended) pl_proc_wait(p, &w, INT64_MAX);
  pl_poller_end(&w);
}

int pl_proc_returncode(const pl_proc *p) {
  if (WIFSIGNALED(p->status)) return -WTERMSIG(p->status);
  if (WIFEXITED(p->status)) return WEXITSTATUS(p->status);
  return 0;
}

int pl_reap_nohang(pid_t pid) {
  pid_t r;
  do r = waitpid(pid, NULL, WNOHANG);
  while (r < 0 && errno == EINTR);
  return r != 0;
}

typedef struct reap_job {
  pid_t *pids;
  size_t n;
} reap_job;

static void *reap_main(void *arg) {
  reap_job *job = arg;
  for (size_t i = 0; i < job->n; i++) {
    while (waitpid(job->pids[i], NULL, 0) < 0 && errno == EINTR) {
    }
  }
  free(job->pids);
  free(job);
  return NULL;
}

void pl_reap_in_background(pid_t *pids, size_t n) {
  size_t live = 0;
  for (size_t i = 0; i < n; i++)
    if (!pl_reap_nohang(pids[i])) pids[live++] = pids[i];
  reap_job *job = live > 0 ? malloc(sizeof *job) : NULL;
  if (job == NULL) {  /* nothing left, or no memory: they stay zombies */
    free(pids);
    return;
  }
  job->pids = pids;
  job->n = live;
  /* It may run on after the runtime is gone (background.h). */
  if (pl_background_thread(reap_main, job, 64 * 1024) != 0) {
    free(pids);
    free(job);
  }
}

/* ------------------------------------------------------------ communicate */

int pl_bytes_reserve(pl_bytes *b, size_t extra) {
  if (b->cap - b->len >= extra) return 0;
  size_t cap = b->cap > 0 ? b->cap : 65536;
  while (cap - b->len < extra) {
    if (cap > SIZE_MAX / 2) return ENOMEM;
    cap *= 2;
  }
  char *data = realloc(b->data, cap);
  if (data == NULL) return ENOMEM;
  b->data = data;
  b->cap = cap;
  return 0;
}

void pl_bytes_free(pl_bytes *b) {
  free(b->data);
  b->data = NULL;
  b->len = b->cap = 0;
}

/* One write to stdin: 0, or -errno for a failure that is not EPIPE. */
static int feed(pl_comm *c, pl_poller *w) {
  size_t left = c->input_len - c->input_off;
  /* A blocking descriptor (shared with another child) may only be given
   * what poll promised room for. */
  if (!c->in_nonblock && left > PIPE_BUF) left = PIPE_BUF;
  ssize_t n = left > 0 ? write(c->fd[0], c->input + c->input_off, left) : 0;
  if (n >= 0) {
    c->input_off += (size_t)n;
  } else if (errno == EPIPE) {
    /* The child stopped reading (`head -c 10`): like Python, the rest of
     * the input is dropped and the exchange goes on. */
    pl_poller_note_epipe(w);
    c->input_off = c->input_len;
  } else if (errno != EAGAIN && errno != EINTR) {
    return -errno;
  }
  if (c->input_off == c->input_len) {
    close_quietly(c->fd[0]);
    c->fd[0] = -1;
  }
  return 0;
}

/* Bulk transfers.  A pipe holds 64 KiB by default, so 64 MiB through
 * `cat` cost a thousand rounds of wake-ups on each side; a 1 MiB pipe
 * needs sixty-four.  A pipe grows only once it proves busy (input this
 * large, a read that found it full): the kernel charges every pipe's size
 * to the user (fs/pipe-user-pages-soft), and past that allowance new pipes
 * get a single page, so growing them all would slow the many small ones. */
#define BULK_PIPE_SIZE (1 << 20)
#define SMALL_PIPE_SIZE 65536

static void grow_pipe(pl_comm *c, int i) {
  if (c->grown[i]) return;
  c->grown[i] = 1;
  (void)fcntl(c->fd[i], F_SETPIPE_SZ, BULK_PIPE_SIZE);  /* a refusal only costs speed */
}

/* The outputs.  A small one doubles in malloc's memory.  One past
 * BULK_PIPE_SIZE moves to a big block (core/bigmem.h) of PL_BIGMEM_MIN
 * bytes or more, a kept one whole when there is one, and doubles from there
 * with mremap, which moves pages rather than copying them.  So an output
 * the size of the last big one is read into memory already faulted in:
 * growing 64 MiB from malloc's memory cost 16,000-24,000 fresh page faults
 * (and copies below malloc's mmap threshold) every time. */
int pl_comm_reserve(pl_comm *c, int i, size_t extra) {
  pl_bytes *b = &c->out[i];
  if (b->cap - b->len >= extra) return 0;
  if (extra > SIZE_MAX / 4 - b->len) return ENOMEM;
  size_t need = b->len + extra;
  if (b->cap >= PL_BIGMEM_MIN) {
    size_t cap = b->cap;
    while (cap < need) cap *= 2;
    char *data = pl_bigmem_realloc(b->data, b->cap, cap);
    if (data == NULL) return ENOMEM;
    b->data = data;
    b->cap = cap;
  } else if (need > BULK_PIPE_SIZE) {
    size_t cap;
    char *data = pl_bigmem_alloc_whole(need > PL_BIGMEM_MIN ? need : PL_BIGMEM_MIN, &cap);
    if (data == NULL) return ENOMEM;
    if (b->len > 0) memcpy(data, b->data, b->len);
    free(b->data);
    b->data = data;
    b->cap = cap;
  } else {
    return pl_bytes_reserve(b, extra);
  }
  return 0;
}

void pl_comm_free_outputs(pl_comm *c) {
  for (int i = 1; i < 3; i++) {
    pl_bytes *b = &c->out[i];
    if (b->cap >= PL_BIGMEM_MIN) pl_bigmem_free(b->data, b->cap);
    else free(b->data);
    b->data = NULL;
    b->len = b->cap = 0;
  }
}

/* One read from stdout or stderr, into the output itself: of a pipe's
 * size, or into what room a big block has left (asking it for a whole pipe
 * would double a 64 MiB block for its last megabyte, and the next output
 * would find no kept block its size). */
static int drain(pl_comm *c, int i) {
  pl_bytes *b = &c->out[i];
  size_t want = c->grown[i] && b->cap < PL_BIGMEM_MIN ? BULK_PIPE_SIZE : SMALL_PIPE_SIZE;
  if (pl_comm_reserve(c, i, want) != 0) return -ENOMEM;
  ssize_t n = read(c->fd[i], b->data + b->len, b->cap - b->len);
  if (n >= SMALL_PIPE_SIZE) grow_pipe(c, i);
  if (n > 0) {
    b->len += (size_t)n;
  } else if (n == 0) {
    close_quietly(c->fd[i]);
    c->fd[i] = -1;
  } else if (errno != EAGAIN && errno != EINTR) {
    return -errno;
  }
  return 0;
}

int pl_communicate(pl_comm *c, pl_poller *w, int64_t deadline_ns) {
  if (c->fd[0] >= 0 && c->input_off >= c->input_len) {  /* nothing to send */
    close_quietly(c->fd[0]);
    c->fd[0] = -1;
  }
  if (c->fd[0] >= 0 && c->in_nonblock && c->input_len - c->input_off > BULK_PIPE_SIZE) grow_pipe(c, 0);
  while (c->fd[0] >= 0 || c->fd[1] >= 0 || c->fd[2] >= 0) {
    struct pollfd pf[3];
    int which[3];
    nfds_t n = 0;
    for (int i = 0; i < 3; i++) {
      if (c->fd[i] < 0) continue;
      pf[n].fd = c->fd[i];
      pf[n].events = i == 0 ? POLLOUT : POLLIN;
      pf[n].revents = 0;
      which[n++] = i;
    }
    int r = pl_poller_poll(w, pf, n, deadline_ns);
    if (r == 0) return PL_ETIMEOUT;
    if (r < 0) return r;
    for (nfds_t k = 0; k < n; k++) {
      if (pf[k].revents == 0) continue;
      int i = which[k];
      int e = i == 0 ? feed(c, w) : drain(c, i);
      if (e != 0) return e;
    }
  }
  return 0;
}
