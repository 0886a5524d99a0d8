/* Inside lib/ublk: the state of a served device, its queue threads and
 * their tags, shared by ubdev.c (the device, the per-tag protocol) and
 * ubbatch.c (the batch protocol of UBLK_F_BATCH_IO). */
#ifndef UBDKIT_UBQ_H
#define UBDKIT_UBQ_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "loop.h"
#include "request-pool.h"
#include "stats.h"
#include "ubdev.h"

struct ubq_batch;

struct ubq;

struct ubq_tag {
  struct loop_event ev;         /* FETCH / COMMIT_AND_FETCH completion */
  struct loop_event reg_ev;     /* zero copy: our own (un)registration */
  bool registered;              /* ... of which the unregistration is due */
  struct __kernel_timespec retry; /* ... waiting for memory to register */
  struct backend_io io;
  struct ubq *q;
  uint16_t tag;
  void *buf;
  bool ended;                   /* the kernel aborted this tag */
  bool settled;                 /* quiescing: aborted, or committed */
  bool busy;                    /* a request of the kernel's is ours */
};

/* One thread serving a queue: all its tags, or with UBLK_F_PER_IO_DAEMON
 * and several threads per queue (d->threads), the tags t with
 * t % threads == its index among them (the slots hold tags i * threads +
 * index). */
struct ubq {
  struct loop loop;
  struct ubdev *dev;
  uint16_t id;
  struct request_pool pool;
  struct ubq_tag **tags;
  struct ublksrv_io_desc *descs;
  size_t descs_len;
  unsigned ended;
  unsigned settled;             /* tags settled since the quiesce began */
  struct loop_work sweep;       /* quiesce: settle the idle fetches */
  struct loop_work stall;       /* tests only: see quiesce_test_stall */
  bool finished;                /* ubq_end ran (under dev->qlock) */
  bool said_fallback;           /* zero copy: logged our first registration */
  struct ubq_batch *batch;      /* UBLK_F_BATCH_IO: ubbatch.c's state */
  struct stats_block *stats;    /* this thread's counters (d->stats) */
  unsigned busy;                /* tags holding a request */
};

struct ubdev {
  struct ubctl *ctl;
  struct backend *b;
  struct ublksrv_ctrl_dev_info info;
  int cdev;
  int done_fd;                  /* eventfd: +1 per queue thread that ended */
  unsigned nr_queues;           /* queue threads started */
  unsigned threads;             /* per hardware queue */
  struct ubq *queues;           /* nr_hw_queues * threads */
  bool started;                 /* START_DEV succeeded */
  bool zc;                      /* zero copy: UBLK_F_AUTO_BUF_REG */
  bool batch;                   /* UBLK_F_BATCH_IO (ubbatch.c) */
  uint16_t zc_index_offset;     /* tests only: see zc_test_fallback */
  bool zc_test_enomem;          /* tests only: our first try "fails" */
  unsigned poll_us;
  struct ubdev_health *health;
  struct stats_block *stats;    /* one per queue thread (stats.h) */
  atomic_bool quiescing;        /* ubdev_quiesce is under way */
  pthread_mutex_t qlock;        /* ubq.finished against a sweep posted */
};

/* ubdev.c: serve the request the kernel handed us in tag T. */
void ubq_tag_serve (struct ubq_tag *t);
/* ubdev.c: queue thread Q has nothing left to do (its fetches ended). */
void ubq_end (struct ubq *q);
/* ubdev.c: the table index for tag T's request buffer (zero copy). */
uint16_t ubq_buf_index (const struct ubq_tag *t);

/* ubbatch.c.  init runs on the control thread (allocation, before the
 * queue thread starts), start on the queue thread (registration, PREP,
 * the multishot FETCH), commit whenever a request is done. */
int ubq_batch_init (struct ubq *q);
int ubq_batch_start (struct ubq *q);
void ubq_batch_commit (struct ubq_tag *t, int result);
void ubq_batch_free (struct ubq *q);

#endif
