/* This process's side of MPI: loading the transport, initialising MPI
 * once, the free server ranks of COMM_WORLD (see mpi.h). */
#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <poll.h>
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
#include "mpi/mpi.h"
#include "mpi/mpiwire.h"
#include "pool/executor.h"

#define MISSING "kind mpi needs Open MPI: apt-get install libopenmpi-dev openmpi-bin"
#define SPIN_NS (50 * 1000LL)
#define MAX_NAP_NS (1000 * 1000LL)

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;
static const pl_mpi_transport *transport;  /* guarded by mu; set once */
static pl_mpi_info info;                   /* guarded by mu; set with transport */
static char init_error[PL_MPI_ERRLEN];     /* guarded by mu: a failed init, for good */
static char *free_ranks;                   /* guarded by mu: by world rank, 1 free */
static atomic_int lost;

/* ---- waiting ---------------------------------------------------------- */

void pl_mpi_backoff_start(pl_mpi_backoff *b) {
  b->since = pl_now_ns();
  b->nap = 10 * 1000;
}

void pl_mpi_backoff_wait(pl_mpi_backoff *b, int fd) {
  if (pl_now_ns() - b->since < SPIN_NS) {
    pl_cpu_relax();
    return;
  }
  struct timespec ts = pl_timespec_of(b->nap);
  if (fd >= 0) {
    struct pollfd p = {fd, POLLIN, 0};
    (void)ppoll(&p, 1, &ts, NULL);
  } else {
    nanosleep(&ts, NULL);
  }
  if (b->nap < MAX_NAP_NS) b->nap *= 2;
  if (b->nap > MAX_NAP_NS) b->nap = MAX_NAP_NS;
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

static void finalize_at_exit(void) {
  const pl_mpi_transport *t = pl_mpi_loaded();
  if (t == NULL || atomic_load(&lost)) return;  /* Finalize would wait for the dead */
  char err[PL_MPI_ERRLEN];
  pthread_mutex_lock(&mu);
  int size = info.has_parent ? 0 : info.size;
  pthread_mutex_unlock(&mu);
  if (info.rank == 0)
    for (int r = 1; r < size; r++) (void)t->send(PL_MPI_WORLD, r, PL_MPI_TAG_STOP, "", 0, err);
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
  free_ranks = calloc((size_t)info.size + 1, 1);
  if (free_ranks == NULL) abort();
  if (info.rank == 0 && !info.has_parent)
    for (int r = 1; r < info.size; r++) free_ranks[r] = 1;
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

int pl_mpi_claim_rank(void) {
  int rank = -1;
  pthread_mutex_lock(&mu);
  for (int r = 1; transport != NULL && r < info.size && rank < 0; r++)
    if (free_ranks[r]) {
      free_ranks[r] = 0;
      rank = r;
    }
  pthread_mutex_unlock(&mu);
  return rank;
}

void pl_mpi_return_rank(int rank) {
  pthread_mutex_lock(&mu);
  if (transport != NULL && rank > 0 && rank < info.size) free_ranks[rank] = 1;
  pthread_mutex_unlock(&mu);
}

int pl_mpi_world_servers(void) {
  pthread_mutex_lock(&mu);
  int n = transport != NULL && info.rank == 0 && !info.has_parent ? info.size - 1 : 0;
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
  return -1;  /* rank 0 runs the script */
}
