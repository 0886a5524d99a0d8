/* Internal to plugins/rbd: the backend handle (rbd.c) and its asynchronous
 * data path (aio.c).  See rbd.c for the design. */
#ifndef UBDKIT_PLUGINS_RBD_RBD_H
#define UBDKIT_PLUGINS_RBD_RBD_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <rados/librados.h>
#include <rbd/librbd.h>

#include "ubdkit/backend.h"

/* Threads (loops, ublk queues) that can submit: one poller each.  More go
 * through the synchronous path on the worker threads. */
#define RBD_MAX_POLLERS 256

struct loop;
struct rbd_disk;

/* One submitting thread's watch on the image's completion eventfd: a
 * POLL_ADD on that thread's ring, re-armed after each drain.  Touched only
 * by that thread once registered. */
struct rbd_poller {
  struct rbd_disk *d;
  struct loop *loop;
  struct loop_event ev;
  bool armed;
};

struct rbd_disk {
  /* Configuration (config). */
  char *pool, *image_name, *ns, *snap, *conf, *id, *keyring;
  bool readonly;
  /* What open acquired, released by close. */
  rados_t cluster;
  rados_ioctx_t ioctx;
  rbd_image_t image;
  bool have_cluster, connected, have_ioctx, watching;
  uint64_t watch_handle;
  int efd;                      /* librbd's completion notification */
  int size_efd;                 /* the size changed (size_fd) */
  /* The image's size: set at open, updated by the header watch. */
  _Atomic uint64_t size;
  /* Pollers: appended under lock, read without (nr published last). */
  pthread_mutex_t lock;
  atomic_uint nr_pollers;
  struct rbd_poller pollers[RBD_MAX_POLLERS];
};

/* librados and librbd are loaded by open (lib.c), not linked: mapped and
 * locked (mlockall) in every ubdkit, Ceph's libraries cost 167 MiB of
 * locked memory to daemons serving other backends (measured).  Their
 * functions are called through this table, typed from their headers. */
#define RBD_LIB_RADOS(F) \
  F (rados_create) F (rados_conf_read_file) F (rados_conf_parse_env) \
  F (rados_conf_set) F (rados_connect) F (rados_ioctx_create) \
  F (rados_ioctx_set_namespace) F (rados_ioctx_destroy) F (rados_shutdown)
#define RBD_LIB_RBD(F) \
  F (rbd_open) F (rbd_open_read_only) F (rbd_close) F (rbd_get_size) \
  F (rbd_get_features) F (rbd_get_flags) F (rbd_get_overlap) \
  F (rbd_set_image_notification) F (rbd_update_watch) \
  F (rbd_update_unwatch) F (rbd_read) F (rbd_write2) F (rbd_flush) \
  F (rbd_discard) F (rbd_write_zeroes) F (rbd_diff_iterate2) \
  F (rbd_aio_create_completion) F (rbd_aio_read) F (rbd_aio_write) \
  F (rbd_aio_flush) F (rbd_aio_discard) F (rbd_aio_write_zeroes) \
  F (rbd_aio_release) F (rbd_aio_get_arg) F (rbd_aio_get_return_value) \
  F (rbd_poll_io_events)
struct rbd_lib {
#define RBD_LIB_FIELD(fn) __typeof__ (fn) *fn;
  RBD_LIB_RADOS (RBD_LIB_FIELD)
  RBD_LIB_RBD (RBD_LIB_FIELD)
#undef RBD_LIB_FIELD
};
/* Filled by rbd_lib_load; read-only afterwards. */
extern struct rbd_lib rbd_ceph;
/* Load the libraries once: 0, or -1 after logging. */
int rbd_lib_load (void);

/* Write-zeroes without MAY_TRIM: the client wants the range allocated
 * (NBD's NO_HOLE), and librbd then writes zeros (thick provisioning),
 * which is not fast: a FAST request fails with ENOTSUP. */
static inline int
rbd_zero_flags (uint32_t flags)
{
  return (flags & BACKEND_FLAG_MAY_TRIM) ? 0
    : RBD_WRITE_ZEROES_FLAG_THICK_PROVISION;
}
static inline bool
rbd_zero_too_slow (uint32_t flags)
{
  return (flags & BACKEND_FLAG_FAST) && !(flags & BACKEND_FLAG_MAY_TRIM);
}

/* aio.c: the backend's submit (see backend_ops.submit). */
int rbd_submit (void *h, struct io_uring *ring, struct backend_io *io);

#endif
