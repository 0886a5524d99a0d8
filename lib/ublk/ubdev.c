/* See ubdev.h.  Per-tag state lives in one request pool per queue: slot i
 * is tag i, and its buffer is the one given to the kernel with FETCH, so
 * the kernel copies write data in and read data out of it. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "request-pool.h"
#include "ubdev.h"

struct ubq;

struct ubq_tag {
  struct loop_event ev;         /* FETCH / COMMIT_AND_FETCH completion */
  struct backend_io io;
  struct ubq *q;
  uint16_t tag;
  void *buf;
  bool ended;                   /* the kernel aborted this tag */
  bool settled;                 /* quiescing: aborted, or committed */
};

struct ubq {
  struct loop loop;
  struct ubdev *dev;
  uint16_t id;
  struct request_pool pool;
  struct ubq_tag **tags;
  struct ublksrv_io_desc *descs;
  size_t descs_len;
  unsigned ended;
  unsigned settled;             /* tags settled since the quiesce began */
};

struct ubdev {
  struct ubctl *ctl;
  struct backend *b;
  struct ublksrv_ctrl_dev_info info;
  int cdev;
  int done_fd;                  /* eventfd: +1 per queue that ended */
  unsigned nr_queues;
  struct ubq *queues;
  bool started;                 /* START_DEV succeeded */
  unsigned poll_us;
  struct ubdev_health *health;
  atomic_bool quiescing;        /* ubdev_quiesce is under way */
};

static struct ubdev_health no_health;

static void queue_settle_tag (struct ubq_tag *t);

static unsigned
io_cmd_op (const struct ubdev *d, bool first)
{
  if (d->info.flags & UBLK_F_CMD_IOCTL_ENCODE)
    return first ? UBLK_U_IO_FETCH_REQ : UBLK_U_IO_COMMIT_AND_FETCH_REQ;
  return first ? UBLK_IO_FETCH_REQ : UBLK_IO_COMMIT_AND_FETCH_REQ;
}

/* Queue FETCH (first) or COMMIT_AND_FETCH with RESULT for tag T. */
static void
tag_command (struct ubq_tag *t, bool first, int result)
{
  struct ubq *q = t->q;
  struct io_uring_sqe *sqe = loop_sqe (&q->loop, &t->ev);
  struct ublksrv_io_cmd *cmd;

  memset (sqe, 0, sizeof *sqe);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = q->dev->cdev;
  sqe->cmd_op = io_cmd_op (q->dev, first);
  io_uring_sqe_set_data (sqe, &t->ev);
  cmd = (struct ublksrv_io_cmd *) sqe->cmd;
  cmd->q_id = q->id;
  cmd->tag = t->tag;
  cmd->result = result;
  cmd->addr = (uintptr_t) t->buf;
  if (!first && atomic_load_explicit (&q->dev->quiescing, memory_order_relaxed))
    queue_settle_tag (t);
}

static void
io_done (struct backend_io *io, int res)
{
  struct ubq_tag *t = container_of (io, struct ubq_tag, io);
  bool rw = io->op == BACKEND_OP_READ || io->op == BACKEND_OP_WRITE;

  if (res < 0)
    log_ratelimited ("ublk q%u tag %u: op %d at %" PRIu64 "+%u: %s",
                     t->q->id, t->tag, io->op, io->offset, io->count,
                     strerror (-res));
  tag_command (t, false, res < 0 ? res : rw ? (int) io->count : 0);
  atomic_fetch_add_explicit (&t->q->dev->health->completed, 1,
                             memory_order_relaxed);
}

/* Translate the kernel's request into a checked backend request. */
static int
tag_request (struct ubq_tag *t, const struct ublksrv_io_desc *iod)
{
  uint32_t flags = iod->op_flags >> 8;
  struct backend_io *io = &t->io;

  io->offset = iod->start_sector << 9;
  io->count = iod->nr_sectors << 9;
  io->buf = t->buf;
  io->flags = 0;
  switch (iod->op_flags & 0xff) {
  case UBLK_IO_OP_READ: io->op = BACKEND_OP_READ; break;
  case UBLK_IO_OP_WRITE: io->op = BACKEND_OP_WRITE; break;
  case UBLK_IO_OP_FLUSH:
    io->op = BACKEND_OP_FLUSH;
    io->offset = io->count = 0;
    break;
  case UBLK_IO_OP_DISCARD: io->op = BACKEND_OP_TRIM; break;
  case UBLK_IO_OP_WRITE_ZEROES:
    io->op = BACKEND_OP_ZERO;
    if (!(flags & (UBLK_IO_F_NOUNMAP >> 8)))
      io->flags |= BACKEND_FLAG_MAY_TRIM;
    break;
  default:
    return -EOPNOTSUPP;
  }
  if ((flags & (UBLK_IO_F_FUA >> 8)) && (t->q->dev->b->caps & BACKEND_CAN_FUA))
    io->flags |= BACKEND_FLAG_FUA;
  if ((io->op == BACKEND_OP_READ || io->op == BACKEND_OP_WRITE) &&
      io->count > t->q->dev->info.max_io_buf_bytes)
    return -EINVAL;
  return backend_check (t->q->dev->b, io->op, io->offset, io->count,
                        io->flags);
}

static void
tag_serve (struct ubq_tag *t)
{
  int r = tag_request (t, &t->q->descs[t->tag]);

  if (r < 0) {
    tag_command (t, false, r);
    return;
  }
  t->io.done = io_done;
  backend_start (t->q->dev->b, &t->q->loop, &t->io);
}

static void
queue_end_tag (struct ubq_tag *t)
{
  struct ubq *q = t->q;
  uint64_t one = 1;

  if (t->ended)
    return;
  t->ended = true;
  if (++q->ended < q->pool.nr_slots)
    return;
  q->loop.done = true;
  if (write (q->dev->done_fd, &one, sizeof one) != sizeof one)
    log_error ("eventfd: %m");
}

/* During a quiesce, each tag either has its idle fetch aborted or, being
 * served, is committed (its re-armed fetch then stays with the kernel,
 * which gives it no new request and cancels it when the ring goes).  Once
 * every tag has settled, the commits are pushed to the kernel, so that
 * nothing is left in flight when the character device is released, and
 * the queue ends. */
static void
queue_settle_tag (struct ubq_tag *t)
{
  struct ubq *q = t->q;
  uint64_t one = 1;

  if (t->settled)
    return;
  t->settled = true;
  if (++q->settled < q->pool.nr_slots)
    return;
  io_uring_submit (&q->loop.ring);
  q->loop.done = true;
  if (write (q->dev->done_fd, &one, sizeof one) != sizeof one)
    log_error ("eventfd: %m");
}

static void
tag_event (struct loop_event *ev, int res, uint32_t cqe_flags)
{
  struct ubq_tag *t = container_of (ev, struct ubq_tag, ev);

  if (res == UBLK_IO_RES_OK) {
    atomic_fetch_add_explicit (&t->q->dev->health->started, 1,
                               memory_order_relaxed);
    tag_serve (t);
    return;
  }
  if (res == UBLK_IO_RES_ABORT && atomic_load (&t->q->dev->quiescing)) {
    queue_settle_tag (t);         /* a quiesce, not the device going */
    return;
  }
  if (res != UBLK_IO_RES_ABORT)
    log_error ("ublk q%u tag %u: command failed: %s", t->q->id, t->tag,
               strerror (-res));
  queue_end_tag (t);
}

static void
queue_on_wake (struct loop *l)
{
  if (atomic_load (&l->stop))
    l->done = true;             /* abandoned before the device started */
}

static void
queue_on_start (struct loop *l)
{
  struct ubq *q = l->data;

  for (size_t i = 0; i < q->pool.nr_slots; i++)
    tag_command (q->tags[i], true, -1);
}

static int
queue_init (struct ubdev *d, struct ubq *q, uint16_t id)
{
  unsigned depth = d->info.queue_depth;
  size_t page = sysconf (_SC_PAGESIZE);
  off_t off = UBLKSRV_CMD_BUF_OFFSET +
    (off_t) id * (UBLK_MAX_QUEUE_DEPTH * sizeof (struct ublksrv_io_desc));
  char name[16];

  q->dev = d;
  q->id = id;
  q->descs_len = (depth * sizeof (struct ublksrv_io_desc) + page - 1) &
                 ~(page - 1);
  q->descs = mmap (NULL, q->descs_len, PROT_READ, MAP_SHARED | MAP_POPULATE,
                   d->cdev, (off + page - 1) & ~(off_t) (page - 1));
  if (q->descs == MAP_FAILED) {
    q->descs = NULL;
    log_error ("ublk: mmap of queue %u descriptors: %m", id);
    return -1;
  }
  if (request_pool_init (&q->pool, depth, sizeof (struct ubq_tag),
                         d->info.max_io_buf_bytes) == -1)
    return -1;
  q->tags = calloc (depth, sizeof *q->tags);
  if (!q->tags)
    fatal ("calloc: %m");
  /* Every slot is a tag for the whole life of the device. */
  for (unsigned i = 0; i < depth; i++) {
    struct ubq_tag *t = request_pool_get (&q->pool);
    t->ev.fn = tag_event;
    t->q = q;
    t->buf = request_pool_buffer (&q->pool, t);
    t->tag = request_pool_index (&q->pool, t);
    q->tags[t->tag] = t;
  }
  q->loop.data = q;
  q->loop.on_start = queue_on_start;
  q->loop.on_wake = queue_on_wake;
  q->loop.poll_max_ns = d->poll_us * UINT64_C (1000);
  snprintf (name, sizeof name, "ublk%u-q%u", d->info.dev_id, id);
  return loop_start (&q->loop, id, name, 2 * depth + 16);
}

static void
fill_params (const struct ubdev *d, const struct backend *b,
             struct ublk_params *p)
{
  unsigned lbs = b->min_block > 512 ? 12 : 9;

  memset (p, 0, sizeof *p);
  p->len = sizeof *p;
  p->types = UBLK_PARAM_TYPE_BASIC;
  p->basic.logical_bs_shift = lbs;
  p->basic.physical_bs_shift = 12;
  p->basic.io_min_shift = lbs;
  p->basic.io_opt_shift = 12;
  p->basic.max_sectors = d->info.max_io_buf_bytes >> 9;
  p->basic.dev_sectors = b->size >> 9;
  if (b->readonly)
    p->basic.attrs |= UBLK_ATTR_READ_ONLY;
  if (b->caps & BACKEND_IS_ROTATIONAL)
    p->basic.attrs |= UBLK_ATTR_ROTATIONAL;
  if (b->caps & BACKEND_CAN_FLUSH)
    p->basic.attrs |= UBLK_ATTR_VOLATILE_CACHE;
  if (b->caps & BACKEND_CAN_FUA)
    p->basic.attrs |= UBLK_ATTR_FUA;
  if (b->caps & (BACKEND_CAN_TRIM | BACKEND_CAN_ZERO)) {
    p->types |= UBLK_PARAM_TYPE_DISCARD;
    p->discard.discard_granularity = 4096;
    p->discard.max_discard_segments = 1;
    if (b->caps & BACKEND_CAN_TRIM)
      p->discard.max_discard_sectors = UINT32_MAX >> 9;
    if (b->caps & BACKEND_CAN_ZERO)
      p->discard.max_write_zeroes_sectors = UINT32_MAX >> 9;
  }
}

static int
open_cdev (struct ubdev *d)
{
  char path[64];

  snprintf (path, sizeof path, "/dev/ublkc%u", d->info.dev_id);
  /* Without udev the node appears through devtmpfs: give it a moment. */
  for (int i = 0; i < 100; i++) {
    d->cdev = open (path, O_RDWR | O_CLOEXEC);
    if (d->cdev >= 0 || errno != ENOENT)
      break;
    nanosleep (&(struct timespec) { 0, 10 * 1000 * 1000 }, NULL);
  }
  if (d->cdev < 0) {
    log_error ("ublk: open %s: %m", path);
    return -1;
  }
  return 0;
}

static int
add_device (struct ubdev *d, const struct ubdev_options *o)
{
  uint64_t want = UBLK_F_CMD_IOCTL_ENCODE;
  char names[512];
  int r;

  /* UPDATE_SIZE and QUIESCE must be asked for at creation; SAFE_STOP_DEV
   * is given to every device by the kernels that have it. */
  want |= UBLK_F_UPDATE_SIZE | UBLK_F_SAFE_STOP_DEV;
  if (o->recovery)
    want |= UBLK_F_USER_RECOVERY | UBLK_F_QUIESCE |
      (o->fail_io ? UBLK_F_USER_RECOVERY_FAIL_IO : UBLK_F_USER_RECOVERY_REISSUE);
  if (o->fail_io && !(d->ctl->features & UBLK_F_USER_RECOVERY_FAIL_IO)) {
    log_error ("ublk: --recovery=fail-io: the kernel lacks "
               "USER_RECOVERY_FAIL_IO");
    return -1;
  }
  if (d->ctl->have_features)
    want &= d->ctl->features;
  else
    want &= ~UBLK_F_CMD_IOCTL_ENCODE;
  d->info = (struct ublksrv_ctrl_dev_info) {
    .nr_hw_queues = o->queues, .queue_depth = o->depth,
    .max_io_buf_bytes = o->max_io, .dev_id = (uint32_t) o->id,
    .ublksrv_pid = getpid (), .flags = want,
  };
  r = ubctl_add_dev (d->ctl, &d->info);
  if (r < 0) {
    log_error ("ublk: ADD_DEV: %s", strerror (-r));
    return -1;
  }
  /* The kernel silently drops flags it does not know: believe what it
   * wrote back, and say what was lost. */
  ubctl_feature_names (d->info.flags, names, sizeof names);
  log_info ("ublk: device %u added, flags 0x%llx (%s)", d->info.dev_id,
            (unsigned long long) d->info.flags, names);
  if ((want & ~d->info.flags) != 0)
    log_warn ("ublk: kernel dropped flags 0x%llx",
              (unsigned long long) (want & ~d->info.flags));
  return 0;
}

static void ubdev_free (struct ubdev *d);

static struct ubdev *
ubdev_new (struct ubctl *ctl, const struct ubdev_options *o,
           struct backend *b, struct ubdev_health *health)
{
  struct ubdev *d = calloc (1, sizeof *d);

  if (!d)
    fatal ("calloc: %m");
  d->poll_us = o->poll_us;
  d->ctl = ctl;
  d->b = b;
  d->cdev = d->done_fd = -1;
  d->health = health ? health : &no_health;
  return d;
}

/* Open the character device and start every queue (each fetches all its
 * tags from its own thread). */
static int
start_queues (struct ubdev *d)
{
  d->done_fd = eventfd (0, EFD_CLOEXEC);
  if (d->done_fd == -1 || open_cdev (d) == -1)
    return -1;
  d->queues = calloc (d->info.nr_hw_queues, sizeof *d->queues);
  if (!d->queues)
    fatal ("calloc: %m");
  for (unsigned i = 0; i < d->info.nr_hw_queues; i++, d->nr_queues++)
    if (queue_init (d, &d->queues[i], i) == -1)
      return -1;
  return 0;
}

static void
mark_ready (struct ubdev *d, struct ubdev **out)
{
  d->started = true;
  atomic_store (&d->health->dev_id, d->info.dev_id);
  atomic_store (&d->health->ready, 1);
  *out = d;
}

int
ubdev_start (struct ubdev **out, struct ubctl *ctl,
             const struct ubdev_options *o, struct backend *b,
             struct ubdev_health *health)
{
  struct ubdev *d = ubdev_new (ctl, o, b, health);
  struct ublk_params params;
  int r;

  if (add_device (d, o) == -1) {
    free (d);
    return -1;
  }
  fill_params (d, b, &params);
  r = ubctl_set_params (ctl, d->info.dev_id, &params);
  if (r < 0) {
    log_error ("ublk: SET_PARAMS: %s", strerror (-r));
    goto err;
  }
  if (start_queues (d) == -1)
    goto err;
  r = ubctl_start_dev (ctl, d->info.dev_id, getpid ());
  if (r < 0) {
    log_error ("ublk: START_DEV: %s", strerror (-r));
    goto err;
  }
  mark_ready (d, out);
  return 0;
 err:
  ubdev_stop (d);
  return -1;
}

int
ubdev_recover (struct ubdev **out, struct ubctl *ctl, uint32_t id,
               const struct ubdev_options *o, struct backend *b,
               struct ubdev_health *health)
{
  struct ubdev *d = ubdev_new (ctl, o, b, health);
  int r = ubctl_get_info (ctl, id, &d->info);

  if (r < 0) {
    log_error ("ublk: device %u: %s", id, strerror (-r));
    free (d);
    return -1;
  }
  if (!(d->info.flags & UBLK_F_USER_RECOVERY)) {
    log_error ("ublk: device %u was created without user recovery", id);
    free (d);
    return -1;
  }
  /* The old server's character device is released only once the kernel
   * has torn down its rings, which may be just after it exited. */
  for (int i = 0; i < 100; i++) {
    r = ubctl_start_recovery (ctl, id);
    if (r != -EBUSY)
      break;
    nanosleep (&(struct timespec) { 0, 100 * 1000 * 1000 }, NULL);
  }
  if (r < 0) {
    log_error ("ublk: START_USER_RECOVERY %u: %s%s", id, strerror (-r),
               r == -EBUSY ? " (is its old server still running?)" : "");
    free (d);
    return -1;
  }
  log_info ("ublk: recovering device %u (%u queues of depth %u)", id,
            d->info.nr_hw_queues, d->info.queue_depth);
  if (start_queues (d) == -1)
    goto err;
  r = ubctl_end_recovery (ctl, id, getpid ());
  if (r < 0) {
    log_error ("ublk: END_USER_RECOVERY %u: %s", id, strerror (-r));
    goto err;
  }
  log_info ("ublk: device %u recovered", id);
  mark_ready (d, out);
  return 0;
 err:
  /* Leave the device for another attempt: do not stop or delete it. */
  for (unsigned i = 0; i < d->nr_queues; i++) {
    loop_stop (&d->queues[i].loop);
    loop_join (&d->queues[i].loop);
  }
  ubdev_free (d);
  return -1;
}

uint32_t ubdev_id (const struct ubdev *d) { return d->info.dev_id; }
uint64_t ubdev_flags (const struct ubdev *d) { return d->info.flags; }
int ubdev_done_fd (const struct ubdev *d) { return d->done_fd; }

bool
ubdev_threads_io_flusher (const struct ubdev *d)
{
  for (unsigned i = 0; i < d->nr_queues; i++)
    if (!d->queues[i].loop.io_flusher)
      return false;
  return true;
}

static void
ubdev_free (struct ubdev *d)
{
  for (unsigned i = 0; i < d->nr_queues; i++) {
    struct ubq *q = &d->queues[i];
    if (q->descs)
      munmap (q->descs, q->descs_len);
    request_pool_free (&q->pool);
    free (q->tags);
  }
  free (d->queues);
  if (d->cdev >= 0)
    close (d->cdev);
  if (d->done_fd >= 0)
    close (d->done_fd);
  free (d);
}

void
ubdev_stop (struct ubdev *d)
{
  struct ubctl *ctl = d->ctl;
  uint32_t id = d->info.dev_id;
  int r;

  /* STOP_DEV lets the queues finish what is in flight, then aborts every
   * fetch, which ends the queue threads.  Only then is the character
   * device released, which DEL_DEV waits for. */
  r = ubctl_stop_dev (ctl, id);
  if (r < 0 && r != -ENODEV)
    log_warn ("ublk: STOP_DEV %u: %s", id, strerror (-r));
  for (unsigned i = 0; i < d->nr_queues; i++) {
    if (!d->started)
      loop_stop (&d->queues[i].loop);  /* nothing will abort its fetches */
    loop_join (&d->queues[i].loop);
  }
  ubdev_free (d);
  r = ubctl_del_dev (ctl, id);
  if (r < 0 && r != -ENODEV)
    log_warn ("ublk: DEL_DEV %u: %s", id, strerror (-r));
  else
    log_info ("ublk: device %u deleted", id);
}

int
ubdev_resize (struct ubdev *d, uint64_t bytes)
{
  uint64_t old = d->b->size;
  int r;

  if (!(d->info.flags & UBLK_F_UPDATE_SIZE))
    return -EOPNOTSUPP;
  /* Requests are checked against b->size on the queue threads: it covers
   * the new range before the kernel sends requests there, and the old one
   * until the kernel has stopped. */
  if (bytes > old)
    __atomic_store_n (&d->b->size, bytes, __ATOMIC_RELEASE);
  r = ubctl_update_size (d->ctl, d->info.dev_id, bytes >> 9);
  if (r < 0) {
    __atomic_store_n (&d->b->size, old, __ATOMIC_RELEASE);
    return r;
  }
  __atomic_store_n (&d->b->size, bytes, __ATOMIC_RELEASE);
  log_info ("ublk: device %u resized from %" PRIu64 " to %" PRIu64 " bytes",
            d->info.dev_id, old, bytes);
  return 0;
}

int
ubdev_quiesce (struct ubdev *d, unsigned timeout_ms)
{
  struct pollfd p = { .fd = d->done_fd, .events = POLLIN };
  unsigned ended = 0;
  int r;

  if (!(d->info.flags & UBLK_F_QUIESCE))
    return -EOPNOTSUPP;
  atomic_store (&d->quiescing, true);
  r = ubctl_quiesce_dev (d->ctl, d->info.dev_id, timeout_ms);
  if (r < 0) {
    atomic_store (&d->quiescing, false);
    return r;
  }
  /* Each queue ends once all its tags have settled (its loop is then
   * gone: loop_stop would wake a closed eventfd). */
  while (ended < d->nr_queues) {
    uint64_t n;

    if (poll (&p, 1, timeout_ms ? (int) timeout_ms : -1) != 1)
      return -ETIMEDOUT;
    if (read (d->done_fd, &n, sizeof n) == sizeof n)
      ended += n;
  }
  for (unsigned i = 0; i < d->nr_queues; i++)
    loop_join (&d->queues[i].loop);
  /* Releasing the character device leaves the device quiesced (or failing
   * I/O, with USER_RECOVERY_FAIL_IO) for the next server. */
  ubdev_free (d);
  return 0;
}
