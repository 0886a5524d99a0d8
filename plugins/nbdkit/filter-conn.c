/* The filter chain per connection: the ubdkit backend's per-connection
 * side (preconnect, list_exports, connect, disconnect, the data path)
 * and its two tables.
 *
 * Per connection (on a worker thread): the filters' open outer-first,
 * each opening its next layer with next_open, then prepare inner-first;
 * size, block sizes and capabilities asked once through the outermost
 * context; finalize and close outer-first at disconnect.  Requests go to
 * the outermost filter under the chain's thread model lock and inside
 * the connection's thread state (filter-next.c carries them down).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "filter.h"

#define N(c) ((nbdkit_next *) (c))

static pthread_mutex_t *
lock_of (struct filterconn *fc)
{
  if (fc->ch->model <= NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
    return &fc->ch->lock;
  if (fc->ch->model == NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS)
    return &fc->lock;
  return NULL;
}

/* Around every call for a connection: the thread model's lock and the
 * connection's thread state; DATA: a request (errors rate limited). */
static void
enter_as (struct filterconn *fc, bool data)
{
  pthread_mutex_t *m = lock_of (fc);

  if (m)
    pthread_mutex_lock (m);
  plughost_conn_push (&(struct plughost_thread_conn) {
                        fc->bottom_name, fc->peer_fd, fc->tls, data });
}

static void enter (struct filterconn *fc) { enter_as (fc, true); }

static int
leave (struct filterconn *fc, int r, int err)
{
  pthread_mutex_t *m = lock_of (fc);

  plughost_conn_pop ();
  if (m)
    pthread_mutex_unlock (m);
  return r == -1 ? -(err > 0 ? err : EIO) : 0;
}

static int
preconnect_chain (struct filterchain *ch, nbdkit_backend *l, int readonly);

static int
next_preconnect (nbdkit_backend *l, int readonly)
{
  return preconnect_chain (l->chain, l, readonly);
}

static int
preconnect_chain (struct filterchain *ch, nbdkit_backend *l, int readonly)
{
  if (l->i == ch->nf) {
    struct backend *in = &ch->inner;
    return in->ops->preconnect
           ? in->ops->preconnect (in->h, plughost_conn_get ()->peer_fd,
                                  readonly) : 0;
  }
  if (l->f.preconnect)
    return l->f.preconnect (next_preconnect, l + 1, readonly);
  return next_preconnect (l + 1, readonly);
}

/* Calls for a client before it has a connection (preconnect: before the
 * handshake, so no TLS yet; list_exports): the chain's lock if its model
 * serializes more than requests, and the client's thread state. */
#define early_enter(ch, fd, tls) \
  plughost_early_enter (&(ch)->lock, (ch)->model, fd, tls)
#define early_leave(ch) plughost_early_leave (&(ch)->lock, (ch)->model)

static int
filter_preconnect (void *hv, int peer_fd, bool readonly)
{
  struct filterchain *ch = hv;
  int r;

  early_enter (ch, peer_fd, false);
  r = preconnect_chain (ch, &ch->layers[0], readonly || ch->readonly);
  early_leave (ch);
  if (r == -1) {
    log_error ("nbdkit: filters: preconnect refused the client");
    return -1;
  }
  return 0;
}

/* NBD_OPT_LIST through the chain (filter-exports.c). */
static int
filter_list_exports (void *hv, int peer_fd, bool readonly,
                     struct backend_conn *bc)
{
  struct filterchain *ch = hv;
  struct nbdkit_exports *x = nbdkit_exports_new ();
  int r;

  if (!x)
    return -EIO;
  early_enter (ch, peer_fd, bc->tls);
  r = filter_list_exports_at (&ch->layers[0], readonly || ch->readonly,
                              bc->tls, x);
  early_leave (ch);
  if (r == -1) {
    log_error ("nbdkit: filters: list_exports failed");
    r = -EIO;
  }
  for (size_t i = 0; r == 0 && i < nbdkit_exports_count (x); i++) {
    struct nbdkit_export e = nbdkit_get_export (x, i);
    r = bc->list_add (bc, e.name, e.description);
  }
  nbdkit_exports_free (x);
  return r;
}

/* The capabilities the client sees, from the outermost context, as
 * nbdkit's handshake turns the can_* answers into NBD flags. */
static int
ask_caps (struct filterconn *fc)
{
  static const struct { enum filter_can w; uint32_t bit; int min; } map[] = {
    { FCAN_WRITE, BACKEND_CAN_WRITE, 1 },
    { FCAN_FLUSH, BACKEND_CAN_FLUSH, 1 },
    { FCAN_TRIM, BACKEND_CAN_TRIM, 1 },
    { FCAN_ZERO, BACKEND_CAN_ZERO, NBDKIT_ZERO_EMULATE },
    { FCAN_FAST_ZERO, BACKEND_CAN_FAST_ZERO, 1 },
    { FCAN_FUA, BACKEND_CAN_FUA, NBDKIT_FUA_EMULATE },
    { FCAN_MULTI_CONN, BACKEND_CAN_MULTI_CONN, 1 },
    { FCAN_CACHE, BACKEND_CAN_CACHE, NBDKIT_CACHE_EMULATE },
    { FCAN_ROTATIONAL, BACKEND_IS_ROTATIONAL, 1 },
  };

  /* Block status always works, as in nbdkit: a chain without extents
   * answers "all data" (filter-next.c). */
  fc->caps = BACKEND_CAN_EXTENTS;
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    int r = filter_next_can (fc->top, map[i].w);
    if (r == -1) {
      log_error ("nbdkit: filters: a can_* query failed");
      return -1;
    }
    if (r >= map[i].min)
      fc->caps |= map[i].bit;
  }
  /* As nbdkit's handshake: connections one at a time are no multi-conn. */
  if (fc->ch->model <= NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS)
    fc->caps &= ~BACKEND_CAN_MULTI_CONN;
  return 0;
}

static void filter_disconnect (void *cv);

/* The names the connection keeps: the outermost layer's (what "" stood
 * for, NBD_INFO_NAME), the bottom's (nbdkit_export_name in filter calls,
 * as nbdkit's is the plugin's), the outermost export_description. */
static int
keep_names (struct filterconn *fc)
{
  struct nbdkit_context *c = fc->top;
  const char *d;

  while (c->next)
    c = c->next;
  fc->name = strdup (fc->top->export);
  fc->bottom_name = strdup (c->export);
  if (!fc->name || !fc->bottom_name) {
    log_error ("nbdkit: strdup: %m");
    return -1;
  }
  plughost_set_export_name (fc->bottom_name);
  d = filter_next_export_description (fc->top);
  if (d && !(fc->description = strndup (d, 4096))) {
    log_error ("nbdkit: strdup: %m");
    return -1;
  }
  return 0;
}

static void *
filter_connect (void *hv, const char *export, bool readonly, int peer_fd,
                bool tls)
{
  struct filterchain *ch = hv;
  struct filterconn *fc = calloc (1, sizeof *fc);
  uint32_t min = 0, pref = 0, max = 0;

  if (!fc)
    return NULL;
  fc->conn = true;
  fc->ch = ch;
  fc->peer_fd = peer_fd;
  fc->tls = tls;
  pthread_mutex_init (&fc->lock, NULL);
  enter_as (fc, false);
  fc->top = filter_ctx_open (&ch->layers[0], readonly || ch->readonly,
                             export);
  if (!fc->top || filter_ctx_prepare (fc->top) == -1 ||
      keep_names (fc) == -1)
    goto fail;
  fc->size = filter_next_get_size (fc->top);
  if (fc->size < 0) {
    log_error ("nbdkit: filters: get_size failed");
    goto fail;
  }
  if (ask_caps (fc) == -1 ||
      filter_next_block_size (fc->top, &min, &pref, &max) == -1)
    goto fail;
  fc->min_block = min ? min : 1;
  fc->pref_block = pref ? pref : 4096;
  fc->max_block = max && max < BACKEND_MAX_REQUEST ? max : BACKEND_MAX_REQUEST;
  leave (fc, 0, 0);
  return fc;

 fail:
  leave (fc, 0, 0);
  filter_disconnect (fc);
  return NULL;
}

static void
filter_disconnect (void *cv)
{
  struct filterconn *fc = cv;

  if (fc->top) {
    enter_as (fc, false);
    filter_ctx_finalize (fc->top);
    filter_ctx_close (fc->top);
    leave (fc, 0, 0);
  }
  pthread_mutex_destroy (&fc->lock);
  free (fc->name);
  free (fc->bottom_name);
  free (fc->description);
  free (fc);
}

static const char *
filter_conn_name (void *cv)
{
  return ((struct filterconn *) cv)->name;
}

static const char *
filter_conn_description (void *cv)
{
  return ((struct filterconn *) cv)->description;
}

/* The bottom's reconnections (a ublk device asks with its connection). */
static uint64_t
filter_reconnects (void *hv)
{
  struct filterchain *ch = *(bool *) hv ? ((struct filterconn *) hv)->ch : hv;

  return ch->inner_opened ? backend_reconnects (&ch->inner) : 0;
}

static uint64_t
filter_get_size (void *hv)
{
  return *(bool *) hv ? (uint64_t) ((struct filterconn *) hv)->size : 0;
}

static uint32_t
filter_get_caps (void *hv)
{
  if (*(bool *) hv)
    return ((struct filterconn *) hv)->caps;
  return ((struct filterchain *) hv)->model
         == NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS
         ? BACKEND_ONE_CONNECTION : 0;
}

static void
filter_block_size (void *hv, uint32_t *min, uint32_t *pref, uint32_t *max)
{
  struct filterconn *fc = hv;

  *min = fc->min_block;
  *pref = fc->pref_block;
  *max = fc->max_block;
}

static uint32_t
nbd_flags (uint32_t flags)
{
  return ((flags & BACKEND_FLAG_FUA) ? NBDKIT_FLAG_FUA : 0) |
         ((flags & BACKEND_FLAG_MAY_TRIM) ? NBDKIT_FLAG_MAY_TRIM : 0) |
         ((flags & BACKEND_FLAG_FAST) ? NBDKIT_FLAG_FAST_ZERO : 0) |
         ((flags & BACKEND_FLAG_REQ_ONE) ? NBDKIT_FLAG_REQ_ONE : 0);
}

#define TOP(fc) (N ((fc)->top))

static int
filter_io_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->pread (TOP (fc), buf, count, offset, 0, &err);
  return leave (fc, r, err);
}

static int
filter_io_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
                  uint32_t flags)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->pwrite (TOP (fc), buf, count, offset, nbd_flags (flags),
                        &err);
  return leave (fc, r, err);
}

static int
filter_io_flush (void *h)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->flush (TOP (fc), 0, &err);
  return leave (fc, r, err);
}

static int
filter_io_trim (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->trim (TOP (fc), count, offset, nbd_flags (flags), &err);
  return leave (fc, r, err);
}

static int
filter_io_zero (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->zero (TOP (fc), count, offset, nbd_flags (flags), &err);
  return leave (fc, r, err);
}

static int
filter_io_cache (void *h, uint32_t count, uint64_t offset)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->cache (TOP (fc), count, offset, 0, &err);
  return leave (fc, r, err);
}

static int
filter_io_extents (void *h, uint32_t count, uint64_t offset, uint32_t flags,
                   struct backend_extents *e)
{
  struct filterconn *fc = h;
  struct nbdkit_extents x;
  int err = 0, r;

  plughost_extents_wrap (&x, e);
  enter (fc);
  r = TOP (fc)->extents (TOP (fc), count, offset, nbd_flags (flags), &x,
                         &err);
  if (r == 0 && e->n == 0) {
    nbdkit_error ("extents: filter must return at least one extent");
    r = -1;
    err = EINVAL;
  }
  return leave (fc, r, err);
}

/* What both tables have; a chain that lists its exports
 * (filterchain.listing) has list_exports and the outermost layer's name
 * for "" too. */
#define FILTER_OPS                                                      \
  .name = "filter",                                                     \
  .synopsis = "--filter=NAME BACKEND ...  an nbdkit filter chain",      \
  .config = NULL,               /* only through backend_filter_hook */  \
  .open = filter_open,                                                  \
  .close = filter_close,                                                \
  .forget = filter_forget,                                              \
  .connect = filter_connect,                                            \
  .disconnect = filter_disconnect,                                      \
  .preconnect = filter_preconnect,                                      \
  .get_size = filter_get_size,                                          \
  .get_caps = filter_get_caps,                                          \
  .block_size = filter_block_size,                                      \
  .pread = filter_io_pread,                                             \
  .pwrite = filter_io_pwrite,                                           \
  .flush = filter_io_flush,                                             \
  .trim = filter_io_trim,                                               \
  .zero = filter_io_zero,                                               \
  .cache = filter_io_cache,                                             \
  .extents = filter_io_extents,                                         \
  .reconnects = filter_reconnects,                                      \
  .conn_description = filter_conn_description

const struct backend_ops filter_backend_ops = { FILTER_OPS };

const struct backend_ops filter_listing_ops = {
  FILTER_OPS,
  .list_exports = filter_list_exports,
  .conn_name = filter_conn_name,
};
