/* rbd: a Ceph RBD image, through librbd's C API.
 *
 * config parses the keys and acquires nothing.  open connects to the
 * cluster (configuration and keyring found as Ceph's own tools find them:
 * conf=, else $CEPH_CONF, /etc/ceph/ceph.conf ...; $CEPH_ARGS; keyring=
 * over the configuration's), opens the pool's I/O context and the image
 * (read-only for readonly=true or a snapshot=), sets the image's completion
 * notification to an eventfd and watches its header for resizes.  It runs
 * after the daemon's forward-progress set-up (lib/core/progress.c), so every
 * thread librados and librbd start inherits IO_FLUSHER, and their memory is
 * locked by mlockall(MCL_FUTURE).
 *
 * The data path is aio.c.  Extents come from rbd_diff_iterate2,
 * synchronously on a worker thread: by whole objects from the object map
 * when fast-diff is on (and valid, and the image has no parent), else
 * exactly, object by object.  One image handle serves every connection:
 * librbd's cache is per handle, so a flush on any connection covers the
 * writes of all (multi-conn is safe).  The size follows the image: the
 * header watch reads it again, each new connection sees it
 * (BACKEND_LIVE_SIZE), and a ublk device follows it (size_fd).
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "rbd.h"
#include "log.h"

/* A copy of S (freed by close), or NULL for NULL. */
static char *
dup_or_null (const char *s)
{
  char *c;

  if (!s)
    return NULL;
  if (!(c = strdup (s)))
    fatal ("strdup: %m");
  return c;
}

static void *
rbd_config (const struct backend_param *p, size_t n, bool readonly)
{
  static const char *const known[] = {
    "pool", "image", "namespace", "snapshot", "conf", "id", "keyring",
    "readonly", NULL
  };
  const char *pool = backend_param_get (p, n, "pool");
  const char *image = backend_param_get (p, n, "image");
  const char *ro = backend_param_get (p, n, "readonly");
  const char *id = backend_param_get (p, n, "id");
  struct rbd_disk *d;
  int b = 0;

  if (backend_params_check ("rbd", p, n, known) == -1)
    return NULL;
  if (!pool || !*pool || !image || !*image) {
    backend_param_error ("rbd: pool=POOL and image=IMAGE are required");
    return NULL;
  }
  if (ro && (b = backend_parse_bool (ro)) == -1) {
    backend_param_error ("rbd: readonly=%s: expected true or false", ro);
    return NULL;
  }
  /* Ceph's tools take the id alone or with its type: "client.admin". */
  if (id && strncmp (id, "client.", 7) == 0)
    id += 7;
  d = calloc (1, sizeof *d);
  if (!d)
    fatal ("calloc: %m");
  d->pool = dup_or_null (pool);
  d->image_name = dup_or_null (image);
  d->ns = dup_or_null (backend_param_get (p, n, "namespace"));
  d->snap = dup_or_null (backend_param_get (p, n, "snapshot"));
  d->conf = dup_or_null (backend_param_get (p, n, "conf"));
  d->keyring = dup_or_null (backend_param_get (p, n, "keyring"));
  d->id = dup_or_null (id && *id ? id : NULL);
  d->readonly = readonly || b == 1 || d->snap;
  d->efd = -1;
  d->size_efd = -1;
  pthread_mutex_init (&d->lock, NULL);
  return d;
}

/* Where the image is, for messages: pool[/namespace]/image[@snapshot]. */
static void
spec (const struct rbd_disk *d, char *buf, size_t len)
{
  snprintf (buf, len, "%s%s%s/%s%s%s", d->pool, d->ns ? "/" : "",
            d->ns ? d->ns : "", d->image_name, d->snap ? "@" : "",
            d->snap ? d->snap : "");
}

/* The header watch: runs on a librbd thread when the image's header
 * changed (a resize, a snapshot, a feature); only the size matters here. */
static void
header_changed (void *arg)
{
  struct rbd_disk *d = arg;
  uint64_t size, old;

  if (rbd_ceph.rbd_get_size (d->image, &size) < 0)
    return;
  old = atomic_exchange (&d->size, size);
  if (old != size) {
    uint64_t one = 1;

    log_info ("rbd: %s/%s: size %" PRIu64 " -> %" PRIu64 " bytes (new "
              "connections see it, and a ublk device)",
              d->pool, d->image_name, old, size);
    if (d->size_efd >= 0 && write (d->size_efd, &one, sizeof one) < 0)
      log_warn ("rbd: size eventfd: %m");
  }
}

/* The stack of each thread librados and librbd start.  They take the
 * process's default, 8 MiB from RLIMIT_STACK, which mlockall makes
 * resident: 17 threads, 136 MiB.  Under fio and nbdcopy none of them used
 * more than 24 KiB (measured: docs/ceph.md); ubdkit's own threads set
 * theirs explicitly (256 KiB), so the default is Ceph's alone. */
#define CEPH_THREAD_STACK (1024 * 1024)

static void
small_default_stacks (void)
{
  pthread_attr_t a;
  int r;

  if (pthread_getattr_default_np (&a) != 0)
    return;
  if ((r = pthread_attr_setstacksize (&a, CEPH_THREAD_STACK)) == 0)
    r = pthread_setattr_default_np (&a);
  if (r)
    log_warn ("rbd: pthread_setattr_default_np: %s: Ceph's threads get "
              "8 MiB stacks", strerror (r));
  pthread_attr_destroy (&a);
}

static int
connect_cluster (struct rbd_disk *d)
{
  int r;

  small_default_stacks ();
  r = rbd_ceph.rados_create (&d->cluster, d->id);

  if (r < 0) {
    log_error ("rbd: rados_create: %s", strerror (-r));
    return -1;
  }
  d->have_cluster = true;
  r = rbd_ceph.rados_conf_read_file (d->cluster, d->conf);
  if (r < 0 && (d->conf || r != -ENOENT)) {
    log_error ("rbd: configuration %s: %s", d->conf ? d->conf
               : "(the default search: $CEPH_CONF, /etc/ceph/ceph.conf ...)",
               strerror (-r));
    return -1;
  }
  if ((r = rbd_ceph.rados_conf_parse_env (d->cluster, NULL)) < 0) {
    log_error ("rbd: $CEPH_ARGS: %s", strerror (-r));
    return -1;
  }
  if (d->keyring &&
      (r = rbd_ceph.rados_conf_set (d->cluster, "keyring", d->keyring)) < 0) {
    log_error ("rbd: keyring=%s: %s", d->keyring, strerror (-r));
    return -1;
  }
  r = rbd_ceph.rados_connect (d->cluster);
  if (r < 0) {
    log_error ("rbd: cannot connect to the cluster as client.%s: %s",
               d->id ? d->id : "admin", strerror (-r));
    return -1;
  }
  d->connected = true;
  return 0;
}

static int
open_image (struct rbd_disk *d)
{
  char where[512];
  uint64_t size;
  int r;

  spec (d, where, sizeof where);
  r = rbd_ceph.rados_ioctx_create (d->cluster, d->pool, &d->ioctx);
  if (r < 0) {
    log_error ("rbd: pool %s: %s", d->pool,
               r == -ENOENT ? "no such pool" : strerror (-r));
    return -1;
  }
  d->have_ioctx = true;
  if (d->ns)
    rbd_ceph.rados_ioctx_set_namespace (d->ioctx, d->ns);
  r = d->readonly
    ? rbd_ceph.rbd_open_read_only (d->ioctx, d->image_name, &d->image, d->snap)
    : rbd_ceph.rbd_open (d->ioctx, d->image_name, &d->image, NULL);
  if (r < 0) {
    log_error ("rbd: image %s: %s", where,
               r == -ENOENT ? "no such image or snapshot" : strerror (-r));
    return -1;
  }
  if ((r = rbd_ceph.rbd_get_size (d->image, &size)) < 0) {
    log_error ("rbd: %s: rbd_get_size: %s", where, strerror (-r));
    return -1;
  }
  atomic_store (&d->size, size);
  return 0;
}

static int
rbd_size_fd (void *h)
{
  struct rbd_disk *d = h;

  return d->size_efd;
}

static int
rbd_open_backend (void *h)
{
  struct rbd_disk *d = h;
  char where[512];
  int r;

  if (rbd_lib_load () == -1 || connect_cluster (d) == -1 ||
      open_image (d) == -1)
    return -1;
  spec (d, where, sizeof where);
  d->efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
  if (d->efd == -1) {
    log_error ("rbd: eventfd: %m");
    return -1;
  }
  r = rbd_ceph.rbd_set_image_notification (d->image, d->efd,
                                           EVENT_TYPE_EVENTFD);
  if (r < 0) {
    log_error ("rbd: %s: rbd_set_image_notification: %s", where,
               strerror (-r));
    return -1;
  }
  /* A snapshot never changes size; the head may. */
  if (!d->snap) {
    d->size_efd = eventfd (0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (d->size_efd == -1) {
      log_error ("rbd: eventfd: %m");
      return -1;
    }
    r = rbd_ceph.rbd_update_watch (d->image, &d->watch_handle,
                                   header_changed, d);
    if (r < 0)
      log_warn ("rbd: %s: rbd_update_watch: %s: resizes will not be seen",
                where, strerror (-r));
    else
      d->watching = true;
  }
  log_debug ("rbd: %s: %" PRIu64 " bytes%s", where, atomic_load (&d->size),
             d->readonly ? ", read-only" : "");
  return 0;
}

static void
rbd_close_backend (void *h)
{
  struct rbd_disk *d = h;

  if (d->watching)
    rbd_ceph.rbd_update_unwatch (d->image, d->watch_handle);
  if (d->image)
    rbd_ceph.rbd_close (d->image);
  if (d->efd >= 0)
    close (d->efd);
  if (d->size_efd >= 0)
    close (d->size_efd);
  if (d->have_ioctx)
    rbd_ceph.rados_ioctx_destroy (d->ioctx);
  if (d->have_cluster)
    rbd_ceph.rados_shutdown (d->cluster);
  pthread_mutex_destroy (&d->lock);
  free (d->pool);
  free (d->image_name);
  free (d->ns);
  free (d->snap);
  free (d->conf);
  free (d->id);
  free (d->keyring);
  free (d);
}

static uint64_t
rbd_get_size_cb (void *h)
{
  return atomic_load (&((struct rbd_disk *) h)->size);
}

static uint32_t
rbd_get_caps (void *h)
{
  struct rbd_disk *d = h;
  uint32_t caps = BACKEND_CAN_FLUSH | BACKEND_CAN_EXTENTS |
                  BACKEND_CAN_MULTI_CONN;

  if (!d->readonly)
    caps |= BACKEND_CAN_WRITE | BACKEND_CAN_FUA | BACKEND_CAN_TRIM |
            BACKEND_CAN_ZERO | BACKEND_CAN_FAST_ZERO;
  return caps;
}

/* Synchronous path: the flush at exit, and threads beyond the pollers
 * (aio.c) on the workers. */

static int
rbd_pread_cb (void *h, void *buf, uint32_t count, uint64_t offset)
{
  struct rbd_disk *d = h;
  ssize_t r = rbd_ceph.rbd_read (d->image, offset, count, buf);

  return r < 0 ? (int) r : (uint64_t) r == count ? 0 : -EIO;
}

static int
rbd_flush_cb (void *h)
{
  return rbd_ceph.rbd_flush (((struct rbd_disk *) h)->image);
}

static int
fua (void *h, ssize_t r, uint32_t flags)
{
  if (r < 0)
    return (int) r;
  return (flags & BACKEND_FLAG_FUA) ? rbd_flush_cb (h) : 0;
}

static int
rbd_pwrite_cb (void *h, const void *buf, uint32_t count, uint64_t offset,
               uint32_t flags)
{
  struct rbd_disk *d = h;

  return fua (h, rbd_ceph.rbd_write2 (d->image, offset, count, buf, 0),
              flags);
}

static int
rbd_trim_cb (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct rbd_disk *d = h;

  return fua (h, rbd_ceph.rbd_discard (d->image, offset, count), flags);
}

static int
rbd_zero_cb (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct rbd_disk *d = h;

  if (rbd_zero_too_slow (flags))
    return -ENOTSUP;
  return fua (h, rbd_ceph.rbd_write_zeroes (d->image, offset, count,
                                            rbd_zero_flags (flags), 0),
              flags);
}

/* Extents. */

struct walk {
  struct backend_extents *e;
  size_t n0;                    /* e->n before this call */
  uint64_t pos, end;
  bool one;
};

#define WALK_STOP (-ECANCELED)

/* One allocated (EXISTS) or deallocated region from rbd_diff_iterate2,
 * which reports them in order; the gaps between are holes. */
static int
walk_cb (uint64_t off, size_t len, int exists, void *arg)
{
  struct walk *w = arg;
  uint64_t end = off + len;

  if (end > w->end)
    end = w->end;
  if (off < w->pos) {
    if (end <= w->pos)
      return -EPROTO;           /* out of order */
    off = w->pos;               /* a whole object starting earlier */
  }
  if (off >= end)
    return 0;
  if (off > w->pos && backend_extents_add (w->e, w->pos, off - w->pos,
                                           BACKEND_EXTENT_HOLE |
                                           BACKEND_EXTENT_ZERO))
    return WALK_STOP;
  if (backend_extents_add (w->e, off, end - off, exists ? 0
                           : BACKEND_EXTENT_HOLE | BACKEND_EXTENT_ZERO))
    return WALK_STOP;
  w->pos = end;
  return w->one || end == w->end ? WALK_STOP : 0;
}

/* Whole objects from the object map only when that is right: fast-diff on
 * and valid, and no parent (whose data shows through absent objects). */
static bool
use_object_map (rbd_image_t image)
{
  uint64_t features, flags, overlap = 0;

  return rbd_ceph.rbd_get_features (image, &features) == 0 &&
         (features & RBD_FEATURE_FAST_DIFF) &&
         rbd_ceph.rbd_get_flags (image, &flags) == 0 &&
         !(flags & (RBD_FLAG_FAST_DIFF_INVALID |
                    RBD_FLAG_OBJECT_MAP_INVALID)) &&
         (rbd_ceph.rbd_get_overlap (image, &overlap) == -ENOENT ||
          overlap == 0);
}

static int
rbd_extents_cb (void *h, uint32_t count, uint64_t offset, uint32_t flags,
                struct backend_extents *e)
{
  struct rbd_disk *d = h;
  struct walk w = {
    .e = e, .n0 = e->n, .pos = offset,
    .end = offset + count, .one = flags & BACKEND_FLAG_REQ_ONE,
  };
  int r = rbd_ceph.rbd_diff_iterate2 (d->image, NULL, offset, count, 1,
                             use_object_map (d->image), walk_cb, &w);

  if (r == -EPROTO) {
    /* Not in order after all: say "data" for all of it, which is true. */
    e->n = w.n0;
    backend_extents_add (e, offset, count, 0);
    return 0;
  }
  if (r < 0 && r != WALK_STOP)
    return r;
  if (r == 0 && w.pos < w.end)
    backend_extents_add (e, w.pos, w.end - w.pos,
                         BACKEND_EXTENT_HOLE | BACKEND_EXTENT_ZERO);
  return 0;
}

const struct backend_ops rbd_backend_ops = {
  .name = "rbd",
  .synopsis = "pool=POOL image=IMAGE [KEY=VALUE ...]: a Ceph RBD image",
  .help = "           pool=POOL      the image's pool (required)\n"
          "           image=IMAGE    the image (required)\n"
          "           namespace=NS   the pool's namespace (default: none)\n"
          "           snapshot=SNAP  serve this snapshot, read-only\n"
          "           conf=PATH      ceph.conf (default: as Ceph's tools "
          "find it)\n"
          "           id=CLIENT      the client's id (default: admin)\n"
          "           keyring=PATH   its keyring (default: from the "
          "configuration)\n"
          "           readonly=BOOL  open the image read-only\n",
  .props = BACKEND_LIVE_SIZE,
  .config = rbd_config,
  .open = rbd_open_backend,
  .close = rbd_close_backend,
  .get_size = rbd_get_size_cb,
  .size_fd = rbd_size_fd,
  .get_caps = rbd_get_caps,
  .pread = rbd_pread_cb,
  .pwrite = rbd_pwrite_cb,
  .flush = rbd_flush_cb,
  .trim = rbd_trim_cb,
  .zero = rbd_zero_cb,
  .extents = rbd_extents_cb,
  .submit = rbd_submit,
};
