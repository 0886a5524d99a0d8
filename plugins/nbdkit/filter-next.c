/* The nbdkit filter object model: one context per layer and connection,
 * and the next_ops a filter calls on its next layer.
 *
 * As in nbdkit's backend.c, each context caches its layer's can_*
 * answers (a failure is not cached), with nbdkit's dependencies: trim,
 * zero, fast zero and FUA are "no" when the layer cannot write, fast zero
 * when it cannot zero, and a read-only context cannot write.  A filter
 * without a callback passes the call to its next layer.  Where a layer
 * says it emulates, the emulation happens at that layer as in nbdkit:
 * cache by reads; no extents, one data extent.  The bottom layer is the
 * ubdkit backend: a plugin's own emulations are plughost's; a native
 * backend without zero or FUA gets writes of zeros and a flush.
 *
 * Everything here runs on the worker thread that runs the request (or
 * the connect): filter calls never run on a loop or ublk queue thread.
 */
#include <config.h>

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "workers.h"
#include "filter.h"

#define N(c) ((nbdkit_next *) (c))
#define C(n) ((struct nbdkit_context *) (n))

static char zeroes[64 * 1024];  /* .bss: emulated write-zeroes */
static char scratch[64 * 1024]; /* emulated cache reads, under its lock */
static pthread_mutex_t scratch_lock = PTHREAD_MUTEX_INITIALIZER;
static atomic_bool said_blocks;   /* bottom_check's hint, said once */

static bool
is_bottom (const struct nbdkit_context *c)
{
  return c->b->i == c->b->chain->nf;
}

/* Fail with errno E: nbdkit's convention for next_ops. */
static int
fail (int *err, int e)
{
  *err = e;
  return -1;
}

/* A ubdkit callback's result (0 or -errno) as a next_ops one. */
static int
ubd (int r, int *err)
{
  return r < 0 ? fail (err, -r) : 0;
}

/* The bottom's answers from the ubdkit backend's capabilities, in the
 * values nbdkit's plugin layer gives. */
static int
bottom_can (struct nbdkit_context *c, enum filter_can which)
{
  uint32_t caps = c->view->caps;

  switch (which) {
  case FCAN_WRITE: return !c->view->readonly && (caps & BACKEND_CAN_WRITE);
  case FCAN_FLUSH: return !!(caps & BACKEND_CAN_FLUSH);
  case FCAN_ROTATIONAL: return !!(caps & BACKEND_IS_ROTATIONAL);
  case FCAN_TRIM: return !!(caps & BACKEND_CAN_TRIM);
  case FCAN_ZERO:
    return (caps & BACKEND_CAN_ZERO) ? NBDKIT_ZERO_NATIVE : NBDKIT_ZERO_EMULATE;
  case FCAN_FAST_ZERO:
    /* An emulated zero fails fast at once, as nbdkit's plugin layer says. */
    return (caps & BACKEND_CAN_ZERO) ? !!(caps & BACKEND_CAN_FAST_ZERO) : 1;
  case FCAN_EXTENTS: return !!(caps & BACKEND_CAN_EXTENTS);
  case FCAN_FUA:
    return (caps & BACKEND_CAN_FUA) ? NBDKIT_FUA_NATIVE
      : (caps & BACKEND_CAN_FLUSH) ? NBDKIT_FUA_EMULATE : NBDKIT_FUA_NONE;
  case FCAN_MULTI_CONN: return !!(caps & BACKEND_CAN_MULTI_CONN);
  case FCAN_CACHE:
    return (caps & BACKEND_CAN_CACHE) ? NBDKIT_CACHE_NATIVE
                                      : NBDKIT_CACHE_NONE;
  default: return -1;
  }
}

typedef int (*can_fn) (nbdkit_next *, void *);

static can_fn
filter_can_fn (const struct nbdkit_filter *f, enum filter_can which)
{
  switch (which) {
  case FCAN_WRITE: return f->can_write;
  case FCAN_FLUSH: return f->can_flush;
  case FCAN_ROTATIONAL: return f->is_rotational;
  case FCAN_TRIM: return f->can_trim;
  case FCAN_ZERO: return f->can_zero;
  case FCAN_FAST_ZERO: return f->can_fast_zero;
  case FCAN_EXTENTS: return f->can_extents;
  case FCAN_FUA: return f->can_fua;
  case FCAN_MULTI_CONN: return f->can_multi_conn;
  case FCAN_CACHE: return f->can_cache;
  default: return NULL;
  }
}

static int
layer_can (struct nbdkit_context *c, enum filter_can which)
{
  can_fn fn;

  if (is_bottom (c))
    return bottom_can (c, which);
  fn = filter_can_fn (&c->b->f, which);
  return fn ? fn (N (c->next), c->handle) : filter_next_can (c->next, which);
}

int
filter_next_can (struct nbdkit_context *c, enum filter_can which)
{
  int r;

  if (c->can[which] != FCAN_UNASKED)
    return c->can[which];
  /* nbdkit's dependencies between the answers. */
  if (which == FCAN_TRIM || which == FCAN_ZERO || which == FCAN_FAST_ZERO ||
      which == FCAN_FUA) {
    r = filter_next_can (c, FCAN_WRITE);
    if (r != 1) {
      if (r == 0)
        c->can[which] = 0;
      return r;
    }
  }
  if (which == FCAN_FAST_ZERO) {
    r = filter_next_can (c, FCAN_ZERO);
    if (r <= NBDKIT_ZERO_NONE) {
      if (r == 0)
        c->can[which] = 0;
      return r;
    }
  }
  r = layer_can (c, which);
  if (r >= 0)
    c->can[which] = r;
  return r;
}

int64_t
filter_next_get_size (struct nbdkit_context *c)
{
  int64_t r;

  if (c->size >= 0)
    return c->size;
  if (is_bottom (c))
    r = (int64_t) c->view->size;
  else if (c->b->f.get_size)
    r = c->b->f.get_size (N (c->next), c->handle);
  else
    r = filter_next_get_size (c->next);
  if (r >= 0)
    c->size = r;
  return r;
}

int
filter_next_block_size (struct nbdkit_context *c, uint32_t *min,
                        uint32_t *pref, uint32_t *max)
{
  if (is_bottom (c)) {
    /* ubdkit's defaults (1, 4096, 64 MiB: what the core assumes for a
     * backend without constraints, and what plughost reports for a
     * plugin without block_size) are nbdkit's "none" (0, 0, 0). */
    const struct backend *v = c->view;
    bool none = v->ops->block_size == NULL ||
                (v->min_block == 1 && v->pref_block == 4096 &&
                 v->max_block == BACKEND_MAX_REQUEST);
    *min = none ? 0 : v->min_block;
    *pref = none ? 0 : v->pref_block;
    *max = none ? 0 : v->max_block;
    return 0;
  }
  if (c->b->f.block_size)
    return c->b->f.block_size (N (c->next), c->handle, min, pref, max);
  return filter_next_block_size (c->next, min, pref, max);
}

/* At the bottom, what a plugin's export_description said at connect. */
const char *
filter_next_export_description (struct nbdkit_context *c)
{
  if (is_bottom (c))
    return c->view->ops->conn_description
           ? c->view->ops->conn_description (c->view->h) : NULL;
  if (c->b->f.export_description)
    return c->b->f.export_description (N (c->next), c->handle);
  return filter_next_export_description (c->next);
}

static const char *
next_export_description (nbdkit_next *n)
{
  return filter_next_export_description (C (n));
}

/* The ubdkit request check, at the bottom: a filter asking outside the
 * range or for something its next layer cannot do gets nbdkit's errno. */
static int
bottom_check (struct nbdkit_context *c, enum backend_op op, uint64_t offset,
              uint64_t count, uint32_t flags, int *err)
{
  int r = backend_check (c->view, op, offset, count, flags);
  uint32_t bs = c->view->min_block;

  /* Filters read and write small pieces of their own (a partition table,
   * a LUKS sector) that such a backend refuses: say why, or the filter
   * fails with no reason given.  Once, as an error: it shows first in a
   * filter's prepare, at connect, where warnings go to the log only. */
  if (r == -EINVAL && bs > 1 && op != BACKEND_OP_EXTENTS &&
      ((offset | count) & (bs - 1)) && !atomic_exchange (&said_blocks, true))
    log_error ("nbdkit: filters: %" PRIu64 " bytes at %" PRIu64
               " are not whole %" PRIu32 "-byte blocks of the backend"
               " (the file backend's direct=true, its default on block"
               " devices, needs them)", count, offset, bs);
  return r < 0 ? fail (err, -r) : 0;
}

/* FUA for the bottom: native, or a flush after the write. */
static uint32_t
bottom_flags (struct nbdkit_context *c, uint32_t flags, bool *flush_after)
{
  uint32_t f = 0;

  *flush_after = false;
  if (flags & NBDKIT_FLAG_FUA) {
    if (c->view->caps & BACKEND_CAN_FUA)
      f |= BACKEND_FLAG_FUA;
    else
      *flush_after = true;
  }
  if (flags & NBDKIT_FLAG_MAY_TRIM)
    f |= BACKEND_FLAG_MAY_TRIM;
  if (flags & NBDKIT_FLAG_FAST_ZERO)
    f |= BACKEND_FLAG_FAST;
  return f;
}

static int
bottom_flush (struct nbdkit_context *c, int *err)
{
  const struct backend *v = c->view;

  if (!(v->caps & BACKEND_CAN_FLUSH) || !v->ops->flush)
    return 0;
  return ubd (v->ops->flush (v->h), err);
}

static int
next_pread (nbdkit_next *n, void *buf, uint32_t count, uint64_t offset,
            uint32_t flags, int *err)
{
  struct nbdkit_context *c = C (n);

  if (!is_bottom (c))
    return c->b->f.pread
      ? c->b->f.pread (N (c->next), c->handle, buf, count, offset, flags, err)
      : next_pread (N (c->next), buf, count, offset, flags, err);
  if (bottom_check (c, BACKEND_OP_READ, offset, count, 0, err) == -1)
    return -1;
  return ubd (c->view->ops->pread (c->view->h, buf, count, offset), err);
}

static int
next_pwrite (nbdkit_next *n, const void *buf, uint32_t count,
             uint64_t offset, uint32_t flags, int *err)
{
  struct nbdkit_context *c = C (n);
  uint32_t f;
  bool flush;

  if (!is_bottom (c))
    return c->b->f.pwrite
      ? c->b->f.pwrite (N (c->next), c->handle, buf, count, offset, flags, err)
      : next_pwrite (N (c->next), buf, count, offset, flags, err);
  f = bottom_flags (c, flags, &flush);
  if (bottom_check (c, BACKEND_OP_WRITE, offset, count, f, err) == -1 ||
      ubd (c->view->ops->pwrite (c->view->h, buf, count, offset, f), err) == -1)
    return -1;
  return flush ? bottom_flush (c, err) : 0;
}

static int
next_flush (nbdkit_next *n, uint32_t flags, int *err)
{
  struct nbdkit_context *c = C (n);

  if (!is_bottom (c))
    return c->b->f.flush
      ? c->b->f.flush (N (c->next), c->handle, flags, err)
      : next_flush (N (c->next), flags, err);
  return bottom_flush (c, err);
}

static int
next_trim (nbdkit_next *n, uint32_t count, uint64_t offset, uint32_t flags,
           int *err)
{
  struct nbdkit_context *c = C (n);
  uint32_t f;
  bool flush;

  if (!is_bottom (c))
    return c->b->f.trim
      ? c->b->f.trim (N (c->next), c->handle, count, offset, flags, err)
      : next_trim (N (c->next), count, offset, flags, err);
  f = bottom_flags (c, flags, &flush);
  if (bottom_check (c, BACKEND_OP_TRIM, offset, count, f, err) == -1 ||
      ubd (c->view->ops->trim (c->view->h, count, offset, f), err) == -1)
    return -1;
  return flush ? bottom_flush (c, err) : 0;
}

/* Zero emulated by a filter layer, as nbdkit's backend does it: writes of
 * zeros through the layer's own pwrite (luks must encrypt them: zeroing
 * the layer below would read back as noise), FUA with the last. */
static int
emulate_zero (nbdkit_next *n, uint32_t count, uint64_t offset,
              uint32_t flags, int *err)
{
  if (flags & NBDKIT_FLAG_FAST_ZERO)
    return fail (err, ENOTSUP);
  while (count > 0) {
    uint32_t k = count < sizeof zeroes ? count : sizeof zeroes;
    uint32_t f = k == count ? flags & NBDKIT_FLAG_FUA : 0;
    if (next_pwrite (n, zeroes, k, offset, f, err) == -1)
      return -1;
    offset += k;
    count -= k;
  }
  return 0;
}

static int
next_zero (nbdkit_next *n, uint32_t count, uint64_t offset, uint32_t flags,
           int *err)
{
  struct nbdkit_context *c = C (n);
  uint32_t f;
  bool flush;

  if (!is_bottom (c)) {
    int r = filter_next_can (c, FCAN_ZERO);
    if (r == -1)
      return fail (err, EIO);
    if (r == NBDKIT_ZERO_EMULATE)
      return emulate_zero (n, count, offset, flags, err);
    return c->b->f.zero
      ? c->b->f.zero (N (c->next), c->handle, count, offset, flags, err)
      : next_zero (N (c->next), count, offset, flags, err);
  }
  f = bottom_flags (c, flags, &flush);
  if (c->view->caps & BACKEND_CAN_ZERO) {
    if (bottom_check (c, BACKEND_OP_ZERO, offset, count, f, err) == -1 ||
        ubd (c->view->ops->zero (c->view->h, count, offset, f), err) == -1)
      return -1;
  }
  else if (f & BACKEND_FLAG_FAST)
    return fail (err, ENOTSUP);
  else {
    if (bottom_check (c, BACKEND_OP_WRITE, offset, count, 0, err) == -1)
      return -1;
    while (count > 0) {
      uint32_t k = count < sizeof zeroes ? count : sizeof zeroes;
      if (ubd (c->view->ops->pwrite (c->view->h, zeroes, k, offset, 0),
               err) == -1)
        return -1;
      offset += k;
      count -= k;
    }
  }
  return flush ? bottom_flush (c, err) : 0;
}

static int
next_extents (nbdkit_next *n, uint32_t count, uint64_t offset,
              uint32_t flags, struct nbdkit_extents *x, int *err)
{
  struct nbdkit_context *c = C (n);
  struct backend_extent v[64];
  struct backend_extents e = { v, 0, 64, offset, offset + count };
  int r;

  /* A layer without extents is all data, as nbdkit synthesises it. */
  r = filter_next_can (c, FCAN_EXTENTS);
  if (r == -1)
    return fail (err, EIO);
  if (r == 0)
    return nbdkit_add_extent (x, offset, count, 0) == -1 ? fail (err, errno)
                                                         : 0;
  if (!is_bottom (c))
    return c->b->f.extents
      ? c->b->f.extents (N (c->next), c->handle, count, offset, flags, x, err)
      : next_extents (N (c->next), count, offset, flags, x, err);
  if (bottom_check (c, BACKEND_OP_EXTENTS, offset, count, 0, err) == -1)
    return -1;
  /* Into a fixed array on the stack, then the filter's list: a full
   * array is a valid prefix of the answer. */
  if (!c->view->ops->extents)
    r = backend_extents_add (&e, offset, count, 0) >= 0 ? 0 : -EIO;
  else
    r = c->view->ops->extents (c->view->h, count, offset,
                               (flags & NBDKIT_FLAG_REQ_ONE)
                               ? BACKEND_FLAG_REQ_ONE : 0, &e);
  if (r < 0)
    return fail (err, -r);
  for (size_t i = 0; i < e.n; i++)
    if (nbdkit_add_extent (x, v[i].offset, v[i].length, v[i].type) == -1)
      return fail (err, errno ? errno : EIO);
  return 0;
}

static int
next_cache (nbdkit_next *n, uint32_t count, uint64_t offset, uint32_t flags,
            int *err)
{
  struct nbdkit_context *c = C (n);
  int r = filter_next_can (c, FCAN_CACHE);

  if (r == -1)
    return fail (err, EIO);
  if (r == NBDKIT_CACHE_NONE)
    return fail (err, EINVAL);
  if (r == NBDKIT_CACHE_EMULATE) {
    /* nbdkit's emulation at this layer: read and drop. */
    pthread_mutex_lock (&scratch_lock);
    r = 0;
    while (r == 0 && count > 0) {
      uint32_t k = count < sizeof scratch ? count : sizeof scratch;
      r = next_pread (n, scratch, k, offset, 0, err);
      offset += k;
      count -= k;
    }
    pthread_mutex_unlock (&scratch_lock);
    return r;
  }
  if (!is_bottom (c))
    return c->b->f.cache
      ? c->b->f.cache (N (c->next), c->handle, count, offset, flags, err)
      : next_cache (N (c->next), count, offset, flags, err);
  if (bottom_check (c, BACKEND_OP_CACHE, offset, count, 0, err) == -1)
    return -1;
  return c->view->ops->cache
    ? ubd (c->view->ops->cache (c->view->h, count, offset), err) : 0;
}

static int next_prepare (nbdkit_next *n) { return filter_ctx_prepare (C (n)); }
static int next_finalize (nbdkit_next *n) { return filter_ctx_finalize (C (n)); }
static int64_t next_get_size (nbdkit_next *n)
{ return filter_next_get_size (C (n)); }
static int next_block_size (nbdkit_next *n, uint32_t *a, uint32_t *b,
                            uint32_t *m)
{ return filter_next_block_size (C (n), a, b, m); }

#define CAN(fn, which) \
  static int fn (nbdkit_next *n) { return filter_next_can (C (n), which); }
CAN (next_can_write, FCAN_WRITE)
CAN (next_can_flush, FCAN_FLUSH)
CAN (next_is_rotational, FCAN_ROTATIONAL)
CAN (next_can_trim, FCAN_TRIM)
CAN (next_can_zero, FCAN_ZERO)
CAN (next_can_fast_zero, FCAN_FAST_ZERO)
CAN (next_can_extents, FCAN_EXTENTS)
CAN (next_can_fua, FCAN_FUA)
CAN (next_can_multi_conn, FCAN_MULTI_CONN)
CAN (next_can_cache, FCAN_CACHE)

static const struct nbdkit_next_ops next_ops = {
  .prepare = next_prepare, .finalize = next_finalize,
  .get_size = next_get_size, .export_description = next_export_description,
  .block_size = next_block_size,
  .can_write = next_can_write, .can_flush = next_can_flush,
  .is_rotational = next_is_rotational, .can_trim = next_can_trim,
  .can_zero = next_can_zero, .can_fast_zero = next_can_fast_zero,
  .can_extents = next_can_extents, .can_fua = next_can_fua,
  .can_multi_conn = next_can_multi_conn, .can_cache = next_can_cache,
  .pread = next_pread, .pwrite = next_pwrite, .flush = next_flush,
  .trim = next_trim, .zero = next_zero, .extents = next_extents,
  .cache = next_cache,
};


/* Opening and closing contexts. */

/* The next_open a filter's open gets: open the next layer's context. */
static int
next_open (nbdkit_context *c, int readonly, const char *export)
{
  c->next = filter_ctx_open (c->b + 1, readonly, export);
  return c->next ? 0 : -1;
}

/* The bottom's connection has the client's socket and TLS, from the
 * thread's connection (a reopen's too, as nbdkit's thread-local one). */
static int
bottom_open (struct nbdkit_context *c)
{
  struct backend *inner = &c->b->chain->inner;
  const struct plughost_thread_conn *t = plughost_conn_get ();

  if (!inner->ops->connect) {
    c->view = inner;            /* one handle serves every connection */
    return 0;
  }
  c->bc.b = inner;
  c->bc.export = c->export;
  c->bc.peer_fd = t->peer_fd == PLUGHOST_NO_PEER ? -1 : t->peer_fd;
  c->bc.tls = t->tls;
  if (backend_conn_open (&c->bc) < 0)
    return -1;
  c->bc.connected = true;
  c->view = &c->bc.view;
  if (c->readonly)
    c->bc.view.readonly = true;
  return 0;
}

struct nbdkit_context *
filter_ctx_open (struct nbdkit_backend *b, bool readonly, const char *export)
{
  bool tls = plughost_conn_get ()->tls;
  struct nbdkit_context *c;

  /* As nbdkit's backend_open: a filter opens the canonical name of "",
   * its layer's default export. */
  if (!export)
    export = "";
  if (!*export && b->i < b->chain->nf &&
      !(export = filter_default_export (b, readonly, tls))) {
    nbdkit_error ("default export (\"\") not permitted");
    return NULL;
  }
  c = calloc (1, sizeof *c);
  if (!c || !(c->export = strdup (export))) {
    free (c);
    nbdkit_error ("malloc: %m");
    return NULL;
  }
  c->ops = next_ops;
  c->b = b;
  c->readonly = readonly;
  c->size = -1;
  for (int i = 0; i < FCAN_NR; i++)
    c->can[i] = FCAN_UNASKED;
  if (readonly)
    c->can[FCAN_WRITE] = 0;
  if (b->i == b->chain->nf) {
    if (bottom_open (c) == -1)
      goto fail;
    return c;
  }
  if (b->f.open)
    c->handle = b->f.open (next_open, c, readonly, c->export, tls);
  else
    c->handle = next_open (c, readonly, c->export) == -1
                ? NULL : NBDKIT_HANDLE_NOT_NEEDED;
  if (!c->handle) {
    log_error ("nbdkit: filter %s: open failed", b->f.name);
    goto fail;
  }
  return c;

 fail:
  if (c->next)
    filter_ctx_close (c->next);
  free (c->export);
  free (c);
  return NULL;
}

int
filter_ctx_prepare (struct nbdkit_context *c)
{
  if (c->prepared || is_bottom (c))
    return 0;
  if (c->next && filter_ctx_prepare (c->next) == -1)
    return -1;
  if (c->b->f.prepare &&
      c->b->f.prepare (N (c->next), c->handle, c->readonly) == -1) {
    log_error ("nbdkit: filter %s: prepare failed", c->b->f.name);
    return -1;
  }
  c->prepared = true;
  return 0;
}

int
filter_ctx_finalize (struct nbdkit_context *c)
{
  int r = 0;

  if (is_bottom (c))
    return 0;
  if (c->prepared && c->b->f.finalize &&
      c->b->f.finalize (N (c->next), c->handle) == -1) {
    log_error ("nbdkit: filter %s: finalize failed", c->b->f.name);
    r = -1;
  }
  c->prepared = false;
  if (c->next && filter_ctx_finalize (c->next) == -1)
    r = -1;
  return r;
}

void
filter_ctx_close (struct nbdkit_context *c)
{
  if (!c)
    return;
  if (is_bottom (c)) {
    if (c->bc.connected)
      backend_conn_close (&c->bc);
  }
  else {
    if (c->handle && c->b->f.close)
      c->b->f.close (c->handle);
    filter_ctx_close (c->next);
  }
  free (c->export);
  free (c);
}


/* The filter-only functions of nbdkit-filter.h. */

nbdkit_backend *
nbdkit_context_get_backend (nbdkit_context *context)
{
  return context->b + 1;
}

nbdkit_next *
nbdkit_next_context_open (nbdkit_backend *b, int readonly,
                          const char *exportname, int shared)
{
  struct nbdkit_context *c = filter_ctx_open (b, readonly, exportname);

  (void) shared;        /* every context here is its connection's */
  if (c && filter_ctx_prepare (c) == -1) {
    filter_ctx_finalize (c);
    filter_ctx_close (c);
    c = NULL;
  }
  return N (c);
}

void
nbdkit_next_context_close (nbdkit_next *next)
{
  if (next) {
    filter_ctx_finalize (C (next));
    filter_ctx_close (C (next));
  }
}

nbdkit_next *
nbdkit_context_set_next (nbdkit_context *context, nbdkit_next *next)
{
  struct nbdkit_context *old = context->next;

  context->next = C (next);
  return N (old);
}

/* All the extents of [offset, offset+count), asking as often as needed. */
struct nbdkit_extents *
nbdkit_extents_full (nbdkit_next *next, uint32_t count, uint64_t offset,
                     uint32_t flags, int *err)
{
  struct nbdkit_extents *x = nbdkit_extents_new (offset, offset + count);
  uint64_t end = offset + count;

  if (!x)
    return fail (err, errno ? errno : ENOMEM), NULL;
  flags &= ~NBDKIT_FLAG_REQ_ONE;
  while (offset < end) {
    struct nbdkit_extents *t = nbdkit_extents_new (offset, end);
    size_t n;

    if (!t || next->extents (next, end - offset, offset, flags, t, err) == -1)
      goto fail;
    n = nbdkit_extents_count (t);
    for (size_t i = 0; i < n; i++) {
      struct nbdkit_extent e = nbdkit_get_extent (t, i);
      if (nbdkit_add_extent (x, e.offset, e.length, e.type) == -1) {
        *err = errno;
        goto fail;
      }
      offset = e.offset + e.length;
    }
    nbdkit_extents_free (t);
    if (n == 0) {
      nbdkit_error ("extents: the next layer returned no extent");
      *err = EIO;
      nbdkit_extents_free (x);
      return NULL;
    }
    continue;
  fail:
    nbdkit_extents_free (t);
    nbdkit_extents_free (x);
    return NULL;
  }
  return x;
}

/* The extents of [offset, offset+count) in ALIGN-sized pieces: a first
 * extent shorter than ALIGN is widened to ALIGN with the types common to
 * all it covers (a hole only if all of it is a hole), and the list ends
 * on an ALIGN boundary, as nbdkit's nbdkit_extents_aligned answers. */
int
nbdkit_extents_aligned (nbdkit_next *next, uint32_t count, uint64_t offset,
                        uint32_t flags, uint32_t align,
                        struct nbdkit_extents *x, int *err)
{
  struct nbdkit_extents *t = nbdkit_extents_new (offset, offset + count);
  uint64_t end, pos = offset, last = offset;
  size_t n, i = 0;
  int r = -1;

  if (!t)
    return fail (err, ENOMEM);
  if (next->extents (next, count, offset, flags, t, err) == -1)
    goto out;
  n = nbdkit_extents_count (t);
  if (n == 0) {
    *err = EIO;
    goto out;
  }
  end = nbdkit_get_extent (t, n - 1).offset + nbdkit_get_extent (t, n - 1).length;
  /* The first piece: widen to ALIGN, asking for more when the answer
   * ended inside it. */
  if (nbdkit_get_extent (t, 0).length < align) {
    uint32_t type = NBDKIT_EXTENT_HOLE | NBDKIT_EXTENT_ZERO;
    uint64_t want = offset + align;
    while (pos < want) {
      struct nbdkit_extent e;
      if (i == n) {
        nbdkit_extents_free (t);
        t = nbdkit_extents_new (pos, offset + count);
        if (!t) {
          *err = ENOMEM;
          goto out;
        }
        if (next->extents (next, offset + count - pos, pos,
                           flags & ~NBDKIT_FLAG_REQ_ONE, t, err) == -1)
          goto out;
        n = nbdkit_extents_count (t);
        i = 0;
        if (n == 0) {
          *err = EIO;
          goto out;
        }
      }
      e = nbdkit_get_extent (t, i);
      type &= e.type;
      if (e.offset + e.length > want) {
        /* The rest of this extent stays for what follows. */
        break;
      }
      pos = e.offset + e.length;
      i++;
    }
    if (nbdkit_add_extent (x, offset, align, type) == -1) {
      *err = errno;
      goto out;
    }
    last = pos = want;
    end = i < n ? nbdkit_get_extent (t, n - 1).offset
                  + nbdkit_get_extent (t, n - 1).length : pos;
  }
  /* The rest, cut at the last ALIGN boundary. */
  end -= (end - offset) % align;
  for (; i < n && last < end; i++) {
    struct nbdkit_extent e = nbdkit_get_extent (t, i);
    uint64_t s = e.offset < last ? last : e.offset;
    uint64_t f = e.offset + e.length > end ? end : e.offset + e.length;
    if (f > s && nbdkit_add_extent (x, s, f - s, e.type) == -1) {
      *err = errno;
      goto out;
    }
    if (f > last)
      last = f;
  }
  r = 0;
 out:
  nbdkit_extents_free (t);
  return r;
}

#define SYM(fn) { #fn, (void *) fn }
static const struct {
  const char *name;
  void *fn;
} exported[] = {
  SYM (nbdkit_context_get_backend), SYM (nbdkit_next_context_open),
  SYM (nbdkit_next_context_close), SYM (nbdkit_context_set_next),
  SYM (nbdkit_extents_full), SYM (nbdkit_extents_aligned),
};

int
filter_check_exports (void)
{
  if (plughost_check_exports () == -1)
    return -1;
  for (size_t i = 0; i < sizeof exported / sizeof exported[0]; i++)
    if (dlsym (RTLD_DEFAULT, exported[i].name) != exported[i].fn) {
      log_error ("nbdkit: %s is not exported to filters (ubdkit must be "
                 "linked with plugins/nbdkit/nbdkit.syms)", exported[i].name);
      return -1;
    }
  return 0;
}
