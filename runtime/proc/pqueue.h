/* Private to the parlua runtime: the process channel of a par.queue -- what
 * a queue becomes once it is sent to another process.
 *
 * A queue that never leaves its process stays the in-process queue of
 * queue.h, untouched and as fast as ever.  The first time a message bound
 * for another process holds it (pl_port_pack), the queue gets a channel,
 * and from then on every put and get of that queue, in every process and
 * every state, goes through the channel:
 *
 *   data      an AF_UNIX SOCK_SEQPACKET socketpair: one datagram per item
 *             (a frame of wire.h whose payload is the item's portable
 *             message).  Datagrams are atomic: any number of processes
 *             put and get concurrently without a lock around the socket,
 *             and a process killed in the middle of a put or a get never
 *             leaves half an item behind.  An item bigger than 64 KB goes
 *             in a memfd whose descriptor the datagram carries.
 *   page      one shared page (a memfd mapped MAP_SHARED) with the counts
 *             qsize and unfinished (task_done/join) and the closed flag,
 *             guarded by a robust process-shared mutex held for a few
 *             instructions only (a process dying with it held leaves it
 *             usable: EOWNERDEAD is repaired at the next lock).  The memfd
 *             is sealed at its size, so no process can shrink it under
 *             the others' mapping (they would die of SIGBUS), and a page
 *             that is not sealed so is refused when received.
 *   slots     (bounded queues) an eventfd semaphore counting free places:
 *             put takes one, get gives one back.
 *   done      an eventfd readable exactly while unfinished == 0: join
 *             polls it.
 *   closed    an eventfd readable once the queue is closed: blocked
 *             getters and putters poll it too.
 * Every wait is a ppoll on descriptors (child.h's waiter), so the kernel
 * wakes waiters in any process, and a forced cancel or a timeout ends the
 * wait like any other blocking call of the runtime.
 *
 * Why not the suggested alternative of giving every live queue a channel
 * at each fork: queues that never cross would then lose their in-process
 * speed as soon as any process starts, and a queue made after a pool's
 * workers started could never reach them.  Here a queue converts only
 * when it really crosses, and, its descriptors travelling with each
 * message, it can reach a process whenever it likes.
 *
 * Putting never blocks on a full socket (an unbounded queue must accept
 * any number of items, as Python's multiprocessing.Queue does): an item
 * that does not fit waits in this process's pending list, and a feeder
 * thread -- started when needed, gone when the list is empty -- writes it
 * when the socket has room.  So, as in Python, a process that exits while
 * its items still wait there first waits for them to be taken.
 *
 * The items already in the queue when it converts are moved into the
 * channel in order; values travel by copy from then on, also between
 * threads of one state.
 */
#ifndef PL_PQUEUE_H
#define PL_PQUEUE_H

#include <stdint.h>

#include "sync/queue.h"
#include "core/tstate.h"
#include "proc/wire.h"

typedef struct pl_pchan pl_pchan;

/* The channel of q, made now when q has none yet (moving its items).
 * 0, or -1 with err (an item holds an object that cannot cross, or the
 * system refused descriptors or memory: then q is unchanged). */
int pl_pchan_attach(pl_queue *q, pl_pchan **out, char *err, size_t errlen);
/* For a message: the channel's id, maxsize, and duplicates of its
 * descriptors added to l.  0 or -errno. */
int pl_pchan_export(pl_pchan *c, pl_fdlist *l, uint64_t *id, long long *maxsize);
/* The queue for a channel received as id with nfds descriptors (taken
 * over: used or closed): a new queue, or the one this process already has
 * for id.  NULL with err when the descriptors are not a channel. */
pl_queue *pl_pchan_adopt(uint64_t id, long long maxsize, int *fds, int nfds, char *err,
                         size_t errlen);
/* The channel of q, or NULL while q is an in-process queue. */
pl_pchan *pl_pchan_of(pl_queue *q);
/* q is being destroyed: let go of its channel. */
void pl_pchan_free(pl_pchan *c);

/* Put one item: the frame in `item` (begun with pl_obuf_frame_begin(b,
 * PL_PCHAN_ITEM, 0, 0), then the payload: put completes the header) and
 * its descriptors, both taken over whatever the result.  0, PL_ETIMEOUT ("full"),
 * PL_ECANCELLED, PL_ECLOSED, PL_ENOMEM, -errno. */
#define PL_PCHAN_ITEM 0x51
int pl_pchan_put(pl_pchan *c, pl_tstate *ts, int64_t deadline, pl_obuf *item, pl_fdlist *fds);
/* Get one item: 0 (f: its payload and descriptors), PL_ETIMEOUT
 * ("empty"), PL_ECANCELLED, PL_ECLOSED (closed and empty),
 * PL_ENOMEM, -EPROTO (a datagram that is not an item), -errno. */
int pl_pchan_get(pl_pchan *c, pl_tstate *ts, int64_t deadline, pl_frame *f);

long long pl_pchan_size(pl_pchan *c);
long long pl_pchan_maxsize(pl_pchan *c);
/* 0, or PL_ETOOMANY. */
int pl_pchan_task_done(pl_pchan *c);
long long pl_pchan_unfinished(pl_pchan *c);
/* PL_OK once nothing is unfinished, PL_ETIMEOUT, PL_ECANCELLED. */
int pl_pchan_join(pl_pchan *c, pl_tstate *ts, int64_t deadline);
void pl_pchan_close(pl_pchan *c);
int pl_pchan_closed(pl_pchan *c);

/* A forked child: forget the parent's pending items and feeders. */
void pl_pchan_child_reset(void);
/* Wait until every item this process still holds back has been written
 * (a worker process calls it before it exits). */
void pl_pchan_flush_all(void);

#endif
