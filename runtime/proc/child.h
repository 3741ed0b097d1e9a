/* Private to the parlua runtime: child processes.
 *
 * Three small engines with no knowledge of Lua:
 *   - pl_spawn starts a program with posix_spawn (glibc: clone(CLONE_VFORK),
 *     so starting stays fast however large the parent is), wiring its
 *     stdin/stdout/stderr to new pipes, /dev/null or given descriptors, in a
 *     given directory and environment, optionally in a new session or
 *     process group.  The child gets an empty signal mask,
 *     default dispositions for the signals a host or the runtime changes for
 *     its own reasons, and no descriptor but 0, 1 and 2.
 *   - pl_proc waits for one specific child (waitpid on its pid, never -1;
 *     pidfd_open + poll where the kernel has it), so a host's own children
 *     are never reaped by us.
 *   - pl_communicate feeds a child's stdin and drains its stdout and stderr
 *     at once with poll, so no pipe filling up can deadlock it.
 *
 * Every wait goes through a pl_poller (core/wait.h): poll that a forced
 * cancel or an interrupt of the waiting thread ends at once.  None of
 * these functions may be called holding the global lock.
 */
#ifndef PL_CHILD_H
#define PL_CHILD_H

#include <poll.h>
#include <pthread.h>
#include <spawn.h>
#include <signal.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include "core/tstate.h"
#include "core/wait.h"

/* ---- starting ---- */

enum { PL_IO_INHERIT, PL_IO_PIPE, PL_IO_DEVNULL, PL_IO_FD, PL_IO_STDOUT };

typedef struct pl_io {
  int how;  /* PL_IO_*; PL_IO_STDOUT only for stderr */
  int fd;   /* PL_IO_FD: the descriptor the child gets (not taken over) */
} pl_io;

/* Where the child's process group is (Python's start_new_session and
 * process_group). */
enum {
  PL_GROUP_INHERIT,      /* ours */
  PL_GROUP_SESSION,      /* a new session, so a new group, both led by the child */
  PL_GROUP_NEW,          /* a new group led by the child (process_group = 0) */
  PL_GROUP_JOIN          /* the existing group `pgid` of our session */
};

typedef struct pl_spawn_req {
  char *const *argv;     /* argv[0] is looked up in this process's PATH */
  char *const *envp;     /* NULL: inherit the environment */
  const char *cwd;       /* NULL: inherit */
  pl_io io[3];
  int group;             /* PL_GROUP_* */
  pid_t pgid;            /* PL_GROUP_JOIN only */
} pl_spawn_req;

typedef struct pl_spawn_res {
  pid_t pid;
  int pidfd;             /* -1 when the kernel has no pidfd_open */
  int fds[3];            /* our ends of PL_IO_PIPE streams, else -1; O_CLOEXEC|O_NONBLOCK */
} pl_spawn_res;

/* 0, or an errno (nothing is left open or running then).  A failing chdir
 * and a failing exec report alike; pl_spawn_check_cwd tells them apart. */
int pl_spawn(const pl_spawn_req *req, pl_spawn_res *res);
/* 0 when `cwd` could be changed to, else the errno chdir would give. */
int pl_spawn_check_cwd(const char *cwd);

/* ---- waiting for a child ---- */

typedef struct pl_proc {
  pid_t pid;
  int pidfd;             /* guarded by mu; -1 when unsupported or closed */
  pthread_mutex_t mu;    /* guards reaped, status: two waiters never both reap */
  int reaped;
  int status;            /* the waitpid status; 0 when someone else reaped it */
  int waiters;           /* threads polling pidfd: it is closed after the last */
  int leads_group;       /* its pid is also its process group's id (set once, at the start) */
} pl_proc;

void pl_proc_init(pl_proc *p, pid_t pid, int pidfd);
void pl_proc_destroy(pl_proc *p);
/* 1 when the child has ended (and is reaped now), 0 while it runs. */
int pl_proc_poll(pl_proc *p);
/* Wait for the end until deadline_ns.  PL_OK (ended),
 * PL_ETIMEOUT or PL_ECANCELLED.  `w` may have ts == NULL for a
 * wait nothing can cancel. */
int pl_proc_wait(pl_proc *p, pl_poller *w, int64_t deadline_ns);
/* Send `sig` unless the child is already reaped (its pid may be reused
 * then).  0, or an errno. */
int pl_proc_signal(pl_proc *p, int sig);
/* Send `sig` to the child's whole process group; only for a child that
 * leads one, and also once it has ended (its group's other members live
 * on).  0 (an empty group included), or an errno. */
int pl_proc_signal_group(pl_proc *p, int sig);
/* Stop the child the runtime's way: its whole group when it leads one
 * (a timeout's kill, Ctrl-C), else the child alone.  0, or an errno. */
int pl_proc_stop(pl_proc *p, int sig);
/* After pl_proc_stop: until deadline_ns, wait for the child to end and,
 * when it leads a group, for the group to empty; then SIGKILL what is
 * left and reap the child.  Nothing can cancel it. */
void pl_proc_finish_stop(pl_proc *p, int64_t deadline_ns);
/* Python's convention: exit status, or minus the signal number. */
int pl_proc_returncode(const pl_proc *p);

/* Children nobody waits for any more: reap them without blocking, and
 * hand the ones still running to a detached thread that waits for each
 * by its pid.  `pids` is taken over. */
int pl_reap_nohang(pid_t pid);  /* 1 when gone (reaped now or by another) */
void pl_reap_in_background(pid_t *pids, size_t n);

/* ---- communicate ---- */

typedef struct pl_bytes {
  char *data;
  size_t len, cap;
} pl_bytes;

typedef struct pl_comm {
  int fd[3];             /* stdin (write end), stdout, stderr; -1 when done */
  int in_nonblock;       /* fd[0] is O_NONBLOCK (else writes of PIPE_BUF) */
  const char *input;     /* stays valid across calls (anchored by the caller) */
  size_t input_len, input_off;
  pl_bytes out[3];       /* out[1], out[2]: what stdout and stderr gave */
  int grown[3];          /* the pipe was given a bulk size (child.c) */
} pl_comm;

/* Exchange data until stdin is fully written and stdout/stderr reached
 * EOF; each fd is closed (and set to -1) as soon as it is done.  Resumable
 * after a timeout or cancel.  0, PL_ETIMEOUT, PL_ECANCELLED, or
 * -errno (ENOMEM included). */
int pl_communicate(pl_comm *c, pl_poller *w, int64_t deadline_ns);

/* Room for `extra` more bytes in output i (1 stdout, 2 stderr): 0, or
 * ENOMEM.  The outputs' memory is freed with pl_comm_free_outputs only. */
int pl_comm_reserve(pl_comm *c, int i, size_t extra);
void pl_comm_free_outputs(pl_comm *c);

int pl_bytes_reserve(pl_bytes *b, size_t extra);
void pl_bytes_free(pl_bytes *b);

#endif
