/* libc's blocking calls, for C modules that make them while holding the
 * global lock (luasocket waiting in poll/select, sleeping in nanosleep,
 * accept, recv, read, waitpid, ...).
 *
 * Built into the `parlua` program, which exports these names (and only
 * these, src/interpose.sym), and into build/libparlua_preload.so for a
 * stock lua5.4 (`LD_PRELOAD=.../libparlua_preload.so lua5.4 ...`).  A C
 * module loaded later binds its calls to these definitions; each one goes
 * to libc's own function (dlsym RTLD_NEXT) and, only when the calling
 * thread holds a global lock and runs Lua code AND the call would block,
 * gives the lock away around it.  "Would block" is decided by asking the
 * kernel without waiting first (a zero-timeout poll, WNOHANG), so a ready
 * descriptor, a zero timeout or a non-blocking socket costs one extra
 * system call at most and never a hand-over.  Threads that do not hold a
 * lock (parlua's own helper threads, nogil foreign calls) go straight
 * through.  docs/global-lock.md says why this is safe for the Lua state.
 *
 * Calls libc makes to itself (stdio's reads, system(), pclose's wait) do
 * not come here: the io/os library handles those (runtime/blockio/).
 */
#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <signal.h>
#include <stdatomic.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/select.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "blockio/interpose.h"

#define EXPORT __attribute__((visibility("default")))

static _Atomic(const parlua_interpose_ops *) attached;

EXPORT void parlua_interpose_attach(const parlua_interpose_ops *ops) {
  atomic_store(&attached, ops);
}

/* libc's definition of each interposed function, looked up once. */
enum { F_POLL, F_PPOLL, F_SELECT, F_PSELECT, F_EPOLL_WAIT, F_ACCEPT, F_ACCEPT4, F_CONNECT, F_RECV, F_RECVFROM, F_RECVMSG, F_SEND, F_SENDTO, F_SENDMSG, F_READ, F_WRITE, F_NANOSLEEP, F_CLOCK_NANOSLEEP, F_USLEEP, F_SLEEP, F_WAITPID, F_WAIT4, F_WAITID, N_LIBC };
static void *_Atomic libc_fns[N_LIBC];

static void *libc(int which, const char *name) {
  void *fn = atomic_load_explicit(&libc_fns[which], memory_order_acquire);
  if (fn == NULL) {
    fn = dlsym(RTLD_NEXT, name);
    atomic_store_explicit(&libc_fns[which], fn, memory_order_release);
  }
  return fn;
}

/* The calling thread holds a lock and runs Lua code. */
static int holding(void) {
  const parlua_interpose_ops *ops = atomic_load_explicit(&attached, memory_order_acquire);
  return ops != NULL && ops->holds();
}

static void *let_go(int what) {
  return atomic_load_explicit(&attached, memory_order_acquire)->begin(what);
}

static void take_back(void *token) {
  if (token != NULL) atomic_load_explicit(&attached, memory_order_acquire)->end(token);
}

typedef int (*poll_fn)(struct pollfd *, nfds_t, int);
static poll_fn libc_poll(void) { return (poll_fn)libc(F_POLL, "poll"); }

/* fd would not make a call for `events` wait (ready, in error, or closed). */
static int ready(int fd, short events) {
  struct pollfd p = {fd, events, 0};
  return libc_poll()(&p, 1, 0) != 0;
}

static int nonblocking(int fd) {
  int fl = fcntl(fd, F_GETFL);
  return fl >= 0 && (fl & O_NONBLOCK);
}

/* A write of n bytes to fd may wait although fd is writable: a pipe or
 * socket takes what fits and blocks for the rest. */
static int write_would_wait(int fd, size_t n) {
  if (!ready(fd, POLLOUT)) return !nonblocking(fd);
  if (n <= PIPE_BUF) return 0;
  struct stat st;
  return !(fstat(fd, &st) == 0 && S_ISREG(st.st_mode)) && !nonblocking(fd);
}

static int read_would_wait(int fd) { return !ready(fd, POLLIN) && !nonblocking(fd); }

/* ---------------------------------------------------------- waiting on fds */

EXPORT int poll(struct pollfd *fds, nfds_t n, int timeout) {
  if (timeout == 0 || !holding()) return libc_poll()(fds, n, timeout);
  int r = libc_poll()(fds, n, 0);
  if (r != 0) return r;
  void *t = let_go(PL_LIBC_IO);
  r = libc_poll()(fds, n, timeout);
  take_back(t);
  return r;
}

typedef int (*ppoll_fn)(struct pollfd *, nfds_t, const struct timespec *, const sigset_t *);
static ppoll_fn libc_ppoll(void) { return (ppoll_fn)libc(F_PPOLL, "ppoll"); }

EXPORT int ppoll(struct pollfd *fds, nfds_t n, const struct timespec *tmo, const sigset_t *mask) {
  static const struct timespec zero = {0, 0};
  if ((tmo != NULL && tmo->tv_sec == 0 && tmo->tv_nsec == 0) || !holding())
    return libc_ppoll()(fds, n, tmo, mask);
  int r = libc_ppoll()(fds, n, &zero, mask);
  if (r != 0) return r;
  void *t = let_go(PL_LIBC_IO);
  r = libc_ppoll()(fds, n, tmo, mask);
  take_back(t);
  return r;
}

/* select and pselect change their sets: probe on copies. */
static int probe_sets(int nfds, fd_set *r, fd_set *w, fd_set *e,
                      int (*probe)(int, fd_set *, fd_set *, fd_set *)) {
  fd_set rc, wc, ec;
  if (r != NULL) rc = *r;
  if (w != NULL) wc = *w;
  if (e != NULL) ec = *e;
  int n = probe(nfds, r ? &rc : NULL, w ? &wc : NULL, e ? &ec : NULL);
  if (n > 0) {
    if (r != NULL) *r = rc;
    if (w != NULL) *w = wc;
    if (e != NULL) *e = ec;
  }
  return n;
}

typedef int (*select_fn)(int, fd_set *, fd_set *, fd_set *, struct timeval *);
static select_fn libc_select(void) { return (select_fn)libc(F_SELECT, "select"); }

static int select_now(int nfds, fd_set *r, fd_set *w, fd_set *e) {
  struct timeval zero = {0, 0};
  return libc_select()(nfds, r, w, e, &zero);
}

EXPORT int select(int nfds, fd_set *r, fd_set *w, fd_set *e, struct timeval *tv) {
  if ((tv != NULL && tv->tv_sec == 0 && tv->tv_usec == 0) || !holding())
    return libc_select()(nfds, r, w, e, tv);
  int n = probe_sets(nfds, r, w, e, select_now);
  if (n != 0) return n;
  void *t = let_go(PL_LIBC_IO);
  n = libc_select()(nfds, r, w, e, tv);
  take_back(t);
  return n;
}

typedef int (*pselect_fn)(int, fd_set *, fd_set *, fd_set *, const struct timespec *,
                          const sigset_t *);
static pselect_fn libc_pselect(void) { return (pselect_fn)libc(F_PSELECT, "pselect"); }

static int pselect_now(int nfds, fd_set *r, fd_set *w, fd_set *e) {
  static const struct timespec zero = {0, 0};
  return libc_pselect()(nfds, r, w, e, &zero, NULL);
}

EXPORT int pselect(int nfds, fd_set *r, fd_set *w, fd_set *e, const struct timespec *tmo,
                   const sigset_t *mask) {
  if ((tmo != NULL && tmo->tv_sec == 0 && tmo->tv_nsec == 0) || !holding())
    return libc_pselect()(nfds, r, w, e, tmo, mask);
  int n = probe_sets(nfds, r, w, e, pselect_now);
  if (n != 0) return n;
  void *t = let_go(PL_LIBC_IO);
  n = libc_pselect()(nfds, r, w, e, tmo, mask);
  take_back(t);
  return n;
}

typedef int (*epoll_wait_fn)(int, struct epoll_event *, int, int);
static epoll_wait_fn libc_epoll_wait(void) { return (epoll_wait_fn)libc(F_EPOLL_WAIT, "epoll_wait"); }

EXPORT int epoll_wait(int epfd, struct epoll_event *ev, int max, int timeout) {
  if (timeout == 0 || !holding()) return libc_epoll_wait()(epfd, ev, max, timeout);
  int r = libc_epoll_wait()(epfd, ev, max, 0);
  if (r != 0) return r;
  void *t = let_go(PL_LIBC_IO);
  r = libc_epoll_wait()(epfd, ev, max, timeout);
  take_back(t);
  return r;
}

/* ---------------------------------------------------------- sockets, fds */

typedef int (*accept_fn)(int, struct sockaddr *, socklen_t *);
static accept_fn libc_accept(void) { return (accept_fn)libc(F_ACCEPT, "accept"); }

EXPORT int accept(int fd, struct sockaddr *addr, socklen_t *len) {
  if (!holding() || !read_would_wait(fd)) return libc_accept()(fd, addr, len);
  void *t = let_go(PL_LIBC_IO);
  int r = libc_accept()(fd, addr, len);
  take_back(t);
  return r;
}

typedef int (*accept4_fn)(int, struct sockaddr *, socklen_t *, int);
static accept4_fn libc_accept4(void) { return (accept4_fn)libc(F_ACCEPT4, "accept4"); }

EXPORT int accept4(int fd, struct sockaddr *addr, socklen_t *len, int flags) {
  if (!holding() || !read_would_wait(fd)) return libc_accept4()(fd, addr, len, flags);
  void *t = let_go(PL_LIBC_IO);
  int r = libc_accept4()(fd, addr, len, flags);
  take_back(t);
  return r;
}

typedef int (*connect_fn)(int, const struct sockaddr *, socklen_t);
static connect_fn libc_connect(void) { return (connect_fn)libc(F_CONNECT, "connect"); }

/* A blocking connect cannot be asked beforehand; a non-blocking one never
 * waits. */
EXPORT int connect(int fd, const struct sockaddr *addr, socklen_t len) {
  if (!holding() || nonblocking(fd)) return libc_connect()(fd, addr, len);
  void *t = let_go(PL_LIBC_IO);
  int r = libc_connect()(fd, addr, len);
  take_back(t);
  return r;
}

typedef ssize_t (*recv_fn)(int, void *, size_t, int);
static recv_fn libc_recv(void) { return (recv_fn)libc(F_RECV, "recv"); }

EXPORT ssize_t recv(int fd, void *buf, size_t n, int flags) {
  if (!holding() || (flags & MSG_DONTWAIT) || !read_would_wait(fd))
    return libc_recv()(fd, buf, n, flags);
  void *t = let_go(PL_LIBC_IO);
  ssize_t r = libc_recv()(fd, buf, n, flags);
  take_back(t);
  return r;
}

typedef ssize_t (*recvfrom_fn)(int, void *, size_t, int, struct sockaddr *, socklen_t *);
static recvfrom_fn libc_recvfrom(void) { return (recvfrom_fn)libc(F_RECVFROM, "recvfrom"); }

EXPORT ssize_t recvfrom(int fd, void *buf, size_t n, int flags, struct sockaddr *from,
                        socklen_t *len) {
  if (!holding() || (flags & MSG_DONTWAIT) || !read_would_wait(fd))
    return libc_recvfrom()(fd, buf, n, flags, from, len);
  void *t = let_go(PL_LIBC_IO);
  ssize_t r = libc_recvfrom()(fd, buf, n, flags, from, len);
  take_back(t);
  return r;
}

typedef ssize_t (*recvmsg_fn)(int, struct msghdr *, int);
static recvmsg_fn libc_recvmsg(void) { return (recvmsg_fn)libc(F_RECVMSG, "recvmsg"); }

EXPORT ssize_t recvmsg(int fd, struct msghdr *msg, int flags) {
  if (!holding() || (flags & MSG_DONTWAIT) || !read_would_wait(fd))
    return libc_recvmsg()(fd, msg, flags);
  void *t = let_go(PL_LIBC_IO);
  ssize_t r = libc_recvmsg()(fd, msg, flags);
  take_back(t);
  return r;
}

typedef ssize_t (*send_fn)(int, const void *, size_t, int);
static send_fn libc_send(void) { return (send_fn)libc(F_SEND, "send"); }

EXPORT ssize_t send(int fd, const void *buf, size_t n, int flags) {
  if (!holding() || (flags & MSG_DONTWAIT) || !write_would_wait(fd, n))
    return libc_send()(fd, buf, n, flags);
  void *t = let_go(PL_LIBC_IO);
  ssize_t r = libc_send()(fd, buf, n, flags);
  take_back(t);
  return r;
}

typedef ssize_t (*sendto_fn)(int, const void *, size_t, int, const struct sockaddr *, socklen_t);
static sendto_fn libc_sendto(void) { return (sendto_fn)libc(F_SENDTO, "sendto"); }

EXPORT ssize_t sendto(int fd, const void *buf, size_t n, int flags, const struct sockaddr *to,
                      socklen_t len) {
  if (!holding() || (flags & MSG_DONTWAIT) || !write_would_wait(fd, n))
    return libc_sendto()(fd, buf, n, flags, to, len);
  void *t = let_go(PL_LIBC_IO);
  ssize_t r = libc_sendto()(fd, buf, n, flags, to, len);
  take_back(t);
  return r;
}

typedef ssize_t (*sendmsg_fn)(int, const struct msghdr *, int);
static sendmsg_fn libc_sendmsg(void) { return (sendmsg_fn)libc(F_SENDMSG, "sendmsg"); }

static size_t msg_bytes(const struct msghdr *msg) {
  size_t n = 0;
  for (size_t i = 0; i < (size_t)msg->msg_iovlen; i++) n += msg->msg_iov[i].iov_len;
  return n;
}

EXPORT ssize_t sendmsg(int fd, const struct msghdr *msg, int flags) {
  if (!holding() || (flags & MSG_DONTWAIT) || !write_would_wait(fd, msg_bytes(msg)))
    return libc_sendmsg()(fd, msg, flags);
  void *t = let_go(PL_LIBC_IO);
  ssize_t r = libc_sendmsg()(fd, msg, flags);
  take_back(t);
  return r;
}

typedef ssize_t (*read_fn)(int, void *, size_t);
static read_fn libc_read(void) { return (read_fn)libc(F_READ, "read"); }

EXPORT ssize_t read(int fd, void *buf, size_t n) {
  if (!holding() || !read_would_wait(fd)) return libc_read()(fd, buf, n);
  void *t = let_go(PL_LIBC_IO);
  ssize_t r = libc_read()(fd, buf, n);
  take_back(t);
  return r;
}

typedef ssize_t (*write_fn)(int, const void *, size_t);
static write_fn libc_write(void) { return (write_fn)libc(F_WRITE, "write"); }

EXPORT ssize_t write(int fd, const void *buf, size_t n) {
  if (!holding() || !write_would_wait(fd, n)) return libc_write()(fd, buf, n);
  void *t = let_go(PL_LIBC_IO);
  ssize_t r = libc_write()(fd, buf, n);
  take_back(t);
  return r;
}

/* ---------------------------------------------------------- sleeping */

typedef int (*nanosleep_fn)(const struct timespec *, struct timespec *);
static nanosleep_fn libc_nanosleep(void) { return (nanosleep_fn)libc(F_NANOSLEEP, "nanosleep"); }

EXPORT int nanosleep(const struct timespec *req, struct timespec *rem) {
  if ((req != NULL && req->tv_sec == 0 && req->tv_nsec == 0) || !holding())
    return libc_nanosleep()(req, rem);
  void *t = let_go(PL_LIBC_SLEEP);
  int r = libc_nanosleep()(req, rem);
  take_back(t);
  return r;
}

typedef int (*clock_nanosleep_fn)(clockid_t, int, const struct timespec *, struct timespec *);
static clock_nanosleep_fn libc_clock_nanosleep(void) { return (clock_nanosleep_fn)libc(F_CLOCK_NANOSLEEP, "clock_nanosleep"); }

EXPORT int clock_nanosleep(clockid_t clk, int flags, const struct timespec *req,
                           struct timespec *rem) {
  int zero = !(flags & TIMER_ABSTIME) && req != NULL && req->tv_sec == 0 && req->tv_nsec == 0;
  if (zero || !holding()) return libc_clock_nanosleep()(clk, flags, req, rem);
  void *t = let_go(PL_LIBC_SLEEP);
  int r = libc_clock_nanosleep()(clk, flags, req, rem);
  take_back(t);
  return r;
}

typedef int (*usleep_fn)(useconds_t);
static usleep_fn libc_usleep(void) { return (usleep_fn)libc(F_USLEEP, "usleep"); }

EXPORT int usleep(useconds_t us) {
  if (us == 0 || !holding()) return libc_usleep()(us);
  void *t = let_go(PL_LIBC_SLEEP);
  int r = libc_usleep()(us);
  take_back(t);
  return r;
}

typedef unsigned (*sleep_fn)(unsigned);
static sleep_fn libc_sleep(void) { return (sleep_fn)libc(F_SLEEP, "sleep"); }

EXPORT unsigned sleep(unsigned s) {
  if (s == 0 || !holding()) return libc_sleep()(s);
  void *t = let_go(PL_LIBC_SLEEP);
  unsigned r = libc_sleep()(s);
  take_back(t);
  return r;
}

/* ---------------------------------------------------------- children */

typedef pid_t (*waitpid_fn)(pid_t, int *, int);
static waitpid_fn libc_waitpid(void) { return (waitpid_fn)libc(F_WAITPID, "waitpid"); }

/* Asked first with WNOHANG: a child already done is reaped at once. */
EXPORT pid_t waitpid(pid_t pid, int *status, int options) {
  if ((options & WNOHANG) || !holding()) return libc_waitpid()(pid, status, options);
  pid_t r = libc_waitpid()(pid, status, options | WNOHANG);
  if (r != 0) return r;
  void *t = let_go(PL_LIBC_CHILD);
  r = libc_waitpid()(pid, status, options);
  take_back(t);
  return r;
}

EXPORT pid_t wait(int *status) { return waitpid(-1, status, 0); }

typedef pid_t (*wait4_fn)(pid_t, int *, int, struct rusage *);
static wait4_fn libc_wait4(void) { return (wait4_fn)libc(F_WAIT4, "wait4"); }

EXPORT pid_t wait4(pid_t pid, int *status, int options, struct rusage *ru) {
  if ((options & WNOHANG) || !holding()) return libc_wait4()(pid, status, options, ru);
  pid_t r = libc_wait4()(pid, status, options | WNOHANG, ru);
  if (r != 0) return r;
  void *t = let_go(PL_LIBC_CHILD);
  r = libc_wait4()(pid, status, options, ru);
  take_back(t);
  return r;
}

typedef int (*waitid_fn)(idtype_t, id_t, siginfo_t *, int);
static waitid_fn libc_waitid(void) { return (waitid_fn)libc(F_WAITID, "waitid"); }

EXPORT int waitid(idtype_t type, id_t id, siginfo_t *info, int options) {
  if ((options & WNOHANG) || !holding()) return libc_waitid()(type, id, info, options);
  info->si_pid = 0;
  int r = libc_waitid()(type, id, info, options | WNOHANG);
  if (r != 0 || info->si_pid != 0) return r;
  void *t = let_go(PL_LIBC_CHILD);
  r = libc_waitid()(type, id, info, options);
  take_back(t);
  return r;
}
