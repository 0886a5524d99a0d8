/* The data path of the nbdkit plugin host: one function per backend
 * operation, each a locked call (enter/leave) around helpers that call
 * the plugin and return 0 or -errno by nbdkit's rule (result).
 *
 * Requests arrive checked by backend_check, with 32-bit counts, so they
 * never need splitting for the plugin's 32-bit callbacks; only emulated
 * zero and cache work in pieces, through a fixed buffer.
 */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "log.h"
#include "plughost.h"

/* Zeros for emulated write-zeroes, in .bss: const would put them into the
 * executable. */
static char zeroes[256 * 1024];

/* nbdkit's thread models: SERIALIZE_CONNECTIONS and _ALL_REQUESTS take
 * one lock for the plugin, SERIALIZE_REQUESTS one per connection,
 * PARALLEL none.  (One connection at a time, for SERIALIZE_CONNECTIONS,
 * is the core's business: BACKEND_ONE_CONNECTION.) */
static pthread_mutex_t *
lock_of (struct plugconn *h)
{
  if (h->ph->model <= NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
    return &h->ph->lock;
  if (h->ph->model == NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS)
    return &h->lock;
  return NULL;
}

void
plughost_enter (struct plugconn *h, bool data)
{
  pthread_mutex_t *m = lock_of (h);

  if (m)
    pthread_mutex_lock (m);
  plughost_conn_push (&(struct plughost_thread_conn) {
                        h->export_name, h->peer_fd, h->tls, data });
}

int
plughost_leave (struct plugconn *h, int r)
{
  pthread_mutex_t *m = lock_of (h);

  plughost_conn_pop ();
  if (m)
    pthread_mutex_unlock (m);
  return r;
}

static void enter (struct plugconn *h) { plughost_enter (h, true); }
static int leave (struct plugconn *h, int r) { return plughost_leave (h, r); }

/* The result of a plugin call that returned R: 0, or the negative errno.
 * ERR is errno as the plugin left it, saved before anything else ran. */
static int
result (struct plugconn *h, int r, int err)
{
  int e;

  if (r != -1)
    return 0;
  e = plughost_error_get ();
  if (!e && h->p->errno_is_preserved)
    e = err;
  return -(e > 0 ? e : EIO);
}

/* Run one plugin call EXPR with a fresh nbdkit_set_error value and turn
 * what it returned into 0 or -errno. */
#define CALL(h, expr)                                                   \
  __extension__ ({ int r_, err_;                                        \
    plughost_error_reset ();                                            \
    r_ = (expr);                                                        \
    err_ = errno;                                                       \
    result ((h), r_, err_); })

static uint32_t
fua_flag (const struct plugconn *h, uint32_t flags)
{
  return (flags & BACKEND_FLAG_FUA) && h->fua_mode == NBDKIT_FUA_NATIVE
         ? NBDKIT_FLAG_FUA : 0;
}

/* An emulated FUA is a flush after the operation succeeded. */
static bool
needs_flush (const struct plugconn *h, uint32_t flags)
{
  return (flags & BACKEND_FLAG_FUA) && h->fua_mode != NBDKIT_FUA_NATIVE;
}

static int
do_flush (struct plugconn *h)
{
  if (h->p->flush)
    return CALL (h, h->p->flush (h->handle, 0));
  if (h->p->_flush_v1)
    return CALL (h, h->p->_flush_v1 (h->handle));
  return -EINVAL;
}

static int
do_pread (struct plugconn *h, void *buf, uint32_t count, uint64_t offset)
{
  if (h->p->pread)
    return CALL (h, h->p->pread (h->handle, buf, count, offset, 0));
  return CALL (h, h->p->_pread_v1 (h->handle, buf, count, offset));
}

/* A write without the emulated part of FUA. */
static int
do_pwrite (struct plugconn *h, const void *buf, uint32_t count,
           uint64_t offset, uint32_t flags)
{
  if (h->p->pwrite)
    return CALL (h, h->p->pwrite (h->handle, buf, count, offset,
                                 fua_flag (h, flags)));
  if (h->p->_pwrite_v1)
    return CALL (h, h->p->_pwrite_v1 (h->handle, buf, count, offset));
  return -EROFS;
}

int
plughost_io_pread (void *hv, void *buf, uint32_t count, uint64_t offset)
{
  struct plugconn *h = hv;

  enter (h);
  return leave (h, do_pread (h, buf, count, offset));
}

int
plughost_io_pwrite (void *hv, const void *buf, uint32_t count,
                    uint64_t offset, uint32_t flags)
{
  struct plugconn *h = hv;
  int r;

  enter (h);
  r = do_pwrite (h, buf, count, offset, flags);
  if (r == 0 && needs_flush (h, flags))
    r = do_flush (h);
  return leave (h, r);
}

int
plughost_io_flush (void *hv)
{
  struct plugconn *h = hv;

  enter (h);
  return leave (h, do_flush (h));
}

int
plughost_io_trim (void *hv, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct plugconn *h = hv;
  int r = -EINVAL;

  enter (h);
  if (h->p->trim)
    r = CALL (h, h->p->trim (h->handle, count, offset, fua_flag (h, flags)));
  else if (h->p->_trim_v1)
    r = CALL (h, h->p->_trim_v1 (h->handle, count, offset));
  if (r == 0 && needs_flush (h, flags))
    r = do_flush (h);
  return leave (h, r);
}

/* The plugin's own zero: 0, -errno, or -EOPNOTSUPP when it has none or
 * declines (the caller then writes zeros, unless asked to be fast). */
static int
zero_native (struct plugconn *h, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  uint32_t f = fua_flag (h, flags) |
               ((flags & BACKEND_FLAG_MAY_TRIM) ? NBDKIT_FLAG_MAY_TRIM : 0) |
               ((flags & BACKEND_FLAG_FAST) ? NBDKIT_FLAG_FAST_ZERO : 0);

  if (h->zero_mode != NBDKIT_ZERO_NATIVE)
    return -EOPNOTSUPP;
  if (h->p->zero)
    return CALL (h, h->p->zero (h->handle, count, offset, f));
  if (h->p->_zero_v1 && !(flags & BACKEND_FLAG_FAST))
    return CALL (h, h->p->_zero_v1 (h->handle, count, offset,
                                   !!(flags & BACKEND_FLAG_MAY_TRIM)));
  return -EOPNOTSUPP;
}

int
plughost_io_zero (void *hv, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct plugconn *h = hv;
  int r;

  enter (h);
  r = zero_native (h, count, offset, flags);
  if (r == -EOPNOTSUPP && !(flags & BACKEND_FLAG_FAST)) {
    r = 0;
    while (r == 0 && count > 0) {
      uint32_t n = count < sizeof zeroes ? count : sizeof zeroes;
      r = do_pwrite (h, zeroes, n, offset, flags);
      offset += n;
      count -= n;
    }
  }
  if (r == 0 && needs_flush (h, flags))
    r = do_flush (h);
  return leave (h, r);
}

/* A plugin that advertises cache without a .cache callback gets a no-op,
 * as in nbdkit; an emulated cache reads the range into a scratch buffer
 * and drops the data.  The buffer has its own lock because PARALLEL
 * plugins run without the host's. */
int
plughost_io_cache (void *hv, uint32_t count, uint64_t offset)
{
  static char scratch[64 * 1024];
  static pthread_mutex_t scratch_lock = PTHREAD_MUTEX_INITIALIZER;
  struct plugconn *h = hv;
  int r = 0;

  enter (h);
  if (h->cache_mode == NBDKIT_CACHE_NATIVE && h->p->cache)
    r = CALL (h, h->p->cache (h->handle, count, offset, 0));
  else if (h->cache_mode == NBDKIT_CACHE_EMULATE) {
    pthread_mutex_lock (&scratch_lock);
    while (r == 0 && count > 0) {
      uint32_t n = count < sizeof scratch ? count : sizeof scratch;
      r = do_pread (h, scratch, n, offset);
      offset += n;
      count -= n;
    }
    pthread_mutex_unlock (&scratch_lock);
  }
  return leave (h, r);
}

int
plughost_io_extents (void *hv, uint32_t count, uint64_t offset,
                     uint32_t flags, struct backend_extents *e)
{
  struct plugconn *h = hv;
  struct nbdkit_extents x;
  uint32_t f = (flags & BACKEND_FLAG_REQ_ONE) ? NBDKIT_FLAG_REQ_ONE : 0;
  int r;

  /* A plugin without extents is all data, as nbdkit answers for it. */
  if (!h->can_extents)
    return backend_extents_add (e, offset, count, 0) >= 0 ? 0 : -EIO;
  plughost_extents_wrap (&x, e);
  enter (h);
  r = CALL (h, h->p->extents (h->handle, count, offset, f, &x));
  if (r == 0 && e->n == 0) {
    nbdkit_error ("extents: plugin must return at least one extent");
    r = -EINVAL;
  }
  return leave (h, r);
}
