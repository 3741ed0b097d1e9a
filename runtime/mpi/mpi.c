/* This process's side of MPI: loading the transport, initialising MPI
 * once, the free server ranks of COMM_WORLD (see mpi.h). */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "lauxlib.h"
#include "core/background.h"
#include "core/clock.h"
#include "core/tstate.h"
#include "mpi/mpi.h"
#include "mpi/mpiwire.h"
#include "pool/executor.h"

#define MISSING "kind mpi needs Open MPI: apt-get install libopenmpi-dev openmpi-bin"

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const pl_mpi_transport *transport;  /* guarded by mu; set once */
static pl_mpi_info info;                   /* guarded by mu; set with transport */
static char init_error[PL_MPI_ERRLEN];     /* guarded by mu: a failed init, for good */
static atomic_int lost;

/* Server ranks by communicator: COMM_WORLD's, then each spawned group's. */
enum { R_TAKEN, R_FREE, R_DEAD };
typedef struct group {
  int comm, n;
  char *state;               /* R_* by rank */
  char *hosts, *hostfile;    /* the placement it was spawned with */
} group;
static group *groups;        /* guarded by mu */
static int ngroups;          /* guarded by mu */
static pthread_mutex_t spawn_mu = PTHREAD_MUTEX_INITIALIZER;  /* one spawn at a time */
static char spawn_stuck[PL_MPI_ERRLEN];  /* guarded by spawn_mu: a spawn never returned */

/* A spawn runs on a thread of its own, so that one that never returns
 * (seen here: a spawned process stuck in PMIx_Init, now and then, on a
 * loaded machine) cannot hang its pool: after the pool's spawn_timeout
 * (PL_MPI_SPAWN_TIMEOUT_NS unless it says otherwise) the pool gets an
 * error, MPI is given up (it could not be finalised) and no other spawn
 * is tried.  The job is shared with that thread, which frees it. */
typedef struct spawn_job {
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int done, abandoned;          /* guarded by mu */
  int handle;
  char err[PL_MPI_ERRLEN];
  const pl_mpi_transport *t;
  char *argv[3];
  char prog[PATH_MAX];
  int n;
  char *hosts, *hostfile;
} spawn_job;

static void job_free(spawn_job *j) {
  free(j->hosts);
  free(j->hostfile);
  pthread_cond_destroy(&j->cv);
  pthread_mutex_destroy(&j->mu);
  free(j);
}

static void *spawn_main(void *ud) {
  spawn_job *j = ud;
  int h = j->t->spawn(j->argv, j->n, j->hosts, j->hostfile, j->err);
  pthread_mutex_lock(&j->mu);
  j->handle = h;
  j->done = 1;
  int abandoned = j->abandoned;
  pthread_cond_signal(&j->cv);
  pthread_mutex_unlock(&j->mu);
  if (abandoned) {
    if (h >= 0) j->t->release(h, 0);
    job_free(j);
  }
  return NULL;
}

/* spawn_mu held: spawn n servers; the handle, or -1 with err. */
static int spawn_with_deadline(const pl_mpi_transport *t, const char *prog, int n, const char *hosts,
                               const char *hostfile, int64_t timeout_ns, char *err) {
  if (spawn_stuck[0] != '\0') {
    snprintf(err, PL_MPI_ERRLEN, "%s", spawn_stuck);
    return -1;
  }
  spawn_job *j = calloc(1, sizeof *j);
  if (j == NULL) {
    snprintf(err, PL_MPI_ERRLEN, "not enough memory to spawn the mpi workers");
    return -1;
  }
  pthread_mutex_init(&j->mu, NULL);
  pl_cond_init(&j->cv);
  j->t = t;
  snprintf(j->prog, sizeof j->prog, "%s", prog);
  j->argv[0] = j->prog;
  j->argv[1] = "--mpi-worker";
  j->n = n;
  j->hosts = hosts != NULL ? strdup(hosts) : NULL;
  j->hostfile = hostfile != NULL ? strdup(hostfile) : NULL;
  if (pl_background_thread(spawn_main, j, 0) != 0) {
    job_free(j);
    snprintf(err, PL_MPI_ERRLEN, "cannot start a thread to spawn the mpi workers");
    return -1;
  }
  struct timespec until = pl_timespec_of(pl_now_ns() + timeout_ns);
  pthread_mutex_lock(&j->mu);
  while (!j->done && pthread_cond_timedwait(&j->cv, &j->mu, &until) == 0) {
  }
  int done = j->done, h = j->handle;
  if (done) snprintf(err, PL_MPI_ERRLEN, "%s", j->err);
  else j->abandoned = 1;
  pthread_mutex_unlock(&j->mu);
  if (done) {
    job_free(j);
    return h;
  }
  pl_mpi_mark_lost();
  snprintf(spawn_stuck, sizeof spawn_stuck, "MPI_Comm_spawn did not finish within %g s (the pool's "
           "spawn_timeout): Open MPI is stuck, and kind mpi is given up in this process",
           (double)timeout_ns / 1e9);
  snprintf(err, PL_MPI_ERRLEN, "%s", spawn_stuck);
  return -1;
}

/* ---- loading ---------------------------------------------------------- */

/* The directory of the file that holds this code, with a slash. */
static int own_dir(char *dir, size_t n) {
  Dl_info di;
  if (dladdr((void *)&own_dir, &di) == 0 || di.dli_fname == NULL) return -1;
  char path[PATH_MAX];
  if (strchr(di.dli_fname, '/') == NULL) {  /* the main program, by name */
    ssize_t k = readlink("/proc/self/exe", path, sizeof path - 1);
    if (k <= 0) return -1;
    path[k] = '\0';
  } else {
    snprintf(path, sizeof path, "%s", di.dli_fname);
  }
  char *slash = strrchr(path, '/');
  if (slash == NULL) return -1;
  slash[1] = '\0';
  snprintf(dir, n, "%s", path);
  return 0;
}

/* [-0, +0] The module's path: 0, or -1 when there is none to try. */
static int module_path(lua_State *L, char *path, size_t n) {
  const char *env = getenv("PARLUA_MPI_MODULE");
  if (env != NULL && env[0] != '\0') {
    snprintf(path, n, "%s", env);
    return 0;
  }
  char dir[PATH_MAX - 32];
  if (own_dir(dir, sizeof dir) == 0) {
    snprintf(path, n, "%sparlua_mpi.so", dir);
    if (access(path, R_OK) == 0) return 0;
  }
  if (L == NULL) return -1;
  int top = lua_gettop(L);
  int found = 0;
  if (lua_getglobal(L, "package") == LUA_TTABLE && lua_getfield(L, -1, "searchpath") == LUA_TFUNCTION) {
    lua_pushliteral(L, "parlua_mpi");
    lua_getfield(L, -3, "cpath");
    if (lua_pcall(L, 2, 1, 0) == LUA_OK && lua_type(L, -1) == LUA_TSTRING) {
      snprintf(path, n, "%s", lua_tostring(L, -1));
      found = 1;
    }
  }
  lua_settop(L, top);
  return found ? 0 : -1;
}

/* mu held: a new group of n ranks of comm, all free (rank 0 too, unless
 * it is COMM_WORLD's, which runs the script).  0, or -1 out of memory
 * (nothing added). */
static int add_group_locked(int comm, int n, const char *hosts, const char *hostfile) {
  group *g = realloc(groups, (size_t)(ngroups + 1) * sizeof *g);
  if (g == NULL) return -1;
  groups = g;
  g = &groups[ngroups];
  g->comm = comm;
  g->n = n;
  g->state = malloc((size_t)n + 1);
  g->hosts = hosts != NULL ? strdup(hosts) : NULL;
  g->hostfile = hostfile != NULL ? strdup(hostfile) : NULL;
  if (g->state == NULL || (hosts != NULL && g->hosts == NULL) || (hostfile != NULL && g->hostfile == NULL)) {
    free(g->state);
    free(g->hosts);
    free(g->hostfile);
    return -1;
  }
  memset(g->state, R_FREE, (size_t)n);
  if (comm == PL_MPI_WORLD) g->state[0] = R_TAKEN;
  ngroups++;
  return 0;
}

static int same(const char *a, const char *b) {
  return (a == NULL && b == NULL) || (a != NULL && b != NULL && strcmp(a, b) == 0);
}

/* At exit: the servers leave (STOP), the spawned groups are disconnected,
 * MPI is finalised -- unless a rank died, when all of that would wait for
 * it forever. */
static void finalize_at_exit(void) {
  const pl_mpi_transport *t = pl_mpi_loaded();
  if (t == NULL || atomic_load(&lost)) return;
  char err[PL_MPI_ERRLEN];
  pthread_mutex_lock(&mu);
  for (int i = 0; i < ngroups; i++) {
    group *g = &groups[i];
    for (int r = 0; r < g->n; r++)
      if (!(g->comm == PL_MPI_WORLD && r == 0)) (void)t->send(g->comm, r, PL_MPI_TAG_STOP, "", 0, NULL, NULL, err);
    if (g->comm != PL_MPI_WORLD) t->release(g->comm, 1);
  }
  pthread_mutex_unlock(&mu);
  t->finalize();
}

/* mu held: load and initialise, once. */
static const pl_mpi_transport *load_locked(lua_State *L, char *err) {
  if (transport != NULL) return transport;
  if (init_error[0] != '\0') {
    snprintf(err, PL_MPI_ERRLEN, "%s", init_error);
    return NULL;
  }
  char path[PATH_MAX];
  if (module_path(L, path, sizeof path) != 0) {
    snprintf(err, PL_MPI_ERRLEN, "%s (parlua_mpi.so was not built)", MISSING);
    return NULL;
  }
  void *h = dlopen(path, RTLD_NOW | RTLD_GLOBAL);
  if (h == NULL) {
    snprintf(err, PL_MPI_ERRLEN, "%s (%s)", MISSING, dlerror());
    return NULL;
  }
  pl_mpi_open_fn open = (pl_mpi_open_fn)dlsym(h, PL_MPI_OPEN_SYMBOL);
  const pl_mpi_transport *t = open != NULL ? open() : NULL;
  if (t == NULL || t->abi != PL_MPI_ABI) {
    snprintf(err, PL_MPI_ERRLEN, "%.200s is not the mpi module of this parlua", path);
    return NULL;
  }
  if (t->init(&info, err) != 0) {
    snprintf(init_error, sizeof init_error, "%s", err);
    return NULL;
  }
  pl_pin_library();  /* the atexit handler stays mapped */
  atexit(finalize_at_exit);
  transport = t;
  return t;
}

const pl_mpi_transport *pl_mpi_get(lua_State *L, pl_mpi_info *out, char *err) {
  pthread_mutex_lock(&mu);
  const pl_mpi_transport *t = load_locked(L, err);
  if (t != NULL && out != NULL) *out = info;
  pthread_mutex_unlock(&mu);
  return t;
}

const pl_mpi_transport *pl_mpi_loaded(void) {
  pthread_mutex_lock(&mu);
  const pl_mpi_transport *t = transport;
  pthread_mutex_unlock(&mu);
  return t;
}

/* ---- ranks ------------------------------------------------------------ */

/* mu held: take a free rank of a group that matches. */
static int take_locked(int spawn, const char *hosts, const char *hostfile, int *comm, int *rank) {
  for (int i = 0; i < ngroups; i++) {
    group *g = &groups[i];
    if ((g->comm == PL_MPI_WORLD) == spawn || !same(g->hosts, hosts) || !same(g->hostfile, hostfile))
      continue;
    for (int r = 0; r < g->n; r++)
      if (g->state[r] == R_FREE) {
        g->state[r] = R_TAKEN;
        *comm = g->comm;
        *rank = r;
        return 1;
      }
  }
  return 0;
}

int pl_mpi_claim(int spawn, const char *hosts, const char *hostfile, int want, int64_t timeout_ns,
                 int *comm, int *rank, char *err) {
  const pl_mpi_transport *t = pl_mpi_loaded();
  if (t == NULL) {
    snprintf(err, PL_MPI_ERRLEN, "MPI is not initialised");
    return -1;
  }
  pthread_mutex_lock(&mu);
  int got = take_locked(spawn, hosts, hostfile, comm, rank);
  pthread_mutex_unlock(&mu);
  if (got) return 0;
  if (!spawn) {
    snprintf(err, PL_MPI_ERRLEN, "no free mpi rank: the %d ranks mpiexec started to serve pools are "
             "all taken by other pools", pl_mpi_world_servers());
    return -1;
  }
  pthread_mutex_lock(&spawn_mu);
  pthread_mutex_lock(&mu);
  got = take_locked(spawn, hosts, hostfile, comm, rank);  /* another worker's spawn may have made some */
  pthread_mutex_unlock(&mu);
  if (!got) {
    char prog[PATH_MAX];
    int h = -1;
    if (pl_mpi_server_program(prog, sizeof prog, err) == 0)
      h = spawn_with_deadline(t, prog, want > 0 ? want : 1, hosts, hostfile, timeout_ns, err);
    if (h >= 0) {
      pthread_mutex_lock(&mu);
      int added = add_group_locked(h, want > 0 ? want : 1, hosts, hostfile) == 0;
      got = added && take_locked(spawn, hosts, hostfile, comm, rank);
      pthread_mutex_unlock(&mu);
      if (!added) {  /* they are told to leave, as at exit */
        for (int r = 0; r < (want > 0 ? want : 1); r++) (void)t->send(h, r, PL_MPI_TAG_STOP, "", 0, NULL, NULL, err);
        t->release(h, 1);
        snprintf(err, PL_MPI_ERRLEN, "not enough memory to keep the spawned mpi workers");
      }
    }
  }
  pthread_mutex_unlock(&spawn_mu);
  return got ? 0 : -1;
}

void pl_mpi_release(int comm, int rank, int dead) {
  pthread_mutex_lock(&mu);
  for (int i = 0; i < ngroups; i++)
    if (groups[i].comm == comm && rank >= 0 && rank < groups[i].n) groups[i].state[rank] = dead ? R_DEAD : R_FREE;
  pthread_mutex_unlock(&mu);
}

int pl_mpi_world_servers(void) {
  pthread_mutex_lock(&mu);
  int n = ngroups > 0 && groups[0].comm == PL_MPI_WORLD ? groups[0].n - 1 : 0;
  pthread_mutex_unlock(&mu);
  return n;
}

void pl_mpi_mark_lost(void) { atomic_store(&lost, 1); }

int pl_mpi_server_program(char *path, size_t n, char *err) {
  char self[PATH_MAX];
  ssize_t k = readlink("/proc/self/exe", self, sizeof self - 1);
  if (k > 0) {
    self[k] = '\0';
    const char *base = strrchr(self, '/');
    if (base != NULL && strcmp(base + 1, "parlua") == 0) {  /* the parlua program itself */
      snprintf(path, n, "%s", self);
      return 0;
    }
  }
  char dir[PATH_MAX - 32] = "";
  if (own_dir(dir, sizeof dir) == 0) {
    snprintf(path, n, "%sparlua", dir);
    if (access(path, X_OK) == 0) return 0;
    snprintf(path, n, "%s../../../bin/parlua", dir);  /* installed: lib/lua/5.4/parlua.so */
    if (access(path, X_OK) == 0) return 0;
  }
  snprintf(err, PL_MPI_ERRLEN, "cannot find the parlua program to spawn as mpi workers "
                               "(looked beside %.150s)", dir);
  return -1;
}

/* ---- the program's start --------------------------------------------- */

int pl_mpi_serve_if_worker(const luaL_Reg *modules) {
  if (getenv("OMPI_COMM_WORLD_SIZE") == NULL && getenv("PMIX_RANK") == NULL) return -1;
  char err[PL_MPI_ERRLEN];
  pl_mpi_info in;
  const pl_mpi_transport *t = pl_mpi_get(NULL, &in, err);
  if (t == NULL) {
    if (getenv("OMPI_COMM_WORLD_SIZE") != NULL && atoi(getenv("OMPI_COMM_WORLD_SIZE")) > 1) {
      fprintf(stderr, "parlua: started by mpiexec, but %s\n", err);
      return 1;
    }
    return -1;  /* one rank and no MPI: a plain run */
  }
  if (in.has_parent) return pl_mpi_serve(t, PL_MPI_PARENT, 0, in.thread_level, modules);
  if (in.rank > 0) return pl_mpi_serve(t, PL_MPI_WORLD, 0, in.thread_level, modules);
  /* Rank 0 runs the script; the other ranks of COMM_WORLD serve it, as
   * they run this same function.  (Only then: under mpiexec, a stock
   * lua5.4 runs the script on every rank, and its pools spawn.) */
  pthread_mutex_lock(&mu);
  int failed = in.size > 1 && ngroups == 0 && add_group_locked(PL_MPI_WORLD, in.size, NULL, NULL) != 0;
  pthread_mutex_unlock(&mu);
  if (failed) {
    fprintf(stderr, "parlua: not enough memory to keep mpiexec's %d server ranks\n", in.size - 1);
    return 1;
  }
  return -1;
}
