/* The rbd backend's data path: librbd's asynchronous calls, completions
 * collected from the image's notification eventfd.
 *
 * submit issues rbd_aio_read/write/flush/discard/write_zeroes with a
 * completion whose argument is the request and no callback: librbd then
 * queues the finished completion on the image and writes the eventfd
 * (rbd_set_image_notification, set at open).  Every thread that submits
 * keeps a POLL_ADD on that eventfd on its own io_uring; whichever wakes
 * first reads the eventfd and drains rbd_poll_io_events, completing its own
 * requests at once and handing the others' back to their threads with
 * loop_post.  A poll does not consume the eventfd, so every armed poller
 * wakes: a thread that stopped serving (its poll gone with its ring) can
 * never swallow a wake-up another thread's requests need.
 *
 * No thread is made per request and no loop thread ever blocks: librbd's
 * aio calls queue the request for its own threads (rbd_non_blocking_aio,
 * on by default).  FUA is a write (or trim, or zero) and then a flush, on
 * the same request (io->phase).  Nothing here allocates, but librbd
 * allocates a completion and more for every request (docs/ceph.md).
 */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include <liburing.h>

#include "rbd.h"
#include "log.h"
#include "loop.h"

enum { PHASE_OP, PHASE_FUA };

static void poller_ready (struct loop_event *ev, int res, uint32_t flags);

static void
poller_arm (struct rbd_poller *p)
{
  struct io_uring_sqe *sqe = loop_sqe (p->loop, &p->ev);

  io_uring_prep_poll_add (sqe, p->d->efd, POLLIN);
  p->armed = true;
}

/* The poller of thread L, registered on its first request; NULL when the
 * table is full.  Only L registers L, so the scan under the lock need not
 * look again. */
static struct rbd_poller *
poller_for (struct rbd_disk *d, struct loop *l)
{
  unsigned n = atomic_load_explicit (&d->nr_pollers, memory_order_acquire);
  struct rbd_poller *p = NULL;

  for (unsigned i = 0; i < n; i++)
    if (d->pollers[i].loop == l)
      return &d->pollers[i];
  pthread_mutex_lock (&d->lock);
  n = atomic_load_explicit (&d->nr_pollers, memory_order_relaxed);
  if (n < RBD_MAX_POLLERS) {
    p = &d->pollers[n];
    p->d = d;
    p->loop = l;
    p->ev.fn = poller_ready;
    p->armed = false;
    atomic_store_explicit (&d->nr_pollers, n + 1, memory_order_release);
  }
  pthread_mutex_unlock (&d->lock);
  return p;
}

/* Issue IO's current phase.  Returns 0 (its completion will come through
 * the eventfd) or a negative errno (nothing was issued). */
static int
issue (struct rbd_disk *d, struct backend_io *io)
{
  rbd_completion_t c;
  int r = rbd_ceph.rbd_aio_create_completion (io, NULL, &c);

  if (r < 0)
    return r;
  if (io->phase == PHASE_FUA)
    r = rbd_ceph.rbd_aio_flush (d->image, c);
  else {
    switch (io->op) {
    case BACKEND_OP_READ:
      r = rbd_ceph.rbd_aio_read (d->image, io->offset, io->count, io->buf, c);
      break;
    case BACKEND_OP_WRITE:
      r = rbd_ceph.rbd_aio_write (d->image, io->offset, io->count, io->buf, c);
      break;
    case BACKEND_OP_FLUSH:
      r = rbd_ceph.rbd_aio_flush (d->image, c);
      break;
    case BACKEND_OP_TRIM:
      r = rbd_ceph.rbd_aio_discard (d->image, io->offset, io->count, c);
      break;
    case BACKEND_OP_ZERO:
      r = rbd_ceph.rbd_aio_write_zeroes (d->image, io->offset, io->count, c,
                                rbd_zero_flags (io->flags), 0);
      break;
    default:
      r = -ENOSYS;              /* rbd_submit filters the ops */
    }
  }
  if (r < 0)
    rbd_ceph.rbd_aio_release (c);
  return r < 0 ? r : 0;
}

static void
finish_posted (struct loop_work *w)
{
  struct backend_io *io = container_of (w, struct backend_io, work);

  io->done (io, io->result);
}

/* IO's phase ended with R (librbd's return value) on thread SELF: the
 * flush of a FUA request next, or the end, on the submitting thread. */
static void
completed (struct rbd_disk *d, struct loop *self, struct backend_io *io,
           ssize_t r)
{
  int res;

  /* librbd stops a read at the image's end: a shrink under the client. */
  if (r >= 0 && io->phase == PHASE_OP && io->op == BACKEND_OP_READ &&
      (uint64_t) r != io->count)
    r = -EIO;
  if (r >= 0 && io->phase == PHASE_OP && (io->flags & BACKEND_FLAG_FUA)) {
    io->phase = PHASE_FUA;
    r = issue (d, io);
    if (r == 0)
      return;
  }
  res = r < 0 ? (r < -4095 ? -EIO : (int) r) : 0;
  if (io->loop == self) {
    io->done (io, res);
    return;
  }
  io->result = res;
  io->work.fn = finish_posted;
  loop_post (io->loop, &io->work);
}

static void
poller_ready (struct loop_event *ev, int res, uint32_t flags)
{
  struct rbd_poller *p = container_of (ev, struct rbd_poller, ev);
  struct rbd_disk *d = p->d;
  rbd_completion_t comps[32];
  uint64_t v;
  int n;

  p->armed = false;
  if (res < 0 && res != -EINTR && res != -ECANCELED)
    log_ratelimited ("rbd: poll on the completion eventfd: %s",
                     strerror (-res));
  /* Reset the eventfd first: a completion queued after the drain below
   * writes it again, and the poll armed after the drain sees that. */
  if (read (d->efd, &v, sizeof v) == -1 && errno != EAGAIN)
    log_ratelimited ("rbd: read of the completion eventfd: %m");
  do {
    n = rbd_ceph.rbd_poll_io_events (d->image, comps, 32);
    for (int i = 0; i < n; i++) {
      struct backend_io *io = rbd_ceph.rbd_aio_get_arg (comps[i]);
      ssize_t r = rbd_ceph.rbd_aio_get_return_value (comps[i]);

      rbd_ceph.rbd_aio_release (comps[i]);
      completed (d, p->loop, io, r);
    }
  } while (n == 32);
  poller_arm (p);
}

int
rbd_submit (void *h, struct io_uring *ring, struct backend_io *io)
{
  struct rbd_disk *d = h;
  struct loop *l = container_of (ring, struct loop, ring);
  struct rbd_poller *p;

  switch (io->op) {
  case BACKEND_OP_READ: case BACKEND_OP_WRITE: case BACKEND_OP_FLUSH:
  case BACKEND_OP_TRIM: case BACKEND_OP_ZERO:
    break;
  default:
    return -ENOSYS;             /* extents: synchronous, on a worker */
  }
  if (io->op == BACKEND_OP_ZERO && rbd_zero_too_slow (io->flags))
    return -ENOTSUP;
  p = poller_for (d, l);
  if (!p)
    return -ENOSYS;             /* more threads than pollers: a worker */
  if (!p->armed)
    poller_arm (p);
  io->loop = l;
  io->priv = d;
  io->phase = PHASE_OP;
  return issue (d, io);
}
