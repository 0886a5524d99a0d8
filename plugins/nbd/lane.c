/* The connections of the nbd backend: one libnbd handle each, driven by
 * its owner thread through polls on that thread's io_uring, reconnected
 * with backoff when it dies.  Everything here runs on the owner thread. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>

#include "remote.h"
#include "log.h"

static void lane_kick (struct lane *ln);
static void lane_in_done (struct loop_event *ev, int res, uint32_t flags);
static void lane_out_done (struct loop_event *ev, int res, uint32_t flags);
static void lane_timer_done (struct loop_event *ev, int res, uint32_t flags);
static void lane_inbox (struct loop_work *w);
static void lane_kick_work (struct loop_work *w);

void
lane_init (struct lane *ln, struct remote *r)
{
  ln->r = r;
  ln->state = LANE_CONNECTED;
  ln->fd = nbd_aio_get_fd (ln->nbd);
  ln->in_ev.fn = lane_in_done;
  ln->out_ev.fn = lane_out_done;
  ln->timer_ev.fn = lane_timer_done;
  ln->inbox_work.fn = lane_inbox;
  ln->kick_work.fn = lane_kick_work;
  list_init (&ln->pending);
  list_init (&ln->done);
  list_init (&ln->inbox);
  pthread_mutex_init (&ln->lock, NULL);
}

/* Issuing commands (owner thread). */

/* The length of the piece of IO to send next. */
static uint32_t
piece (const struct remote *r, const struct backend_io *io)
{
  uint32_t left = io->count - io->done_bytes;

  if (io->op == BACKEND_OP_FLUSH || io->op == BACKEND_OP_EXTENTS)
    return left;
  return left < r->info.max_request ? left : r->info.max_request;
}

static int
on_complete (void *user_data, int *error)
{
  struct backend_io *io = user_data;
  struct lane *ln = io->priv;

  if (io->phase & IN_FLIGHT) {
    io->phase &= ~IN_FLIGHT;
    io->result = *error ? -*error : 0;
    list_push (&ln->done, io);
  }
  return 1;                     /* retire the command */
}

static int64_t
send_command (struct nbd_handle *nbd, struct backend_io *io, uint32_t n)
{
  nbd_completion_callback cb = { .callback = on_complete, .user_data = io };
  uint64_t off = io->offset + io->done_bytes;
  char *buf = (char *) io->buf + io->done_bytes;
  uint32_t fua = (io->flags & BACKEND_FLAG_FUA) ? LIBNBD_CMD_FLAG_FUA : 0;

  switch (io->op) {
  case BACKEND_OP_READ:
    return nbd_aio_pread (nbd, buf, n, off, cb, 0);
  case BACKEND_OP_WRITE:
    return nbd_aio_pwrite (nbd, buf, n, off, cb, fua);
  case BACKEND_OP_FLUSH:
    return nbd_aio_flush (nbd, cb, 0);
  case BACKEND_OP_TRIM:
    return nbd_aio_trim (nbd, n, off, cb, fua);
  case BACKEND_OP_ZERO:
    return nbd_aio_zero (nbd, n, off, cb, fua |
                         ((io->flags & BACKEND_FLAG_MAY_TRIM)
                          ? 0 : LIBNBD_CMD_FLAG_NO_HOLE) |
                         ((io->flags & BACKEND_FLAG_FAST)
                          ? LIBNBD_CMD_FLAG_FAST_ZERO : 0));
  case BACKEND_OP_CACHE:
    return nbd_aio_cache (nbd, n, off, cb, 0);
  case BACKEND_OP_EXTENTS:
    return nbd_aio_block_status (nbd, n, off, (nbd_extent_callback) {
                                   .callback = remote_on_extents,
                                   .user_data = io->ext },
                                 cb, (io->flags & BACKEND_FLAG_REQ_ONE)
                                 ? LIBNBD_CMD_FLAG_REQ_ONE : 0);
  }
  abort ();
}

/* Send the next piece of IO; what fails to go out waits for a connection
 * (the handle is gone) or completes with the error (it was refused). */
static void
lane_issue (struct lane *ln, struct backend_io *io)
{
  if (ln->state != LANE_CONNECTED) {
    list_push (&ln->pending, io);
    return;
  }
  io->phase |= IN_FLIGHT;
  if (send_command (ln->nbd, io, piece (ln->r, io)) >= 0)
    return;
  io->phase &= ~IN_FLIGHT;
  if (nbd_aio_is_dead (ln->nbd) || nbd_aio_is_closed (ln->nbd))
    list_push (&ln->pending, io);
  else {
    io->result = nbd_get_errno () ? -nbd_get_errno () : -EIO;
    log_debug ("nbd: command refused: %s", nbd_get_error ());
    list_push (&ln->done, io);
  }
}

static void
finish_posted (struct loop_work *w)
{
  struct backend_io *io = container_of (w, struct backend_io, work);

  io->done (io, io->result);
}

/* Complete IO on the thread that submitted it. */
static void
lane_finish (struct lane *ln, struct backend_io *io, int res)
{
  if (io->loop == ln->loop) {
    io->done (io, res);
    return;
  }
  io->result = res;
  io->work.fn = finish_posted;
  loop_post (io->loop, &io->work);
}

static bool
lost_connection_error (int res)
{
  return res == -ENOTCONN || res == -ECONNRESET || res == -EPIPE ||
         res == -ESHUTDOWN || res == -ECONNABORTED;
}

/* Look at what libnbd completed: the next piece, the end, or a retry. */
static void
lane_reap (struct lane *ln)
{
  bool dead = !ln->nbd || nbd_aio_is_dead (ln->nbd) ||
              nbd_aio_is_closed (ln->nbd);
  struct io_list done = ln->done;
  struct backend_io *io;

  if (!done.head)
    return;
  list_init (&ln->done);
  while ((io = list_pop (&done))) {
    if (io->result < 0 && (dead || lost_connection_error (io->result))) {
      if (io->ext)
        io->ext->n = io->phase;  /* forget a partial answer */
      list_push (&ln->pending, io);
    }
    else if (io->result < 0)
      lane_finish (ln, io, io->result);
    else if ((io->done_bytes += piece (ln->r, io)) < io->count)
      lane_issue (ln, io);
    else
      lane_finish (ln, io, 0);
  }
}

/* The connection (owner thread). */

static void
lane_arm (struct lane *ln)
{
  struct io_uring_sqe *sqe;
  unsigned dir;

  if (!ln->nbd || ln->fd < 0 || nbd_aio_is_dead (ln->nbd) ||
      nbd_aio_is_closed (ln->nbd))
    return;
  dir = nbd_aio_get_direction (ln->nbd);
  if ((dir & LIBNBD_AIO_DIRECTION_READ) && !ln->in_armed) {
    sqe = loop_sqe (ln->loop, &ln->in_ev);
    io_uring_prep_poll_add (sqe, ln->fd, POLLIN);
    ln->in_armed = true;
  }
  if ((dir & LIBNBD_AIO_DIRECTION_WRITE) && !ln->out_armed) {
    sqe = loop_sqe (ln->loop, &ln->out_ev);
    io_uring_prep_poll_add (sqe, ln->fd, POLLOUT);
    ln->out_armed = true;
  }
}

static void
noop_done (struct loop_event *ev, int res, uint32_t flags)
{
}

static struct loop_event noop_ev = { noop_done };

static void
lane_cancel (struct lane *ln, struct loop_event *ev)
{
  io_uring_prep_poll_remove (loop_sqe (ln->loop, &noop_ev),
                             (uint64_t) (uintptr_t) ev);
}

/* Attempts are used up: fail what waits, and wait for the next request. */
static void
lane_give_up (struct lane *ln)
{
  struct backend_io *io;

  log_error ("nbd: %s: giving up after %u attempt(s): failing requests "
             "with EIO until it is back", ln->r->uri, ln->attempts);
  ln->state = LANE_DOWN;
  ln->attempts = 0;
  while ((io = list_pop (&ln->pending)))
    lane_finish (ln, io, -EIO);
}

static void lane_retry (struct lane *ln);

static void
lane_start_connect (struct lane *ln)
{
  ln->attempts++;
  ln->state = LANE_CONNECTING;
  ln->fd = -1;
  ln->nbd = remote_handle_new ();
  if (ln->nbd && nbd_aio_connect_uri (ln->nbd, ln->r->uri) != -1) {
    ln->fd = nbd_aio_get_fd (ln->nbd);
    if (ln->fd >= 0)
      return;
  }
  log_debug ("nbd: %s: attempt %u: %s", ln->r->uri, ln->attempts,
             nbd_get_error ());
  if (ln->nbd)
    nbd_close (ln->nbd);
  ln->nbd = NULL;
  ln->state = LANE_LOST;
  lane_retry (ln);
}

/* After losing the connection or failing to make one: try again at once
 * the first time, then after retry-delay, doubling up to MAX_BACKOFF. */
static void
lane_retry (struct lane *ln)
{
  double delay;

  if (ln->attempts >= ln->r->retry) {
    lane_give_up (ln);
    return;
  }
  if (ln->attempts == 0) {
    lane_start_connect (ln);
    return;
  }
  delay = ln->r->retry_delay;
  for (unsigned i = 1; i < ln->attempts && delay < MAX_BACKOFF; i++)
    delay *= 2;
  if (delay > MAX_BACKOFF)
    delay = MAX_BACKOFF;
  ln->ts.tv_sec = (long long) delay;
  ln->ts.tv_nsec = (long long) ((delay - (long long) delay) * 1e9);
  io_uring_prep_timeout (loop_sqe (ln->loop, &ln->timer_ev), &ln->ts, 0, 0);
  ln->timer_armed = true;
}

/* The handle is dead: once no poll refers to its socket, close it and
 * reconnect. */
static void
lane_lost (struct lane *ln)
{
  if (ln->state == LANE_CONNECTED)
    log_error ("nbd: %s: connection lost; reconnecting", ln->r->uri);
  if (ln->state != LANE_CONNECTING)
    ln->state = LANE_LOST;
  if (ln->in_armed || ln->out_armed) {
    if (!ln->cancelled) {
      if (ln->in_armed)
        lane_cancel (ln, &ln->in_ev);
      if (ln->out_armed)
        lane_cancel (ln, &ln->out_ev);
      ln->cancelled = true;
    }
    return;
  }
  ln->cancelled = false;
  nbd_close (ln->nbd);
  ln->nbd = NULL;
  ln->fd = -1;
  ln->state = LANE_LOST;
  lane_retry (ln);
}

static void
lane_connected (struct lane *ln)
{
  int64_t size = nbd_get_size (ln->nbd);

  if (size != (int64_t) ln->r->info.size) {
    log_error ("nbd: %s: the export now has %" PRId64 " bytes instead of "
               "%" PRIu64 ": not using it", ln->r->uri, size,
               ln->r->info.size);
    ln->state = LANE_LOST;      /* lane_kick closes it and retries */
    return;
  }
  if (ln->attempts > 0) {
    log_info ("nbd: %s: reconnected (attempt %u)", ln->r->uri, ln->attempts);
    atomic_store_explicit (&ln->reconnects, 1 +
                           atomic_load_explicit (&ln->reconnects,
                                                 memory_order_relaxed),
                           memory_order_relaxed);
  }
  ln->state = LANE_CONNECTED;
  ln->attempts = 0;
}

/* After anything happened: look at completions and at the connection,
 * send what waits, and poll for what libnbd wants next. */
/* The handle is dead, or was found unusable: it must be replaced. */
static bool
lane_broken (struct lane *ln)
{
  return ln->nbd && (ln->state == LANE_LOST || nbd_aio_is_dead (ln->nbd) ||
                     nbd_aio_is_closed (ln->nbd));
}

static void
lane_kick (struct lane *ln)
{
  do {
    lane_reap (ln);
    if (lane_broken (ln))
      lane_lost (ln);
    else if (ln->state == LANE_CONNECTING && nbd_aio_is_ready (ln->nbd))
      lane_connected (ln);
    if (ln->state == LANE_DOWN && ln->pending.head) {
      ln->attempts = ln->r->retry;  /* one attempt per new request */
      lane_start_connect (ln);
    }
    if (ln->state == LANE_CONNECTED && ln->pending.head) {
      struct io_list again = ln->pending;
      struct backend_io *io;

      list_init (&ln->pending);
      while ((io = list_pop (&again)))
        lane_issue (ln, io);
    }
    /* Again while libnbd completed something, or the handle broke and no
     * poll holds it (a poll's completion kicks again otherwise). */
  } while (ln->done.head ||
           (lane_broken (ln) && !ln->in_armed && !ln->out_armed));
  lane_arm (ln);
}

static void
lane_kick_work (struct loop_work *w)
{
  lane_kick (container_of (w, struct lane, kick_work));
}

/* A poll completed: tell libnbd if it still wants that direction. */
static void
lane_polled (struct lane *ln, int res, bool *armed, unsigned dir,
             int (*notify) (struct nbd_handle *))
{
  *armed = false;
  if (res > 0 && ln->nbd && !ln->cancelled &&
      (nbd_aio_get_direction (ln->nbd) & dir) && notify (ln->nbd) == -1)
    log_debug ("nbd: %s: %s", ln->r->uri, nbd_get_error ());
  lane_kick (ln);
}

static void
lane_in_done (struct loop_event *ev, int res, uint32_t flags)
{
  struct lane *ln = container_of (ev, struct lane, in_ev);

  lane_polled (ln, res, &ln->in_armed, LIBNBD_AIO_DIRECTION_READ,
               nbd_aio_notify_read);
}

static void
lane_out_done (struct loop_event *ev, int res, uint32_t flags)
{
  struct lane *ln = container_of (ev, struct lane, out_ev);

  lane_polled (ln, res, &ln->out_armed, LIBNBD_AIO_DIRECTION_WRITE,
               nbd_aio_notify_write);
}

static void
lane_timer_done (struct loop_event *ev, int res, uint32_t flags)
{
  struct lane *ln = container_of (ev, struct lane, timer_ev);

  ln->timer_armed = false;
  lane_start_connect (ln);
  lane_kick (ln);
}

/* Whatever needs looking at is deferred to lane_kick. */
void
lane_take (struct lane *ln, struct backend_io *io)
{
  if (ln->state == LANE_CONNECTED)
    lane_issue (ln, io);
  else
    list_push (&ln->pending, io);
  if (ln->done.head || ln->state == LANE_DOWN ||
      (ln->nbd && nbd_aio_is_dead (ln->nbd)))
    loop_defer (ln->loop, &ln->kick_work);
  lane_arm (ln);
}

static void
lane_inbox (struct loop_work *w)
{
  struct lane *ln = container_of (w, struct lane, inbox_work);
  struct io_list in;
  struct backend_io *io;

  pthread_mutex_lock (&ln->lock);
  in = ln->inbox;
  list_init (&ln->inbox);
  ln->inbox_posted = false;
  pthread_mutex_unlock (&ln->lock);
  if (!in.head)
    return;
  while ((io = list_pop (&in)))
    lane_take (ln, io);
}

