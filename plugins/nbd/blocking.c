/* The nbd backend under nbdkit filters (remote_blocking_ops): a blocking
 * data path, for the worker threads the filter host calls it on.
 *
 * Why not the lanes of nbd.c: a lane is driven by the loop thread that
 * owns it, through that thread's io_uring, and completes on it; filter
 * calls run on worker threads, which have neither, and a filter (retry)
 * closes and reopens its next layer after an error, which must then be a
 * connection of its own.  So here each filter context's bottom (each
 * connect) is its own libnbd handle, connected in connect, driven with
 * libnbd's blocking calls (nbd_pread ...) on the calling worker, and
 * closed in disconnect: retry's reopen connects anew.  libnbd runs one
 * blocking command at a time on a handle, so a context opens up to
 * `connections` handles when the remote allows multi-conn, and a request
 * takes a free one (or waits for one).  Size, capabilities and block
 * sizes are the remote's, learned by each context from its first handle,
 * as nbdkit's nbd plugin learns them per connection.
 *
 * Reconnection is the lanes': a request whose handle died (or finds it
 * dead) connects anew on its worker, at once, then after retry-delay,
 * doubling up to 30 s, `retry` attempts in all, and is sent again from
 * the piece that failed; when the attempts are used up it fails with EIO
 * and the next request on that handle makes one attempt.  The remote
 * must come back with the same size.  With retry=0 a context does not
 * reconnect by itself: the retry filter's reopen does.
 *
 * Allocation: the context at connect; libnbd allocates per command.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "remote.h"
#include "log.h"

struct remote_conn {
  struct nbd_handle *nbd;          /* NULL: lost, to connect anew */
  bool busy;                       /* a request uses it */
  bool down;                       /* attempts used up: one per request */
};

struct remote_ctx {
  bool conn;                       /* true */
  struct remote *r;
  struct remote_info info;
  pthread_mutex_t lock;            /* busy flags */
  pthread_cond_t freed;
  unsigned n;
  struct remote_conn c[MAX_LANES];
};

/* Start-up: one connection, so a wrong URI fails now, and what it tells
 * of multi-conn, which decides how many handles a context opens. */
static int
blocking_open (void *h)
{
  struct remote *r = h;
  struct nbd_handle *nbd = remote_connect (r);
  int ret;

  if (!nbd)
    return -1;
  ret = remote_learn (r, nbd, &r->info);
  nbd_shutdown (nbd, 0);
  nbd_close (nbd);
  if (ret == 0 && r->nlanes > 1 && !(r->info.caps & BACKEND_CAN_MULTI_CONN)) {
    log_info ("nbd: %s does not allow multi-conn: one connection per "
              "filter context instead of %u", r->uri, r->nlanes);
    r->nlanes = 1;
  }
  return ret;
}

static void
conn_drop (struct remote_conn *s)
{
  if (s->nbd) {
    if (nbd_aio_is_ready (s->nbd))
      nbd_shutdown (s->nbd, 0);
    nbd_close (s->nbd);
  }
  s->nbd = NULL;
}

static void
blocking_disconnect (void *cv)
{
  struct remote_ctx *x = cv;

  for (unsigned i = 0; i < x->n; i++)
    conn_drop (&x->c[i]);
  pthread_cond_destroy (&x->freed);
  pthread_mutex_destroy (&x->lock);
  free (x);
}

/* A context: its first handle says what the export is, the others must
 * agree on the size. */
static void *
blocking_connect (void *h, const char *export, bool readonly, int peer_fd,
                  bool tls)
{
  struct remote *r = h;
  struct remote_ctx *x = calloc (1, sizeof *x);

  (void) export; (void) readonly; (void) peer_fd; (void) tls;
  if (!x) {
    log_error ("nbd: calloc: %m");
    return NULL;
  }
  x->conn = true;
  x->r = r;
  pthread_mutex_init (&x->lock, NULL);
  pthread_cond_init (&x->freed, NULL);
  x->n = 1;
  if (!(x->c[0].nbd = remote_connect (r)) ||
      remote_learn (r, x->c[0].nbd, &x->info) == -1)
    goto fail;
  if (x->info.caps & BACKEND_CAN_MULTI_CONN)
    x->n = r->nlanes;
  for (unsigned i = 1; i < x->n; i++) {
    if (!(x->c[i].nbd = remote_connect (r)))
      goto fail;
    if (nbd_get_size (x->c[i].nbd) != (int64_t) x->info.size) {
      log_error ("nbd: %s: the export changed size between two "
                 "connections", r->uri);
      goto fail;
    }
  }
  log_debug ("nbd: %s: %" PRIu64 " bytes, caps 0x%x, %u connection(s) for "
             "a filter context", r->uri, x->info.size, x->info.caps, x->n);
  return x;

 fail:
  blocking_disconnect (x);
  return NULL;
}

/* The config handle answers nothing (connect gives a context's). */
static uint64_t
blocking_get_size (void *h)
{
  return *(bool *) h ? ((struct remote_ctx *) h)->info.size : 0;
}

static uint32_t
blocking_get_caps (void *h)
{
  return *(bool *) h ? ((struct remote_ctx *) h)->info.caps : 0;
}

static void
blocking_block_size (void *h, uint32_t *min, uint32_t *pref, uint32_t *max)
{
  struct remote_ctx *x = h;

  *min = x->info.min_block;
  *pref = x->info.pref_block;
  *max = x->info.max_block;
}

static uint64_t
blocking_reconnects (void *h)
{
  return atomic_load_explicit (&((struct remote *) h)->ctx_reconnects,
                               memory_order_relaxed);
}

/* Handles. */

static struct remote_conn *
conn_take (struct remote_ctx *x)
{
  struct remote_conn *s = NULL;

  pthread_mutex_lock (&x->lock);
  for (;;) {
    for (unsigned i = 0; i < x->n && !s; i++)
      if (!x->c[i].busy)
        s = &x->c[i];
    if (s)
      break;
    pthread_cond_wait (&x->freed, &x->lock);
  }
  s->busy = true;
  pthread_mutex_unlock (&x->lock);
  return s;
}

static void
conn_give (struct remote_ctx *x, struct remote_conn *s)
{
  pthread_mutex_lock (&x->lock);
  s->busy = false;
  pthread_cond_signal (&x->freed);
  pthread_mutex_unlock (&x->lock);
}

static bool
conn_lost (struct nbd_handle *nbd)
{
  return nbd_aio_is_dead (nbd) || nbd_aio_is_closed (nbd);
}

static void
sleep_seconds (double d)
{
  struct timespec ts = { (time_t) d, (long) ((d - (time_t) d) * 1e9) };

  while (nanosleep (&ts, &ts) == -1 && errno == EINTR)
    ;
}

/* One attempt: a handle to the same export, or NULL. */
static struct nbd_handle *
attempt (struct remote_ctx *x, unsigned n)
{
  struct nbd_handle *nbd = remote_handle_new ();

  if (nbd && nbd_connect_uri (nbd, x->r->uri) != -1) {
    int64_t size = nbd_get_size (nbd);
    if (size == (int64_t) x->info.size)
      return nbd;
    log_error ("nbd: %s: the export now has %" PRId64 " bytes instead of "
               "%" PRIu64 ": not using it", x->r->uri, size, x->info.size);
  }
  else
    log_debug ("nbd: %s: attempt %u: %s", x->r->uri, n, nbd_get_error ());
  if (nbd)
    nbd_close (nbd);
  return NULL;
}

/* Connect S anew (see the top of the file): 0 or -EIO. */
static int
conn_reconnect (struct remote_ctx *x, struct remote_conn *s)
{
  unsigned tries = s->down ? 1 : x->r->retry;
  double delay = x->r->retry_delay;

  for (unsigned i = 0; i < tries; i++) {
    if (i > 0) {
      sleep_seconds (delay);
      delay = delay * 2 < MAX_BACKOFF ? delay * 2 : MAX_BACKOFF;
    }
    if ((s->nbd = attempt (x, i + 1))) {
      log_info ("nbd: %s: reconnected (attempt %u)", x->r->uri, i + 1);
      atomic_fetch_add_explicit (&x->r->ctx_reconnects, 1,
                                 memory_order_relaxed);
      s->down = false;
      return 0;
    }
  }
  if (!s->down && tries == 0)
    log_error ("nbd: %s: retry=0: failing requests with EIO until it is "
               "back", x->r->uri);
  else if (!s->down)
    log_error ("nbd: %s: giving up after %u attempt(s): failing requests "
               "with EIO until it is back", x->r->uri, tries);
  s->down = true;
  return -EIO;
}

/* Requests. */

struct req {
  enum backend_op op;
  void *buf;
  uint32_t count, flags;
  uint64_t offset;
  struct backend_extents *e;
  uint32_t done;                   /* bytes acknowledged so far */
};

static int
send_piece (struct nbd_handle *nbd, const struct req *q, uint32_t n)
{
  uint64_t off = q->offset + q->done;
  char *buf = (char *) q->buf + q->done;
  uint32_t fua = (q->flags & BACKEND_FLAG_FUA) ? LIBNBD_CMD_FLAG_FUA : 0;

  switch (q->op) {
  case BACKEND_OP_READ: return nbd_pread (nbd, buf, n, off, 0);
  case BACKEND_OP_WRITE: return nbd_pwrite (nbd, buf, n, off, fua);
  case BACKEND_OP_FLUSH: return nbd_flush (nbd, 0);
  case BACKEND_OP_TRIM: return nbd_trim (nbd, n, off, fua);
  case BACKEND_OP_ZERO:
    return nbd_zero (nbd, n, off, fua |
                     ((q->flags & BACKEND_FLAG_MAY_TRIM)
                      ? 0 : LIBNBD_CMD_FLAG_NO_HOLE) |
                     ((q->flags & BACKEND_FLAG_FAST)
                      ? LIBNBD_CMD_FLAG_FAST_ZERO : 0));
  case BACKEND_OP_CACHE: return nbd_cache (nbd, n, off, 0);
  case BACKEND_OP_EXTENTS:
    return nbd_block_status (nbd, n, off, (nbd_extent_callback) {
                               .callback = remote_on_extents,
                               .user_data = q->e },
                             (q->flags & BACKEND_FLAG_REQ_ONE)
                             ? LIBNBD_CMD_FLAG_REQ_ONE : 0);
  }
  abort ();
}

/* Send what is left of Q on NBD, in pieces of the remote's maximum:
 * 0 or -errno (the connection may then be lost). */
static int
send_rest (struct nbd_handle *nbd, uint32_t max, struct req *q)
{
  bool whole = q->op == BACKEND_OP_FLUSH || q->op == BACKEND_OP_EXTENTS;

  do {
    uint32_t left = q->count - q->done;
    uint32_t n = whole || left < max ? left : max;
    if (send_piece (nbd, q, n) == -1)
      return nbd_get_errno () ? -nbd_get_errno () : -EIO;
    q->done += n;
  } while (q->done < q->count);
  return 0;
}

/* Run one request on a free handle of context H, reconnecting it while
 * it is lost and the attempts allow. */
static int
run (void *h, enum backend_op op, void *buf, uint32_t count,
     uint64_t offset, uint32_t flags, struct backend_extents *e)
{
  struct remote_ctx *x = h;
  struct req q = { .op = op, .buf = buf, .count = count, .flags = flags,
                   .offset = offset, .e = e };
  struct remote_conn *s = conn_take (x);
  size_t e0 = e ? e->n : 0;
  int r;

  for (;;) {
    if (!s->nbd && (r = conn_reconnect (x, s)) < 0)
      break;
    r = send_rest (s->nbd, x->info.max_request, &q);
    if (r == 0 || !conn_lost (s->nbd))
      break;
    log_error ("nbd: %s: connection lost%s", x->r->uri,
               x->r->retry && !s->down ? "; reconnecting" : "");
    conn_drop (s);
    if (e)
      e->n = e0;                /* forget a partial answer */
  }
  conn_give (x, s);
  return r;
}

static int
blocking_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  return run (h, BACKEND_OP_READ, buf, count, offset, 0, NULL);
}

static int
blocking_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
                 uint32_t flags)
{
  return run (h, BACKEND_OP_WRITE, (void *) buf, count, offset, flags, NULL);
}

static int
blocking_flush (void *h)
{
  return run (h, BACKEND_OP_FLUSH, NULL, 0, 0, 0, NULL);
}

static int
blocking_trim (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  return run (h, BACKEND_OP_TRIM, NULL, count, offset, flags, NULL);
}

static int
blocking_zero (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  return run (h, BACKEND_OP_ZERO, NULL, count, offset, flags, NULL);
}

static int
blocking_cache (void *h, uint32_t count, uint64_t offset)
{
  return run (h, BACKEND_OP_CACHE, NULL, count, offset, 0, NULL);
}

static int
blocking_extents (void *h, uint32_t count, uint64_t offset, uint32_t flags,
                  struct backend_extents *e)
{
  return run (h, BACKEND_OP_EXTENTS, NULL, count, offset, flags, e);
}

/* Put in place of remote_backend_ops by the filter host, after its
 * config (nbd.c's: the same handle), so there is no config here. */
const struct backend_ops remote_blocking_ops = {
  .name = "nbd",
  .synopsis = "uri=URI ...: a remote NBD server, under nbdkit filters",
  .open = blocking_open,
  .close = remote_close,
  .connect = blocking_connect,
  .disconnect = blocking_disconnect,
  .reconnects = blocking_reconnects,
  .get_size = blocking_get_size,
  .get_caps = blocking_get_caps,
  .block_size = blocking_block_size,
  .pread = blocking_pread,
  .pwrite = blocking_pwrite,
  .flush = blocking_flush,
  .trim = blocking_trim,
  .zero = blocking_zero,
  .cache = blocking_cache,
  .extents = blocking_extents,
};
