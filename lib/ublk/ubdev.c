/* See ubdev.h.  Per-tag state lives in one request pool per queue: slot i
 * is tag i.  Two data paths:
 *
 * - copy: the slot's buffer is the one given to the kernel with FETCH, so
 *   the kernel copies write data in and read data out of it;
 * - zero copy (UBLK_F_AUTO_BUF_REG, 6.16 and later, for backends with
 *   BACKEND_FIXED_BUF): each queue's ring has a sparse buffer table of one
 *   entry per tag, and FETCH / COMMIT_AND_FETCH carry, in sqe->addr, the
 *   index where the kernel registers the next request's own pages before
 *   handing it to us (and unregisters them when it is committed).  The
 *   backend reads and writes them with fixed-buffer io_uring operations on
 *   the same ring: no copy between the bio and a server buffer, and no
 *   per-tag data buffer at all.  If that registration fails (the kernel
 *   could not allocate), the kernel says so (UBLK_IO_F_NEED_REG_BUF, as we
 *   ask with UBLK_AUTO_BUF_REG_FALLBACK) and we register the buffer
 *   ourselves (UBLK_U_IO_REGISTER_IO_BUF, which needs the device created
 *   with UBLK_F_SUPPORT_ZERO_COPY as well), and unregister it before the
 *   commit. */
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
#include "ubq.h"

static struct ubdev_health no_health;

/* Tests: UBDKIT_TEST_ZC_FALLBACK=1 makes the kernel's automatic
 * registration fail for every request (its index lies past the table), so
 * the fallback to our own registration is exercised; =enomem also has our
 * own first attempt for each request fail with ENOMEM, so the retry is. */
static int
zc_test_fallback (void)
{
  const char *v = getenv ("UBDKIT_TEST_ZC_FALLBACK");

  if (!v)
    return 0;
  return strcmp (v, "1") == 0 ? 1 : strcmp (v, "enomem") == 0 ? 2 : 0;
}

static void queue_settle_tag (struct ubq_tag *t);

static unsigned
io_cmd_op (const struct ubdev *d, bool first)
{
  if (d->info.flags & UBLK_F_CMD_IOCTL_ENCODE)
    return first ? UBLK_U_IO_FETCH_REQ : UBLK_U_IO_COMMIT_AND_FETCH_REQ;
  return first ? UBLK_IO_FETCH_REQ : UBLK_IO_COMMIT_AND_FETCH_REQ;
}

/* An I/O command OP about tag T on its queue's ring, completing to EV. */
static struct ublksrv_io_cmd *
io_cmd (struct ubq_tag *t, struct loop_event *ev, unsigned op,
        struct io_uring_sqe **sqep)
{
  struct io_uring_sqe *sqe = loop_sqe (&t->q->loop, ev);
  struct ublksrv_io_cmd *cmd = (struct ublksrv_io_cmd *) sqe->cmd;

  memset (sqe, 0, sizeof *sqe);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = t->q->dev->cdev;
  sqe->cmd_op = op;
  io_uring_sqe_set_data (sqe, ev);
  cmd->q_id = t->q->id;
  cmd->tag = t->tag;
  *sqep = sqe;
  return cmd;
}

/* Queue FETCH (first) or COMMIT_AND_FETCH with RESULT for tag T. */
static void
tag_command (struct ubq_tag *t, bool first, int result)
{
  struct ubq *q = t->q;
  struct io_uring_sqe *sqe;
  struct ublksrv_io_cmd *cmd = io_cmd (t, &t->ev, io_cmd_op (q->dev, first),
                                       &sqe);

  cmd->result = result;
  if (q->dev->zc)
    sqe->addr = UBDKIT_AUTO_BUF_REG_ADDR (ubq_buf_index (t),
                                          UBLK_AUTO_BUF_REG_FALLBACK);
  else
    cmd->addr = (uintptr_t) t->buf;
  t->busy = false;
  if (!first && atomic_load_explicit (&q->dev->quiescing, memory_order_relaxed))
    queue_settle_tag (t);
}

uint16_t
ubq_buf_index (const struct ubq_tag *t)
{
  return t->tag + t->q->dev->zc_index_offset;
}

/* Zero copy fallback: register (or unregister) tag T's request buffer at
 * index T of the queue's table ourselves; completion goes to FN. */
static void
tag_register (struct ubq_tag *t, bool reg,
              void (*fn) (struct loop_event *, int, uint32_t))
{
  struct io_uring_sqe *sqe;

  t->reg_ev.fn = fn;
  io_cmd (t, &t->reg_ev, reg ? UBLK_U_IO_REGISTER_IO_BUF
                             : UBLK_U_IO_UNREGISTER_IO_BUF, &sqe)->addr = t->tag;
}

static void
unregistered (struct loop_event *ev, int res, uint32_t cqe_flags)
{
  struct ubq_tag *t = container_of (ev, struct ubq_tag, reg_ev);

  if (res < 0)
    log_ratelimited ("ublk q%u tag %u: UNREGISTER_IO_BUF: %s", t->q->id,
                     t->tag, strerror (-res));
}

/* Complete the request: unregister a buffer we registered, then commit
 * (in this order on the ring, so the next request's automatic
 * registration finds the index free). */
static void
tag_commit (struct ubq_tag *t, int result)
{
  if (t->registered) {
    t->registered = false;
    tag_register (t, false, unregistered);
  }
  if (t->q->dev->batch)
    ubq_batch_commit (t, result);
  else
    tag_command (t, false, result);
}

/* The counters' type of a kernel request (stats.h). */
static unsigned
stats_op (const struct ublksrv_io_desc *iod)
{
  switch (iod->op_flags & 0xff) {
  case UBLK_IO_OP_READ: return STATS_READ;
  case UBLK_IO_OP_WRITE: return STATS_WRITE;
  case UBLK_IO_OP_FLUSH: return STATS_FLUSH;
  case UBLK_IO_OP_DISCARD: return STATS_TRIM;
  case UBLK_IO_OP_WRITE_ZEROES: return STATS_ZERO;
  default: return STATS_OTHER;
  }
}

/* A request of tag T answered with RES. */
static void
stats_done (struct ubq_tag *t, int res)
{
  if (res < 0)
    stats_error (t->q->stats, stats_op (&t->q->descs[t->tag]));
  stats_bump (&t->q->stats->completed, 1);
  t->q->busy--;
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
  stats_done (t, res);
  tag_commit (t, res < 0 ? res : rw ? (int) io->count : 0);
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
  io->fixed_buf = t->q->dev->zc;
  io->buf_index = t->tag;
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
tag_start (struct ubq_tag *t)
{
  t->io.done = io_done;
  backend_start (t->q->dev->b, &t->q->loop, &t->io);
}

static void registered (struct loop_event *ev, int res, uint32_t cqe_flags);

static void
register_again (struct loop_event *ev, int res, uint32_t cqe_flags)
{
  tag_register (container_of (ev, struct ubq_tag, reg_ev), true, registered);
}

static void
registered (struct loop_event *ev, int res, uint32_t cqe_flags)
{
  struct ubq_tag *t = container_of (ev, struct ubq_tag, reg_ev);

  /* Out of memory, the kernel may be waiting on this very request to get
   * some back: do not fail it, try again in a millisecond (backpressure,
   * as everywhere else). */
  if (res == -ENOMEM) {
    struct io_uring_sqe *sqe = loop_sqe (&t->q->loop, &t->reg_ev);
    log_ratelimited ("ublk q%u tag %u: REGISTER_IO_BUF: %s: trying again",
                     t->q->id, t->tag, strerror (-res));
    t->retry = (struct __kernel_timespec) { .tv_nsec = 1000 * 1000 };
    io_uring_prep_timeout (sqe, &t->retry, 0, 0);
    stats_bump (&t->q->stats->pool_waits, 1);
    t->reg_ev.fn = register_again;
    io_uring_sqe_set_data (sqe, &t->reg_ev);
    return;
  }
  if (res < 0) {
    log_ratelimited ("ublk q%u tag %u: REGISTER_IO_BUF: %s", t->q->id,
                     t->tag, strerror (-res));
    stats_done (t, res);
    tag_commit (t, res);
    return;
  }
  t->registered = true;
  tag_start (t);
}

void
ubq_tag_serve (struct ubq_tag *t)
{
  const struct ublksrv_io_desc *iod = &t->q->descs[t->tag];
  int r;

  atomic_fetch_add_explicit (&t->q->dev->health->started, 1,
                             memory_order_relaxed);
  stats_request (t->q->stats, stats_op (iod), (uint64_t) iod->nr_sectors << 9);
  /* Every tag of this thread busy: the kernel holds further requests
   * back (docs/observability.md: pool waits). */
  if (++t->q->busy == t->q->pool.nr_slots)
    stats_bump (&t->q->stats->pool_waits, 1);
  r = tag_request (t, iod);

  if (r < 0) {
    stats_done (t, r);
    tag_commit (t, r);
    return;
  }
  if (t->q->dev->zc && (iod->op_flags & UBLK_IO_F_NEED_REG_BUF)) {
    if (!t->q->said_fallback) {
      t->q->said_fallback = true;
      log_info ("ublk q%u: the kernel could not register a request's "
                "buffer; registering it ourselves", t->q->id);
    }
    if (t->q->dev->zc_test_enomem) {   /* the retry goes to the kernel */
      registered (&t->reg_ev, -ENOMEM, 0);
      return;
    }
    tag_register (t, true, registered);
    return;
  }
  tag_start (t);
}

void
ubq_end (struct ubq *q)
{
  uint64_t one = 1;

  pthread_mutex_lock (&q->dev->qlock);
  q->finished = true;
  pthread_mutex_unlock (&q->dev->qlock);
  q->loop.done = true;
  if (write (q->dev->done_fd, &one, sizeof one) != sizeof one)
    log_error ("eventfd: %m");
}

static void
queue_end_tag (struct ubq_tag *t)
{
  if (t->ended)
    return;
  t->ended = true;
  if (++t->q->ended == t->q->pool.nr_slots)
    ubq_end (t->q);
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

  if (t->settled)
    return;
  t->settled = true;
  if (++q->settled < q->pool.nr_slots)
    return;
  io_uring_submit (&q->loop.ring);
  ubq_end (q);
}

/* The kernel's quiesce aborts the idle fetches it finds, but not every
 * fetch is found idle: a COMMIT_AND_FETCH we queued before the quiesce
 * began (so not counted as settled) may reach the kernel while or after
 * it cancels, and its new fetch then stays armed with no request ever to
 * come (the device is cancelling) and no abort until the ring goes.  On
 * 7.3.4 one such tag made a quiesce wait out its timeout.  So once the
 * QUIESCE_DEV command has returned, each queue thread settles every tag
 * that holds no request of the kernel's.  Requests the kernel started
 * before the quiesce are still dispatched to us afterwards, as task work
 * of our ring (a run of it is capped): the sweep first runs all of it and
 * serves what it delivers, and settles only when a run delivers nothing
 * and the ring reports no more pending. */
static bool
queue_taskrun_pending (struct ubq *q)
{
  return IO_URING_READ_ONCE (*q->loop.ring.sq.kflags) & IORING_SQ_TASKRUN;
}

static void queue_sweep (struct loop_work *w);

static void
queue_sweep_idle (struct loop_work *w)
{
  struct ubq *q = container_of (w, struct ubq, sweep);
  unsigned left = 0;

  io_uring_get_events (&q->loop.ring);
  if (io_uring_cq_ready (&q->loop.ring) || queue_taskrun_pending (q)) {
    w->fn = queue_sweep;
    loop_post (&q->loop, w);      /* after those completions */
    return;
  }
  for (unsigned i = 0; i < q->pool.nr_slots; i++) {
    struct ubq_tag *t = q->tags[i];

    left += !t->busy && !t->ended && !t->settled;
  }
  if (left)
    log_info ("ublk q%u: quiesce: %u idle fetch%s the kernel left armed: "
              "settled", q->id, left, left == 1 ? "" : "es");
  for (unsigned i = 0; i < q->pool.nr_slots && !q->loop.done; i++) {
    struct ubq_tag *t = q->tags[i];

    if (!t->busy && !t->ended)
      queue_settle_tag (t);
  }
}

static void
queue_sweep (struct loop_work *w)
{
  struct ubq *q = container_of (w, struct ubq, sweep);

  io_uring_get_events (&q->loop.ring);
  w->fn = queue_sweep_idle;
  loop_defer (&q->loop, w);
}

static void
tag_event (struct loop_event *ev, int res, uint32_t cqe_flags)
{
  struct ubq_tag *t = container_of (ev, struct ubq_tag, ev);

  if (res == UBLK_IO_RES_OK) {
    t->busy = true;
    ubq_tag_serve (t);
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

static int
queue_on_start (struct loop *l)
{
  struct ubq *q = l->data;
  int r;

  /* The table the kernel registers request buffers into must exist on
   * this ring before the first FETCH; with a single-issuer ring only this
   * thread may create it. */
  if (q->dev->zc &&
      (r = io_uring_register_buffers_sparse (&l->ring,
                                             q->dev->info.queue_depth)) < 0) {
    log_error ("ublk q%u: a buffer table of %u entries: %s", q->id,
               q->dev->info.queue_depth, strerror (-r));
    return -1;
  }
  if (q->dev->batch)
    return ubq_batch_start (q);
  for (size_t i = 0; i < q->pool.nr_slots; i++)
    tag_command (q->tags[i], true, -1);
  return 0;
}

static int
queue_init (struct ubdev *d, struct ubq *q, uint16_t id, uint16_t daemon)
{
  unsigned depth = d->info.queue_depth;
  unsigned own = (depth - daemon + d->threads - 1) / d->threads;
  size_t page = sysconf (_SC_PAGESIZE);
  off_t off = UBLKSRV_CMD_BUF_OFFSET +
    (off_t) id * (UBLK_MAX_QUEUE_DEPTH * sizeof (struct ublksrv_io_desc));
  char name[32];                /* loop_start keeps 15 characters */

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
  /* Zero copy needs no data buffer: the smallest the pool takes. */
  if (request_pool_init (&q->pool, own, sizeof (struct ubq_tag),
                         d->zc ? page : d->info.max_io_buf_bytes) == -1)
    return -1;
  q->tags = calloc (own, sizeof *q->tags);
  if (!q->tags)
    fatal ("calloc: %m");
  /* Every slot is a tag for the whole life of the device: slot i is tag
   * daemon + i * threads. */
  for (unsigned i = 0; i < own; i++) {
    struct ubq_tag *t = request_pool_get (&q->pool);
    size_t slot = request_pool_index (&q->pool, t);
    t->ev.fn = tag_event;
    t->q = q;
    t->buf = request_pool_buffer (&q->pool, t);
    t->tag = daemon + slot * d->threads;
    q->tags[slot] = t;
  }
  if (d->batch && ubq_batch_init (q) == -1)
    return -1;
  q->loop.data = q;
  q->loop.on_start = queue_on_start;
  q->loop.on_wake = queue_on_wake;
  q->loop.poll_max_ns = d->poll_us * UINT64_C (1000);
  if (d->threads > 1)
    snprintf (name, sizeof name, "ublk%u-q%u.%u", d->info.dev_id, id, daemon);
  else
    snprintf (name, sizeof name, "ublk%u-q%u", d->info.dev_id, id);
  return loop_start (&q->loop, id, name, 2 * own + 16);
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

/* Zero copy where asked for and possible: the kernel must offer
 * UBLK_F_AUTO_BUF_REG and the backend must do its I/O on registered
 * buffers (the others need the bytes in their own memory).  Returns the
 * flag to request, or -1 after logging when it is required but missing. */
static int64_t
zero_copy_flag (const struct ubdev *d, const struct ubdev_options *o)
{
  bool kernel = d->ctl->have_features &&
                (d->ctl->features & UBLK_F_AUTO_BUF_REG);
  bool backend = d->b->ops->props & BACKEND_FIXED_BUF;

  if (o->zero_copy == UBDEV_ZC_OFF)
    return 0;
  /* SUPPORT_ZERO_COPY too: without it the kernel refuses the
   * REGISTER_IO_BUF of our fallback. */
  if (kernel && backend)
    return UBLK_F_AUTO_BUF_REG |
           (d->ctl->features & UBLK_F_SUPPORT_ZERO_COPY);
  if (o->zero_copy == UBDEV_ZC_ON) {
    log_error ("ublk: --zero-copy: %s", !kernel
               ? "this kernel's ublk driver lacks UBLK_F_AUTO_BUF_REG (6.16 "
                 "and later have it)"
               : "this backend needs the data in its own memory; only the "
                 "file backend reads and writes the request's pages");
    return -1;
  }
  return 0;
}

static int
add_device (struct ubdev *d, const struct ubdev_options *o)
{
  uint64_t want = UBLK_F_CMD_IOCTL_ENCODE;
  int64_t zc = zero_copy_flag (d, o);
  char names[512];
  int r;

  if (zc == -1)
    return -1;
  if (d->threads > 1) {
    if (!d->ctl->have_features ||
        !(d->ctl->features & UBLK_F_PER_IO_DAEMON)) {
      log_error ("ublk: %u threads per queue: this kernel's ublk driver "
                 "lacks UBLK_F_PER_IO_DAEMON, so one thread serves a queue",
                 d->threads);
      return -1;
    }
    want |= UBLK_F_PER_IO_DAEMON;
  }
  if (o->batch) {
    bool kernel = d->ctl->have_features &&
                  (d->ctl->features & UBLK_F_BATCH_IO);
    if (!kernel || d->threads > 1) {
      log_error ("ublk: --batch-io: %s", !kernel
                 ? "this kernel's ublk driver lacks UBLK_F_BATCH_IO"
                 : "not with several threads per queue");
      return -1;
    }
    want |= UBLK_F_BATCH_IO;
  }
  /* UPDATE_SIZE and QUIESCE must be asked for at creation; SAFE_STOP_DEV
   * is given to every device by the kernels that have it. */
  want |= UBLK_F_UPDATE_SIZE | UBLK_F_SAFE_STOP_DEV;
  /* No QUIESCE with the batch protocol: measured on 7.3.4, a quiesce then
   * fails the writes in flight (fio sees EIO) where the per-tag protocol
   * completes them; `upgrade` of such a device takes the path of kernels
   * without QUIESCE (exit, the kernel re-issues). */
  if (o->recovery)
    want |= UBLK_F_USER_RECOVERY | (o->batch ? 0 : UBLK_F_QUIESCE) |
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
  want |= zc;
  d->info = (struct ublksrv_ctrl_dev_info) {
    .nr_hw_queues = o->queues, .queue_depth = o->depth,
    .max_io_buf_bytes = o->max_io, .dev_id = (uint32_t) o->id,
    .ublksrv_pid = getpid (), .flags = want,
  };
  r = ubctl_add_dev (d->ctl, &d->info);
  /* Zero copy needs CAP_SYS_ADMIN: without it, copy, unless required. */
  if (r == -EPERM && zc && o->zero_copy == UBDEV_ZC_AUTO) {
    log_warn ("ublk: ADD_DEV with zero copy: %s; copying instead",
              strerror (-r));
    want &= ~(uint64_t) zc;
    d->info.flags = want;
    d->info.dev_id = (uint32_t) o->id;
    r = ubctl_add_dev (d->ctl, &d->info);
  }
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

/* The data path follows the device's flags (a recovering server finds
 * them in the kernel). */
static int
choose_data_path (struct ubdev *d)
{
  d->zc = d->info.flags & UBLK_F_AUTO_BUF_REG;
  d->batch = d->info.flags & UBLK_F_BATCH_IO;
  if (d->batch && d->threads > 1) {
    log_error ("ublk: device %u uses the batch protocol, which ubdkit "
               "serves with one thread per queue", d->info.dev_id);
    return -1;
  }
  if (d->zc && !(d->b->ops->props & BACKEND_FIXED_BUF)) {
    log_error ("ublk: device %u does zero copy, which this backend cannot "
               "serve", d->info.dev_id);
    return -1;
  }
  if (d->zc && zc_test_fallback ())
    d->zc_index_offset = d->info.queue_depth;
  d->zc_test_enomem = d->zc && zc_test_fallback () == 2;
  log_info ("ublk: device %u: %s; %s", d->info.dev_id, d->zc
            ? "zero copy: the backend reads and writes the request's own "
              "pages (UBLK_F_AUTO_BUF_REG)"
            : "requests are copied through a buffer per tag",
            d->batch ? "requests fetched and committed in batches "
                       "(UBLK_F_BATCH_IO)"
                     : "one fetch and commit per request");
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
  d->threads = o->threads ? o->threads : 1;
  d->ctl = ctl;
  d->b = b;
  d->cdev = d->done_fd = -1;
  d->health = health ? health : &no_health;
  pthread_mutex_init (&d->qlock, NULL);
  return d;
}

/* Open the character device and start every queue (each fetches all its
 * tags from its own thread). */
static int
start_queues (struct ubdev *d)
{
  if (choose_data_path (d) == -1)
    return -1;
  if (d->threads > d->info.queue_depth)
    d->threads = d->info.queue_depth;
  if (d->threads > 1 && !(d->info.flags & UBLK_F_PER_IO_DAEMON)) {
    log_error ("ublk: device %u: several threads per queue need "
               "UBLK_F_PER_IO_DAEMON", d->info.dev_id);
    return -1;
  }
  d->done_fd = eventfd (0, EFD_CLOEXEC);
  if (d->done_fd == -1 || open_cdev (d) == -1)
    return -1;
  d->queues = calloc ((size_t) d->info.nr_hw_queues * d->threads,
                      sizeof *d->queues);
  d->stats = aligned_alloc (STATS_LINE, (size_t) d->info.nr_hw_queues *
                            d->threads * sizeof *d->stats);
  if (!d->queues || !d->stats)
    fatal ("calloc: %m");
  memset (d->stats, 0, (size_t) d->info.nr_hw_queues * d->threads *
          sizeof *d->stats);
  for (unsigned i = 0; i < d->info.nr_hw_queues; i++)
    for (unsigned k = 0; k < d->threads; k++, d->nr_queues++) {
      d->queues[d->nr_queues].stats = &d->stats[d->nr_queues];
      if (queue_init (d, &d->queues[d->nr_queues], i, k) == -1)
        return -1;
    }
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

void
ubdev_stats (const struct ubdev *d, struct stats_sum *sum)
{
  memset (sum, 0, sizeof *sum);
  for (unsigned i = 0; i < d->nr_queues; i++)
    stats_add (sum, &d->stats[i]);
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
    ubq_batch_free (q);
    free (q->tags);
  }
  free (d->queues);
  free (d->stats);
  if (d->cdev >= 0)
    close (d->cdev);
  if (d->done_fd >= 0)
    close (d->done_fd);
  pthread_mutex_destroy (&d->qlock);
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

/* Tests only: UBDKIT_TEST_QUIESCE_STALL=MS keeps every queue thread busy
 * for MS milliseconds while the quiesce begins, as a thread deep in a long
 * request would be.  The kernel meanwhile starts requests whose dispatch
 * waits for the thread (task work), and leaves their tags' fetches armed:
 * the case queue_sweep_idle is for. */
static unsigned
quiesce_test_stall (void)
{
  const char *v = getenv ("UBDKIT_TEST_QUIESCE_STALL");

  return v ? (unsigned) atoi (v) : 0;
}

static void
queue_stall (struct loop_work *w)
{
  unsigned ms = quiesce_test_stall ();
  struct timespec ts = { ms / 1000, (long) (ms % 1000) * 1000000 };

  nanosleep (&ts, NULL);
}

int
ubdev_quiesce (struct ubdev *d, unsigned timeout_ms)
{
  struct pollfd p = { .fd = d->done_fd, .events = POLLIN };
  unsigned ended = 0;
  int r;

  if (!(d->info.flags & UBLK_F_QUIESCE))
    return -EOPNOTSUPP;
  if (quiesce_test_stall ()) {
    struct timespec ms = { 0, 1000000 };

    for (unsigned i = 0; i < d->nr_queues; i++) {
      d->queues[i].stall.fn = queue_stall;
      loop_post (&d->queues[i].loop, &d->queues[i].stall);
    }
    nanosleep (&ms, NULL);
  }
  atomic_store (&d->quiescing, true);
  r = ubctl_quiesce_dev (d->ctl, d->info.dev_id, timeout_ms);
  if (r < 0) {
    atomic_store (&d->quiescing, false);
    log_warn ("ublk: device %u: QUIESCE_DEV: %s", d->info.dev_id,
              strerror (-r));
    return r;
  }
  for (unsigned i = 0; i < d->nr_queues; i++) {
    struct ubq *q = &d->queues[i];

    pthread_mutex_lock (&d->qlock);
    if (!q->finished) {           /* its eventfd is still open */
      q->sweep.fn = queue_sweep;
      loop_post (&q->loop, &q->sweep);
    }
    pthread_mutex_unlock (&d->qlock);
  }
  /* Each queue ends once all its tags have settled (its loop is then
   * gone: loop_stop would wake a closed eventfd). */
  while (ended < d->nr_queues) {
    uint64_t n;

    if (poll (&p, 1, timeout_ms ? (int) timeout_ms : -1) != 1) {
      unsigned busy = 0, armed = 0;

      for (unsigned i = 0; i < d->nr_queues; i++)
        for (unsigned k = 0; k < d->queues[i].pool.nr_slots; k++) {
          const struct ubq_tag *t = d->queues[i].tags[k];

          busy += t->busy;
          armed += !t->busy && !t->settled && !t->ended;
        }
      log_warn ("ublk: device %u: quiesced, but after %u ms %u of %u queues "
                "have not settled (%u requests served, %u fetches armed)",
                d->info.dev_id, timeout_ms, d->nr_queues - ended,
                d->nr_queues, busy, armed);
      return -ETIMEDOUT;
    }
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
