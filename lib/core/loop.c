/* See loop.h. */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <sched.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/prctl.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "progress.h"

#ifdef HAVE_VALGRIND_VALGRIND_H
#include <valgrind/valgrind.h>
#else
#define RUNNING_ON_VALGRIND 0
#endif

static void arm_wakeup (struct loop *l);

void
loop_post (struct loop *l, struct loop_work *w)
{
  bool first;

  w->next = NULL;
  pthread_mutex_lock (&l->lock);
  first = l->posted_head == NULL;
  *l->posted_tail = w;
  l->posted_tail = &w->next;
  pthread_mutex_unlock (&l->lock);
  /* Work already waiting has woken the loop, which has not yet taken the
   * list (run_posted takes all of it): one wake-up is enough. */
  if (first)
    loop_wake (l);
}

static void
run_posted (struct loop *l)
{
  struct loop_work *w;

  pthread_mutex_lock (&l->lock);
  w = l->posted_head;
  l->posted_head = NULL;
  l->posted_tail = &l->posted_head;
  pthread_mutex_unlock (&l->lock);
  while (w) {
    struct loop_work *next = w->next;
    w->fn (w);
    w = next;
  }
}

static void
wakeup_done (struct loop_event *ev, int res, uint32_t flags)
{
  struct loop *l = container_of (ev, struct loop, efd_ev);

  if (res < 0 && res != -EINTR && res != -EAGAIN)
    log_error ("eventfd read: %s", strerror (-res));
  run_posted (l);
  if (l->on_wake)
    l->on_wake (l);
  if (!l->done)
    arm_wakeup (l);
}

static void
arm_wakeup (struct loop *l)
{
  struct io_uring_sqe *sqe = loop_sqe (l, &l->efd_ev);

  io_uring_prep_read (sqe, l->efd, &l->efd_val, sizeof l->efd_val, 0);
}

/* The kernel could not take our submissions (EAGAIN: no memory for its
 * request structures, under memory pressure).  Retrying at once would spin
 * on a CPU that reclaim needs: give it a millisecond. */
static void
back_off (struct loop *l)
{
  static const struct timespec ms = { 0, 1000000 };

  log_ratelimited ("%s: io_uring cannot take submissions now: retrying",
                   l->name);
  nanosleep (&ms, NULL);
}

struct io_uring_sqe *
loop_sqe (struct loop *l, struct loop_event *ev)
{
  struct io_uring_sqe *sqe;

  while ((sqe = io_uring_get_sqe (&l->ring)) == NULL)
    if (io_uring_submit (&l->ring) < 0)
      back_off (l);
  io_uring_sqe_set_data (sqe, ev);
  return sqe;
}

void
loop_defer (struct loop *l, struct loop_work *w)
{
  if (w->queued)
    return;
  w->queued = true;
  w->next = NULL;
  *l->work_tail = w;
  l->work_tail = &w->next;
}

static void
run_deferred (struct loop *l)
{
  while (l->work_head) {
    struct loop_work *w = l->work_head;

    l->work_head = w->next;
    if (!l->work_head)
      l->work_tail = &l->work_head;
    w->queued = false;
    w->fn (w);
  }
}

/* Valgrind runs one thread at a time and (3.19) does not know that
 * io_uring_enter may block: a loop waiting in it would hold valgrind's lock
 * and stop every other thread.  Under valgrind a loop therefore submits
 * without waiting and waits in poll(2) on the ring fd, which valgrind
 * treats as blocking.  The ring then has no task-run flags: with
 * DEFER_TASKRUN (or COOP_TASKRUN) completions wait for the task to enter
 * the ring, and poll alone might never see them. */
static bool
wait_in_poll (void)
{
  return RUNNING_ON_VALGRIND;
}

static int
poll_wait (struct loop *l)
{
  struct pollfd p = { .fd = l->ring.ring_fd, .events = POLLIN };
  int r = io_uring_submit (&l->ring);

  if (r < 0)
    return r;
  if (io_uring_cq_ready (&l->ring) == 0 && poll (&p, 1, -1) < 0)
    return -errno;
  return 0;
}

static int
ring_init (struct loop *l)
{
  /* Best flags first; older kernels reject what they do not know. */
  static const unsigned flag_sets[] = {
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN
    | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_SINGLE_ISSUER | IORING_SETUP_DEFER_TASKRUN,
    IORING_SETUP_COOP_TASKRUN | IORING_SETUP_TASKRUN_FLAG,
    IORING_SETUP_COOP_TASKRUN,
    0,
  };
  size_t first = wait_in_poll () ? 4 : 0;
  int r = -EINVAL;

  for (size_t i = first; i < sizeof flag_sets / sizeof flag_sets[0]; i++) {
    struct io_uring_params p = { .flags = flag_sets[i] };

    if (l->cq_entries > 2 * l->entries) {
      p.flags |= IORING_SETUP_CQSIZE | IORING_SETUP_CLAMP;  /* max 64 Ki */
      p.cq_entries = l->cq_entries;
    }
    r = io_uring_queue_init_params (l->entries, &l->ring, &p);
    if (r == 0) {
      log_debug ("io_uring with %u entries, %u completions, flags 0x%x",
                 l->entries, p.cq_entries, p.flags);
      return 0;
    }
    if (r != -EINVAL)
      break;
  }
  log_error ("io_uring_queue_init: %s", strerror (-r));
  return -1;
}

static void
report_start (struct loop *l, int status)
{
  pthread_mutex_lock (&l->lock);
  l->start_status = status;
  pthread_cond_signal (&l->cond);
  pthread_mutex_unlock (&l->lock);
}

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * UINT64_C (1000000000) + ts.tv_nsec;
}

/* Adaptive polling, the way QEMU's event loops do it.  Waking a thread
 * that sleeps on another CPU costs an IPI and that CPU's exit from idle;
 * in a VM this costs more than serving a small request, and a client with
 * one request at a time pays it twice per request.  So before sleeping the
 * loop polls its ring for up to poll_ns, yielding the CPU between looks
 * (the client may share it).  poll_ns follows the waits the loop sees:
 * a wait that ended within poll_ns needs no change; a longer one, still
 * within poll_max_ns, doubles it (from 4 us); one beyond poll_max_ns resets
 * it to 0.  An idle or lightly loaded loop therefore sleeps at once, and
 * one that is kept busy never waits long enough to poll.
 *
 * Polling pays only when a client waits on each reply before it sends
 * more (one request at a time).  A client that keeps several requests in
 * flight is busy while we wait, and polling then only burns the wait: the
 * frontend sees which it is and sets poll_hold for the second kind. */
static bool
poll_ring (struct loop *l)
{
  uint64_t end = now_ns () + l->poll_ns;

  do {
    /* With a task-run flag set, completions wait in the kernel's task
     * work until we enter the ring: fetch them. */
    if (IO_URING_READ_ONCE (*l->ring.sq.kflags) & IORING_SQ_TASKRUN)
      io_uring_get_events (&l->ring);
    if (io_uring_cq_ready (&l->ring))
      return true;
    sched_yield ();
  } while (now_ns () < end);
  return false;
}

uint64_t
loop_poll_next (uint64_t poll_ns, uint64_t max_ns, uint64_t waited)
{
  if (waited <= poll_ns)
    return poll_ns;
  if (waited > max_ns)
    return 0;
  poll_ns = poll_ns ? 2 * poll_ns : 4000;
  return poll_ns < max_ns ? poll_ns : max_ns;
}

static void
poll_adapt (struct loop *l, uint64_t waited)
{
  l->poll_ns = loop_poll_next (l->poll_ns, l->poll_max_ns, waited);
}

/* Submit what is queued and wait for at least one completion. */
static int
submit_and_wait (struct loop *l)
{
  uint64_t start;
  int r;

  if (wait_in_poll ())
    return poll_wait (l);
  if (l->poll_max_ns == 0 || l->poll_hold || io_uring_cq_ready (&l->ring)) {
    if (l->poll_hold)
      l->poll_ns = 0;           /* start afresh once the hold ends */
    return io_uring_submit_and_wait (&l->ring, 1);
  }
  /* Submit and collect what has completed meanwhile, in one call as the
   * wait would: a busy loop must not pay for polling. */
  r = io_uring_submit_and_get_events (&l->ring);
  if (r < 0 || io_uring_cq_ready (&l->ring))
    return r < 0 ? r : 0;
  start = now_ns ();
  if (l->poll_ns && poll_ring (l)) {
    poll_adapt (l, now_ns () - start);
    return 0;
  }
  r = io_uring_submit_and_wait (&l->ring, 1);
  poll_adapt (l, now_ns () - start);
  return r;
}

static void *
loop_thread (void *arg)
{
  struct loop *l = arg;
  struct io_uring_cqe *cqe;

  log_set_thread_name (l->name);
  prctl (PR_SET_NAME, l->name);
  l->io_flusher = progress_thread_is_io_flusher ();
  if (ring_init (l) == -1) {
    report_start (l, -1);
    return NULL;
  }
  l->work_tail = &l->work_head;
  arm_wakeup (l);
  if (l->on_start && l->on_start (l) == -1) {
    io_uring_queue_exit (&l->ring);
    report_start (l, -1);
    return NULL;
  }
  report_start (l, 1);

  while (!l->done) {
    unsigned head, n = 0;
    int r;

    run_deferred (l);
    if (l->done)
      break;
    r = submit_and_wait (l);
    if (r == -EAGAIN || r == -EBUSY || r == -ENOMEM) {
      if (io_uring_cq_ready (&l->ring) == 0)
        back_off (l);
    }
    else if (r < 0 && r != -EINTR) {
      log_error ("io_uring_submit_and_wait: %s", strerror (-r));
      break;
    }
    io_uring_for_each_cqe (&l->ring, head, cqe) {
      struct loop_event *ev = io_uring_cqe_get_data (cqe);
      int res = cqe->res;
      uint32_t flags = cqe->flags;

      /* Consume before calling: the callback may submit and wait. */
      io_uring_cq_advance (&l->ring, 1);
      n++;
      if (ev)
        ev->fn (ev, res, flags);
    }
    (void) n;
  }
  io_uring_queue_exit (&l->ring);
  close (l->efd);
  return NULL;
}

/* Thread stacks are locked with everything else: 8 MiB each (the default)
 * would lock tens of MiB for nothing.  Loop, queue and worker threads keep
 * their state in preallocated pools, so a small stack is plenty. */
static pthread_attr_t thread_attr;

static void
thread_attr_init (void)
{
  pthread_attr_init (&thread_attr);
  pthread_attr_setstacksize (&thread_attr, 256 * 1024);
}

const pthread_attr_t *
loop_thread_attr (void)
{
  static pthread_once_t once = PTHREAD_ONCE_INIT;

  pthread_once (&once, thread_attr_init);
  return &thread_attr;
}

int
loop_start (struct loop *l, int id, const char *name, unsigned entries)
{
  int r;

  l->id = id;
  snprintf (l->name, sizeof l->name, "%s", name);
  l->entries = entries;
  l->efd_ev.fn = wakeup_done;
  atomic_init (&l->stop, false);
  l->efd = eventfd (0, EFD_CLOEXEC);
  if (l->efd == -1) {
    log_error ("eventfd: %m");
    return -1;
  }
  pthread_mutex_init (&l->lock, NULL);
  pthread_cond_init (&l->cond, NULL);
  l->posted_head = NULL;
  l->posted_tail = &l->posted_head;
  r = pthread_create (&l->thread, loop_thread_attr (), loop_thread, l);
  if (r) {
    log_error ("pthread_create: %s", strerror (r));
    return -1;
  }
  pthread_mutex_lock (&l->lock);
  while (l->start_status == 0)
    pthread_cond_wait (&l->cond, &l->lock);
  pthread_mutex_unlock (&l->lock);
  if (l->start_status == -1) {
    pthread_join (l->thread, NULL);
    return -1;
  }
  return 0;
}

void
loop_wake (struct loop *l)
{
  uint64_t one = 1;

  if (write (l->efd, &one, sizeof one) != sizeof one)
    log_error ("loop_wake: %m");
}

void
loop_stop (struct loop *l)
{
  atomic_store (&l->stop, true);
  loop_wake (l);
}

void
loop_join (struct loop *l)
{
  pthread_join (l->thread, NULL);
}
