/* The MPI transport (transport.h) on Open MPI: the only file of parlua that
 * includes <mpi.h>, built alone into parlua_mpi.so.
 *
 * Every call gets its own error text from MPI_Error_string.  Under
 * MPI_THREAD_MULTIPLE calls go straight to the library from any thread;
 * with less, `serial` is set and each call holds `call_mu` -- a worker
 * thread's poll never blocks, so the mutex is only ever held briefly. */
#include <limits.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <mpi.h>

#include "mpi/transport.h"

#define MAX_COMMS 1024

static pthread_mutex_t mu = PTHREAD_MUTEX_INITIALIZER;       /* the handles */
static pthread_mutex_t call_mu = PTHREAD_MUTEX_INITIALIZER;  /* MPI calls, when serial */
static int serial = 1;  /* until init knows the level */
static MPI_Comm comms[MAX_COMMS];  /* guarded by mu: by handle */
static int ncomms;

/* Around MPI calls.  Not `mu`: a call looks its handle up (comm_of)
 * while it holds this one. */
static void lock(void) {
  if (serial) pthread_mutex_lock(&call_mu);
}
static void unlock(void) {
  if (serial) pthread_mutex_unlock(&call_mu);
}

static int fail(int rc, const char *what, char *err) {
  char s[MPI_MAX_ERROR_STRING];
  int n = 0;
  if (MPI_Error_string(rc, s, &n) != MPI_SUCCESS) snprintf(s, sizeof s, "error %d", rc);
  snprintf(err, PL_MPI_ERRLEN, "%.64s: %.180s", what, s);
  return -1;
}

static MPI_Comm comm_of(int h) {
  pthread_mutex_lock(&mu);
  MPI_Comm c = h >= 0 && h < ncomms ? comms[h] : MPI_COMM_NULL;
  pthread_mutex_unlock(&mu);
  return c;
}

/* The level to ask for: MPI_THREAD_MULTIPLE, unless PARLUA_MPI_THREAD_LEVEL
 * names a lower one ("serialized", ...) -- how the specs run the mutex
 * that a library offering less than multiple gets. */
static int wanted_level(void) {
  static const char *const names[] = {"single", "funneled", "serialized", "multiple"};
  static const int levels[] = {MPI_THREAD_SINGLE, MPI_THREAD_FUNNELED, MPI_THREAD_SERIALIZED,
                               MPI_THREAD_MULTIPLE};
  const char *want = getenv("PARLUA_MPI_THREAD_LEVEL");
  for (int i = 0; want != NULL && i < 4; i++)
    if (strcmp(want, names[i]) == 0) return levels[i];
  return MPI_THREAD_MULTIPLE;
}

static int t_init(pl_mpi_info *out, char *err) {
  int provided = MPI_THREAD_SINGLE, flag = 0;
  memset(out, 0, sizeof *out);
  MPI_Initialized(&flag);
  /* A singleton's pools spawn as many ranks as they ask for, as the other
   * kinds start as many workers: more than the cores is the caller's
   * choice, not a reason for Open MPI to refuse (its default). */
  if (!flag && getenv("OMPI_COMM_WORLD_SIZE") == NULL) setenv("OMPI_MCA_rmaps_base_oversubscribe", "1", 0);
  int rc = flag ? MPI_Query_thread(&provided) : MPI_Init_thread(NULL, NULL, wanted_level(), &provided);
  if (rc != MPI_SUCCESS) return fail(rc, "MPI_Init_thread", err);
  serial = provided < MPI_THREAD_MULTIPLE;
  MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN);
  MPI_Comm_rank(MPI_COMM_WORLD, &out->rank);
  MPI_Comm_size(MPI_COMM_WORLD, &out->size);
  MPI_Comm parent = MPI_COMM_NULL;
  MPI_Comm_get_parent(&parent);
  if (parent != MPI_COMM_NULL) MPI_Comm_set_errhandler(parent, MPI_ERRORS_RETURN);
  pthread_mutex_lock(&mu);
  comms[PL_MPI_WORLD] = MPI_COMM_WORLD;
  comms[PL_MPI_PARENT] = parent;
  ncomms = 2;
  pthread_mutex_unlock(&mu);
  out->has_parent = parent != MPI_COMM_NULL;
  switch (provided) {
  case MPI_THREAD_SINGLE: out->thread_level = 0; break;
  case MPI_THREAD_FUNNELED: out->thread_level = 1; break;
  case MPI_THREAD_SERIALIZED: out->thread_level = 2; break;
  default: out->thread_level = 3; break;
  }
  char v[MPI_MAX_LIBRARY_VERSION_STRING];
  int n = 0;
  MPI_Get_library_version(v, &n);
  v[strcspn(v, ",\n")] = '\0';  /* "Open MPI v4.1.4" */
  snprintf(out->library, sizeof out->library, "%s", v);
  return 0;
}

static int t_spawn(char **argv, int n, const char *hosts, const char *hostfile, char *err) {
  MPI_Info info = MPI_INFO_NULL;
  MPI_Comm child = MPI_COMM_NULL;
  int rc = MPI_SUCCESS;
  int *codes = calloc((size_t)n, sizeof *codes);
  if (codes == NULL) {
    snprintf(err, PL_MPI_ERRLEN, "not enough memory");
    return -1;
  }
  lock();
  if (hosts != NULL || hostfile != NULL) {
    MPI_Info_create(&info);
    if (hosts != NULL) MPI_Info_set(info, "host", hosts);
    if (hostfile != NULL) MPI_Info_set(info, "hostfile", hostfile);
  }
  /* The spawn itself must not abort this process when it fails. */
  MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN);
  rc = MPI_Comm_spawn(argv[0], argv + 1, n, info, 0, MPI_COMM_SELF, &child, codes);
  if (info != MPI_INFO_NULL) MPI_Info_free(&info);
  unlock();
  int bad = rc == MPI_SUCCESS ? 0 : rc;
  for (int i = 0; rc == MPI_SUCCESS && i < n; i++)
    if (codes[i] != MPI_SUCCESS) bad = codes[i];
  free(codes);
  if (bad != MPI_SUCCESS) {
    if (child != MPI_COMM_NULL) MPI_Comm_free(&child);
    return fail(bad, "MPI_Comm_spawn", err);
  }
  MPI_Comm_set_errhandler(child, MPI_ERRORS_RETURN);
  pthread_mutex_lock(&mu);
  int h = -1;
  for (int i = 2; i < ncomms; i++)
    if (comms[i] == MPI_COMM_NULL) h = i;
  if (h < 0 && ncomms < MAX_COMMS) h = ncomms++;
  if (h >= 0) comms[h] = child;
  pthread_mutex_unlock(&mu);
  if (h < 0) {
    MPI_Comm_free(&child);
    snprintf(err, PL_MPI_ERRLEN, "too many spawned groups at once");
  }
  return h;
}

static int t_send(int comm, int rank, int tag, const void *buf, size_t len, int (*alive)(void *ud),
                  void *ud, char *err) {
  if (len > INT_MAX) {
    snprintf(err, PL_MPI_ERRLEN, "a message of %zu bytes is too big for MPI (at most %d)", len, INT_MAX);
    return -1;
  }
  MPI_Request req;
  lock();
  int rc = MPI_Isend(buf, (int)len, MPI_BYTE, rank, tag, comm_of(comm), &req);
  unlock();
  if (rc != MPI_SUCCESS) return fail(rc, "MPI_Isend", err);
  /* Small messages are done at once (eager); a big one waits for the
   * receiver, polled with naps of up to a millisecond. */
  for (long nap = 1000, spins = 0;; spins++) {
    int done = 0;
    lock();
    rc = MPI_Test(&req, &done, MPI_STATUS_IGNORE);
    unlock();
    if (rc != MPI_SUCCESS) return fail(rc, "MPI_Test", err);
    if (done) return 0;
    if (alive != NULL && !alive(ud)) return 1;  /* its request is left behind: MPI is done for */
    if (spins < 1000) continue;
    struct timespec ts = {0, nap};
    nanosleep(&ts, NULL);
    if (nap < 1000000) nap *= 2;
  }
}

static int t_poll(int comm, int rank, int tag, int *out_tag, void **buf, size_t *len, char *err) {
  MPI_Message msg;
  MPI_Status st;
  int flag = 0, count = 0;
  lock();
  int rc = MPI_Improbe(rank, tag < 0 ? MPI_ANY_TAG : tag, comm_of(comm), &flag, &msg, &st);
  if (rc == MPI_SUCCESS && flag) {
    MPI_Get_count(&st, MPI_BYTE, &count);
    *buf = malloc(count > 0 ? (size_t)count : 1);
    if (*buf == NULL) {
      unlock();
      snprintf(err, PL_MPI_ERRLEN, "not enough memory for a message of %d bytes", count);
      return -1;
    }
    rc = MPI_Mrecv(*buf, count, MPI_BYTE, &msg, MPI_STATUS_IGNORE);
  }
  unlock();
  if (rc != MPI_SUCCESS) {
    if (flag) free(*buf);
    return fail(rc, "MPI_Improbe", err);
  }
  if (!flag) return 0;
  *out_tag = st.MPI_TAG;
  *len = (size_t)count;
  return 1;
}

static void t_release(int comm, int disconnect) {
  pthread_mutex_lock(&mu);
  MPI_Comm c = comm >= 2 && comm < ncomms ? comms[comm] : MPI_COMM_NULL;
  if (c != MPI_COMM_NULL) comms[comm] = MPI_COMM_NULL;
  pthread_mutex_unlock(&mu);
  if (c == MPI_COMM_NULL) return;
  lock();
  if (disconnect) MPI_Comm_disconnect(&c);
  else MPI_Comm_free(&c);
  unlock();
}

static void t_finalize(void) {
  int done = 0;
  MPI_Finalized(&done);
  if (done) return;
  MPI_Comm parent = comm_of(PL_MPI_PARENT);
  if (parent != MPI_COMM_NULL) MPI_Comm_disconnect(&parent);
  MPI_Finalize();
}

static const pl_mpi_transport transport = {PL_MPI_ABI, t_init,    t_spawn,   t_send,
                                           t_poll,     t_release, t_finalize};

__attribute__((visibility("default"))) const pl_mpi_transport *pl_mpi_transport_open(void);

const pl_mpi_transport *pl_mpi_transport_open(void) { return &transport; }
