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
#include <stdlib.h>
#include <string.h>

#include "remote.h"
#include "log.h"

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

int
remote_on_extents (void *user_data, const char *context, uint64_t offset,
                   uint32_t *entries, size_t n, int *error)
{
  struct backend_extents *e = user_data;

  if (strcmp (context, LIBNBD_CONTEXT_BASE_ALLOCATION) != 0)
    return 0;
  for (size_t i = 0; i + 1 < n; i += 2) {
    if (backend_extents_add (e, offset, entries[i], entries[i + 1] &
                             (BACKEND_EXTENT_HOLE | BACKEND_EXTENT_ZERO)))
      break;
    offset += entries[i];
  }
  return 0;
}

/* Opening: connect every lane now, so a bad URI fails at start-up. */

struct nbd_handle *
remote_handle_new (void)
{
  struct nbd_handle *nbd = nbd_create ();

  if (nbd &&
      (nbd_add_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == -1 ||
       nbd_set_uri_allow_local_file (nbd, true) == -1)) {
    nbd_close (nbd);
    return NULL;
  }
  return nbd;
}

struct nbd_handle *
remote_connect (const struct remote *r)
{
  struct nbd_handle *nbd = remote_handle_new ();

  if (!nbd) {
    log_error ("nbd: %s", nbd_get_error ());
    return NULL;
  }
  if (nbd_connect_uri (nbd, r->uri) == -1) {
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
int
remote_learn (const struct remote *r, struct nbd_handle *nbd,
              struct remote_info *info)
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
  info->size = size;
  info->caps = 0;
  for (size_t i = 0; i < sizeof q / sizeof q[0]; i++)
    if (q[i].fn (nbd) == 1)
      info->caps |= q[i].cap;
  if (nbd_can_meta_context (nbd, LIBNBD_CONTEXT_BASE_ALLOCATION) == 1)
    info->caps |= BACKEND_CAN_EXTENTS;
  if (nbd_is_read_only (nbd) != 1 && !r->readonly)
    info->caps |= BACKEND_CAN_WRITE;
  info->min_block = block_size (nbd, LIBNBD_SIZE_MINIMUM, 1);
  info->pref_block = block_size (nbd, LIBNBD_SIZE_PREFERRED, 4096);
  info->max_request = block_size (nbd, LIBNBD_SIZE_MAXIMUM,
                                  DEFAULT_MAX_BLOCK);
  info->max_block = info->max_request < DEFAULT_MAX_BLOCK
                    ? info->max_request : DEFAULT_MAX_BLOCK;
  return 0;
}


static int
remote_open (void *h)
{
  struct remote *r = h;

  for (unsigned i = 0; i < r->nlanes; i++) {
    struct lane *ln = &r->lanes[i];

    if (!(ln->nbd = remote_connect (r)))
      return -1;
    lane_init (ln, r);
    if (i == 0 && remote_learn (r, ln->nbd, &r->info) == -1)
      return -1;
    if (i == 0 && r->nlanes > 1 &&
        !(r->info.caps & BACKEND_CAN_MULTI_CONN)) {
      log_info ("nbd: %s does not allow multi-conn: using one connection "
                "instead of %u", r->uri, r->nlanes);
      r->nlanes = 1;
    }
  }
  log_debug ("nbd: %s: %" PRIu64 " bytes, caps 0x%x, %u connection(s)",
             r->uri, r->info.size, r->info.caps, r->nlanes);
  return 0;
}

void
remote_close (void *h)
{
  struct remote *r = h;

  for (unsigned i = 0; i < MAX_LANES; i++) {
    if (r->lanes[i].nbd)
      nbd_close (r->lanes[i].nbd);
    if (r->lanes[i].r)          /* lane_init ran */
      pthread_mutex_destroy (&r->lanes[i].lock);
  }
  pthread_mutex_destroy (&r->lock);
  free (r->uri);
  free (r);
}

static uint64_t
remote_get_size (void *h)
{
  return ((struct remote *) h)->info.size;
}

static uint32_t
remote_get_caps (void *h)
{
  return ((struct remote *) h)->info.caps;
}

static void
remote_block_size (void *h, uint32_t *min, uint32_t *pref, uint32_t *max)
{
  struct remote *r = h;

  *min = r->info.min_block;
  *pref = r->info.pref_block;
  *max = r->info.max_block;
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

/* For the counters: summed over the lanes, each written by its owner. */
static uint64_t
remote_reconnects (void *h)
{
  struct remote *r = h;
  uint64_t n = 0;

  for (unsigned i = 0; i < r->nlanes; i++)
    n += atomic_load_explicit (&r->lanes[i].reconnects, memory_order_relaxed);
  return n;
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
  .reconnects = remote_reconnects,
  .get_size = remote_get_size,
  .get_caps = remote_get_caps,
  .block_size = remote_block_size,
  .flush = remote_flush,
  .submit = remote_submit,
  .blocking = &remote_blocking_ops,
};
