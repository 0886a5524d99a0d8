/* io_uring event loops.
 *
 * A loop is one thread with one io_uring.  Every SQE it submits carries a
 * pointer to a struct loop_event as user_data; the completion calls
 * ev->fn(ev, res, cqe_flags) on the loop thread.  Deferred work (loop_defer)
 * runs after each batch of completions and before the next submit, so work
 * produced by many completions (replies to send) is batched.
 *
 * Other threads talk to a loop only through loop_wake (an eventfd read that
 * the loop keeps armed); the frontend's on_wake callback then looks at its
 * own lock-protected hand-off state.  All loops are created at start-up.
 */
#ifndef UBDKIT_LOOP_H
#define UBDKIT_LOOP_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <liburing.h>

#include "ubdkit/event.h"

struct loop {
  struct io_uring ring;
  int id;
  char name[16];
  pthread_t thread;
  unsigned entries;
  /* Completion queue size; 0: twice entries.  A frontend sets it, before
   * loop_start, to cover every operation it can have in flight, so the
   * CQ never overflows (the kernel would then allocate to keep CQEs, and
   * refuse submissions with EBUSY). */
  unsigned cq_entries;
  /* Adaptive polling before sleeping (see loop.c): the longest poll, set
   * by the frontend before loop_start (0: never poll), and the current. */
  uint64_t poll_max_ns, poll_ns;
  /* Set by the frontend while polling cannot help: its clients keep
   * requests in flight, so none of them waits on one reply (loop.c). */
  bool poll_hold;
  int efd;                      /* wake-up eventfd */
  uint64_t efd_val;
  struct loop_event efd_ev;
  struct loop_work *work_head, **work_tail;
  /* Work posted by other threads (loop_post), under lock. */
  struct loop_work *posted_head, **posted_tail;
  atomic_bool stop;             /* asked to stop by another thread */
  bool done;                    /* set by the frontend: leave loop_run */
  bool io_flusher;              /* PR_GET_IO_FLUSHER as seen by the thread */
  /* Frontend hooks, called on the loop thread. */
  /* Before the first submit; returning -1 (after logging) makes
   * loop_start fail. */
  int (*on_start) (struct loop *l);
  void (*on_wake) (struct loop *l);
  void *data;
  /* Start-up handshake with loop_start. */
  pthread_mutex_t lock;
  pthread_cond_t cond;
  int start_status;             /* 0 pending, 1 running, -1 failed */
};

/* Default longest adaptive poll, microseconds (see loop.c). */
#define LOOP_POLL_DEFAULT_US 100

/* The next poll time after a wait of WAITED ns began with a poll of
 * POLL_NS (0: none); exposed for tests. */
uint64_t loop_poll_next (uint64_t poll_ns, uint64_t max_ns, uint64_t waited);

/* Create the thread (named NAME) and its ring; returns once the ring exists.
 * Returns 0, or -1 after logging. */
int loop_start (struct loop *l, int id, const char *name, unsigned entries);
/* Ask the loop to stop (on_wake sees l->stop) and wait for the thread. */
void loop_stop (struct loop *l);
void loop_join (struct loop *l);

/* Attributes for every thread ubdkit creates (a small stack). */
const pthread_attr_t *loop_thread_attr (void);

/* Wake the loop from another thread. */
void loop_wake (struct loop *l);

/* An SQE, submitting what is queued if the SQ ring is full. Never NULL. */
struct io_uring_sqe *loop_sqe (struct loop *l, struct loop_event *ev);

/* Run W after the current batch of completions (once, even if deferred
 * again before it runs).  Loop thread only. */
void loop_defer (struct loop *l, struct loop_work *w);
/* Run W on the loop's thread; callable from any thread.  W must not be
 * posted again before it has run. */
void loop_post (struct loop *l, struct loop_work *w);

#endif
