/* nbd: a remote NBD server as a backend, through libnbd's asynchronous API.
 *
 * Connections ("lanes") are opened at open: `connections` of them when the
 * remote advertises multi-conn, else one.  A libnbd handle must be driven
 * from one thread, so each lane is owned by the first loop (or ublk queue)
 * thread that submits to it; later threads share lanes round robin and hand
 * their requests to the owner with loop_post, which hands the completion
 * back the same way.  The owner polls the lane's socket on its own io_uring
 * (IORING_OP_POLL_ADD, for the direction libnbd wants) and calls
 * nbd_aio_notify_read/write when it is ready.
 *
 * Requests are split at the remote's maximum block size and issued one
 * piece after the other (io->done_bytes is the progress).  When the
 * connection dies, libnbd fails its commands; they wait on the lane's
 * pending list while the lane reconnects (nbd_aio_connect_uri on the same
 * ring: at once, then after retry-delay, 2 x retry-delay ... up to `retry`
 * attempts) and are issued again on the new connection.  Only when the
 * attempts are used up do they fail with EIO; the next request starts a new
 * attempt, so the export comes back with the remote.
 *
 * A request is in at most one list at a time, linked through io->next_io;
 * io->result and io->work carry a completion back to another thread: the
 * core uses those fields only for requests on its worker threads, which
 * requests taken by submit never are.  Nothing here allocates per request,
 * but libnbd allocates for every command it sends (see README.md).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include <libnbd.h>
#include <liburing.h>

#include "ubdkit/backend.h"
#include "log.h"
#include "loop.h"

#define MAX_LANES 16
#define MAX_THREADS 256
#define DEFAULT_MAX_BLOCK (32 * 1024 * 1024)
#define MAX_BACKOFF 30.0            /* seconds between attempts at most */
#define IN_FLIGHT (1u << 31)        /* io->phase: libnbd owns the request */

enum lane_state { LANE_CONNECTED, LANE_CONNECTING, LANE_LOST, LANE_DOWN };

/* A list of requests linked through next_io. */
struct io_list {
  struct backend_io *head, **tail;
};

struct remote;

struct lane {
  struct remote *r;
  struct nbd_handle *nbd;
  int fd;
  enum lane_state state;
  unsigned attempts;               /* reconnection attempts in this outage */
  struct loop *loop;               /* the owner thread; NULL until claimed */
  struct loop_event in_ev, out_ev, timer_ev;
  bool in_armed, out_armed, timer_armed, cancelled;
  struct __kernel_timespec ts;
  struct io_list pending;          /* waiting for a connection */
  struct io_list done;             /* completed by libnbd, to look at */
  struct loop_work kick_work;
  /* Requests from other threads, under lock. */
  pthread_mutex_t lock;
  struct io_list inbox;
  bool inbox_posted;
  struct loop_work inbox_work;
};

struct remote {
  char *uri;
  unsigned nlanes, retry;
  double retry_delay;
  bool readonly;
  uint64_t size;
  uint32_t caps, min_block, pref_block, max_block, max_request;
  struct lane lanes[MAX_LANES];
  /* Which lane each thread uses: appended under lock, read without. */
  pthread_mutex_t lock;
  unsigned nclaimed;
  struct { struct loop *loop; struct lane *lane; } map[MAX_THREADS];
  atomic_uint nmap;
};

static void lane_kick (struct lane *ln);

static void
list_init (struct io_list *l)
{
  l->head = NULL;
  l->tail = &l->head;
}

static void
list_push (struct io_list *l, struct backend_io *io)
{
  io->next_io = NULL;
  *l->tail = io;
  l->tail = &io->next_io;
}

static struct backend_io *
list_pop (struct io_list *l)
{
  struct backend_io *io = l->head;

  if (io && !(l->head = io->next_io))
    l->tail = &l->head;
  return io;
}

/* Configuration. */

static int
parse_uint (const struct backend_param *p, size_t n, const char *key,
            unsigned lo, unsigned hi, unsigned *out)
{
  const char *v = backend_param_get (p, n, key);
  char *end;
  unsigned long u;

  if (!v)
    return 0;
  errno = 0;
  u = strtoul (v, &end, 10);
  if (errno || end == v || *end || u < lo || u > hi)
    return backend_param_error ("nbd: %s=%s: expected a number from %u to %u",
                                key, v, lo, hi);
  *out = u;
  return 0;
}

static void *
remote_config (const struct backend_param *p, size_t n, bool readonly)
{
  static const char *const known[] = {
    "uri", "connections", "retry", "retry-delay", "readonly", NULL
  };
  const char *uri = backend_param_get (p, n, "uri");
  const char *delay = backend_param_get (p, n, "retry-delay");
  const char *ro = backend_param_get (p, n, "readonly");
  struct remote *r;
  char *end;

  if (backend_params_check ("nbd", p, n, known) == -1)
    return NULL;
  if (!uri) {
    backend_param_error ("nbd: uri=URI is required "
                         "(nbd://HOST[:PORT]/EXPORT or "
                         "nbd+unix:///EXPORT?socket=PATH)");
    return NULL;
  }
  if (strncmp (uri, "nbd", 3) != 0 || !strstr (uri, "://")) {
    backend_param_error ("nbd: uri=%s: expected an NBD URI "
                         "(nbd://, nbds://, nbd+unix://, nbds+unix://)", uri);
    return NULL;
  }
  r = calloc (1, sizeof *r);
  if (!r || !(r->uri = strdup (uri)))
    fatal ("calloc: %m");
  r->nlanes = 1;
  r->retry = 5;
  r->retry_delay = 1;
  r->readonly = readonly;
  if (parse_uint (p, n, "connections", 1, MAX_LANES, &r->nlanes) == -1 ||
      parse_uint (p, n, "retry", 0, 1000, &r->retry) == -1)
    goto bad;
  if (delay) {
    r->retry_delay = strtod (delay, &end);
    if (end == delay || *end || !(r->retry_delay > 0) ||
        r->retry_delay > 3600) {
      backend_param_error ("nbd: retry-delay=%s: expected seconds "
                           "(greater than 0, at most 3600)", delay);
      goto bad;
    }
  }
  if (ro) {
    int b = backend_parse_bool (ro);
    if (b == -1) {
      backend_param_error ("nbd: readonly=%s: expected true or false", ro);
      goto bad;
    }
    r->readonly = r->readonly || b;
  }
  pthread_mutex_init (&r->lock, NULL);
  return r;

 bad:
  free (r->uri);
  free (r);
  return NULL;
}

/* Opening: connect every lane now, so a bad URI fails at start-up. */

static struct nbd_handle *
remote_connect (const struct remote *r)
{
  struct nbd_handle *nbd = nbd_create ();

  if (!nbd) {
    log_error ("nbd: %s", nbd_get_error ());
    return NULL;
  }
  if (nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
      nbd_connect_uri (nbd, r->uri) == -1) {
    log_error ("nbd: %s: %s", r->uri, nbd_get_error ());
    nbd_close (nbd);
    return NULL;
  }
  return nbd;
}

static uint32_t
block_size (struct nbd_handle *nbd, int which, uint32_t dflt)
{
  int64_t v = nbd_get_block_size (nbd, which);

  return v > 0 && v <= UINT32_MAX ? v : dflt;
}

/* Mirror the remote's capabilities and block sizes. */
static int
remote_learn (struct remote *r, struct nbd_handle *nbd)
{
  static const struct { int (*fn) (struct nbd_handle *); uint32_t cap; } q[] = {
    { nbd_can_flush, BACKEND_CAN_FLUSH },
    { nbd_can_fua, BACKEND_CAN_FUA },
    { nbd_can_trim, BACKEND_CAN_TRIM },
    { nbd_can_zero, BACKEND_CAN_ZERO },
    { nbd_can_fast_zero, BACKEND_CAN_FAST_ZERO },
    { nbd_can_cache, BACKEND_CAN_CACHE },
    { nbd_can_multi_conn, BACKEND_CAN_MULTI_CONN },
    { nbd_is_rotational, BACKEND_IS_ROTATIONAL },
  };
  int64_t size = nbd_get_size (nbd);

  if (size < 0) {
    log_error ("nbd: %s: %s", r->uri, nbd_get_error ());
    return -1;
  }
  r->size = size;
  for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
    if (q[i].fn (nbd) == 1)
      r->caps |= q[i].cap;
  if (nbd_can_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1)
    r->caps |= BACKEND_CAN_EXTENTS;
  if (nbd_is_read_only (nbd) != 1 && !r->readonly)
    r->caps |= BACKEND_CAN_WRITE;
  r->min_block = block_size (nbd, LIBNBD_SIZE_MINIMUM, 1);
  r->pref_block = block_size (nbd, LIBNBD_SIZE_PREFERRED, 4096);
  r->max_request = block_size (nbd, LIBNBD_SIZE_MAXIMUM, DEFAULT_MAX_BLOCK);
  r->max_block = r->max_request < DEFAULT_MAX_BLOCK ? r->max_request
                                                    : DEFAULT_MAX_BLOCK;
  return 0;
}

static void lane_in_done (struct loop_event *ev, int res, uint32_t flags);
static void lane_out_done (struct loop_event *ev, int res, uint32_t flags);
static void lane_timer_done (struct loop_event *ev, int res, uint32_t flags);
static void lane_inbox (struct loop_work *w);
static void lane_kick_work (struct loop_work *w);

static int
remote_open (void *h)
{
  struct remote *r = h;

  for (unsigned i = 0; i < r->nlanes; i++) {
    struct lane *ln = &r->lanes[i];

    ln->r = r;
    ln->state = LANE_CONNECTED;
    ln->in_ev.fn = lane_in_done;
    ln->out_ev.fn = lane_out_done;
    ln->timer_ev.fn = lane_timer_done;
    ln->inbox_work.fn = lane_inbox;
    ln->kick_work.fn = lane_kick_work;
    list_init (&ln->pending);
    list_init (&ln->done);
    list_init (&ln->inbox);
    pthread_mutex_init (&ln->lock, NULL);
    if (!(ln->nbd = remote_connect (r)))
      return -1;
    ln->fd = nbd_aio_get_fd (ln->nbd);
    if (i == 0 && remote_learn (r, ln->nbd) == -1)
      return -1;
    if (i == 0 && r->nlanes > 1 && !(r->caps & BACKEND_CAN_MULTI_CONN)) {
      log_info ("nbd: %s does not allow multi-conn: using one connection "
                "instead of %u", r->uri, r->nlanes);
      r->nlanes = 1;
    }
  }
  log_debug ("nbd: %s: %" PRIu64 " bytes, caps 0x%x, %u connection(s)",
             r->uri, r->size, r->caps, r->nlanes);
  return 0;
}

static void
remote_close (void *h)
{
  struct remote *r = h;

  for (unsigned i = 0; i < MAX_LANES; i++)
    if (r->lanes[i].nbd) {
      nbd_close (r->lanes[i].nbd);
      pthread_mutex_destroy (&r->lanes[i].lock);
    }
  pthread_mutex_destroy (&r->lock);
  free (r->uri);
  free (r);
}

static uint64_t remote_get_size (void *h) { return ((struct remote *) h)->size; }
static uint32_t remote_get_caps (void *h) { return ((struct remote *) h)->caps; }

static void
remote_block_size (void *h, uint32_t *min, uint32_t *pref, uint32_t *max)
{
  struct remote *r = h;

  *min = r->min_block;
  *pref = r->pref_block;
  *max = r->max_block;
}

/* Synchronous flush, for the flush at exit: the loops have stopped, so the
 * main thread may drive the handles. */
static int
remote_flush (void *h)
{
  struct remote *r = h;
  int ret = 0;

  for (unsigned i = 0; i < r->nlanes; i++)
    if (r->lanes[i].nbd && nbd_aio_is_ready (r->lanes[i].nbd) &&
        nbd_flush (r->lanes[i].nbd, 0) == -1) {
      log_error ("nbd: flush: %s", nbd_get_error ());
      ret = -EIO;
    }
  return ret;
}

/* Issuing commands (owner thread). */

/* The length of the piece of IO to send next. */
static uint32_t
piece (const struct remote *r, const struct backend_io *io)
{
  uint32_t left = io->count - io->done_bytes;

  if (io->op == BACKEND_OP_FLUSH || io->op == BACKEND_OP_EXTENTS)
    return left;
  return left < r->max_request ? left : r->max_request;
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

static int
on_extents (void *user_data, const char *context, uint64_t offset,
            uint32_t *entries, size_t n, int *error)
{
  struct backend_io *io = user_data;

  if (strcmp (context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (size_t i = 0; i + 1 < n; i += 2) {
    if (backend_extents_add (io->ext, offset, entries[i], entries[i + 1] &
                             (BACKEND_EXTENT_HOLE | BACKEND_EXTENT_ZERO)))
      break;
    offset += entries[i];
  }
  return 0;
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
                                   .callback = on_extents, .user_data = io },
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
  ln->nbd = nbd_create ();
  if (ln->nbd &&
      nbd_add_meta_context (ln->nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) != -1 &&
      nbd_aio_connect_uri (ln->nbd, ln->r->uri) != -1) {
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

  if (size != (int64_t) ln->r->size) {
    log_error ("nbd: %s: the export now has %" PRId64 " bytes instead of "
               "%" PRIu64 ": not using it", ln->r->uri, size, ln->r->size);
    ln->state = LANE_LOST;      /* lane_kick closes it and retries */
    return;
  }
  if (ln->attempts > 0)
    log_info ("nbd: %s: reconnected (attempt %u)", ln->r->uri, ln->attempts);
  ln->state = LANE_CONNECTED;
  ln->attempts = 0;
}

/* After anything happened: look at completions and at the connection,
 * send what waits, and poll for what libnbd wants next. */
static void
lane_kick (struct lane *ln)
{
  do {
    lane_reap (ln);
    if (ln->nbd && (ln->state == LANE_LOST || nbd_aio_is_dead (ln->nbd) ||
                    nbd_aio_is_closed (ln->nbd)))
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
  } while (ln->done.head ||
           (ln->state == LANE_CONNECTED && ln->pending.head &&
            !nbd_aio_is_dead (ln->nbd)));
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

/* Take IO on the owner thread.  Never completes anything itself (it runs
 * inside submit): whatever needs looking at is deferred to lane_kick. */
static void
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

/* The lane thread L uses: its own, or a shared one when all are owned. */
static struct lane *
lane_for (struct remote *r, struct loop *l)
{
  unsigned n = atomic_load_explicit (&r->nmap, memory_order_acquire);
  struct lane *ln = NULL;

  for (unsigned i = 0; i < n; i++)
    if (r->map[i].loop == l)
      return r->map[i].lane;
  pthread_mutex_lock (&r->lock);
  n = atomic_load_explicit (&r->nmap, memory_order_relaxed);
  for (unsigned i = 0; i < n && !ln; i++)
    if (r->map[i].loop == l)
      ln = r->map[i].lane;
  if (!ln && n < MAX_THREADS) {
    if (r->nclaimed < r->nlanes) {
      ln = &r->lanes[r->nclaimed++];
      ln->loop = l;
    }
    else
      ln = &r->lanes[n % r->nlanes];
    r->map[n].loop = l;
    r->map[n].lane = ln;
    atomic_store_explicit (&r->nmap, n + 1, memory_order_release);
  }
  pthread_mutex_unlock (&r->lock);
  return ln;
}

static int
remote_submit (void *h, struct io_uring *ring, struct backend_io *io)
{
  struct loop *l = container_of (ring, struct loop, ring);
  struct lane *ln = lane_for (h, l);
  bool post;

  if (!ln)
    return -EMFILE;             /* more threads than MAX_THREADS */
  io->loop = l;
  io->priv = ln;
  io->done_bytes = 0;
  io->phase = io->op == BACKEND_OP_EXTENTS ? io->ext->n : 0;
  if (ln->loop == l) {
    lane_take (ln, io);
    return 0;
  }
  pthread_mutex_lock (&ln->lock);
  list_push (&ln->inbox, io);
  post = !ln->inbox_posted;
  ln->inbox_posted = true;
  pthread_mutex_unlock (&ln->lock);
  if (post)
    loop_post (ln->loop, &ln->inbox_work);
  return 0;
}

const struct backend_ops remote_backend_ops = {
  .name = "nbd",
  .synopsis = "uri=URI [connections=N] [retry=N] [retry-delay=SECONDS]: "
              "a remote NBD server",
  .help = "           uri=URI          nbd://HOST[:PORT]/EXPORT or\n"
          "                            nbd+unix:///EXPORT?socket=PATH "
          "(required)\n"
          "           connections=N    connections to open when the remote "
          "allows\n"
          "                            multi-conn (1-16, default 1)\n"
          "           retry=N          reconnection attempts before failing "
          "with EIO\n"
          "                            (default 5)\n"
          "           retry-delay=S    seconds before the second attempt, "
          "doubling\n"
          "                            (default 1)\n"
          "           readonly=BOOL    do not write even if the remote "
          "allows\n",
  .props = BACKEND_INLINE,
  .config = remote_config,
  .open = remote_open,
  .close = remote_close,
  .get_size = remote_get_size,
  .get_caps = remote_get_caps,
  .block_size = remote_block_size,
  .flush = remote_flush,
  .submit = remote_submit,
};
