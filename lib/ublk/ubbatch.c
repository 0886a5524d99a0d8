/* UBLK_F_BATCH_IO (7.x): the kernel hands a queue its requests and takes
 * their results in batches, instead of one FETCH and one COMMIT_AND_FETCH
 * per tag.
 *
 * - PREP_IO_CMDS, once at start: every tag of the queue, each with the
 *   address of its buffer (copy) or the table index for its request's pages
 *   (zero copy).  It makes the queue ready, as the per-tag FETCHes do.
 * - FETCH_IO_CMDS, multishot, with a provided buffer (one buffer ring entry
 *   of one page, consumed incrementally: IOU_PBUF_RING_INC): each
 *   completion brings the 2-byte tags of the requests that arrived, written
 *   one after the other into the page.  When the page is used up the
 *   kernel ends the multishot; we put the page back and fetch again.
 * - COMMIT_IO_CMDS: the results gathered while one batch of completions
 *   was handled go to the kernel in one command, after the batch (a
 *   deferred work item: loop_defer).  Two element buffers: one collects
 *   while the other is in flight; with both busy, results wait in the
 *   collecting one until the commit in flight completes (each tag is there
 *   at most once, so it never fills).  A partial commit is sent again for
 *   the rest.
 *
 * Everything is allocated when the queue is set up, nothing while serving.
 * A queue ends when its fetch has ended (the device stops) and no request
 * it took is left uncommitted. */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "resident.h"
#include "ubq.h"

#ifndef IOU_PBUF_RING_INC
#define IOU_PBUF_RING_INC 2     /* incremental consumption (6.12) */
#endif
#ifndef IORING_URING_CMD_MULTISHOT
#define IORING_URING_CMD_MULTISHOT (1U << 1)
#endif
#ifndef IORING_CQE_F_BUF_MORE
#define IORING_CQE_F_BUF_MORE (1U << 4)
#endif

/* One element of PREP and COMMIT: the kernel's ublk_elem_header, then the
 * buffer address (copy only: UBLK_BATCH_F_HAS_BUF_ADDR). */
struct batch_elem {
  uint16_t tag;
  uint16_t buf_index;
  int32_t result;
  uint64_t buf_addr;
};

struct commit_buf {
  struct loop_event ev;
  struct ubq_batch *b;
  unsigned char *elems;
  unsigned n;                   /* elements collected, or sent */
  bool inflight;
};

struct ubq_batch {
  struct ubq *q;
  uint8_t elem_bytes;           /* 8, or 16 with buffer addresses */
  uint16_t flags;               /* UBLK_BATCH_F_* for PREP and COMMIT */
  /* The multishot fetch and its page of tags. */
  struct loop_event fetch_ev;
  struct io_uring_buf_ring *br;
  uint16_t *tags;
  size_t page;
  size_t tags_off;              /* bytes of the page the kernel has filled */
  bool page_in_ring, fetching, fetch_ended;
  /* Commits. */
  struct commit_buf bufs[2];
  size_t bufs_len;              /* bytes of each */
  unsigned cur;                 /* the one collecting */
  struct loop_work commit_work;
  unsigned in_service;          /* taken, not yet committed */
};

static struct io_uring_sqe *
batch_sqe (struct ubq_batch *b, struct loop_event *ev, unsigned op,
           void *buf, unsigned nr, uint8_t elem_bytes, uint16_t flags)
{
  struct ubq *q = b->q;
  struct io_uring_sqe *sqe = loop_sqe (&q->loop, ev);
  struct ublk_batch_io *cmd;

  memset (sqe, 0, sizeof *sqe);
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = q->dev->cdev;
  sqe->cmd_op = op;
  sqe->addr = (uintptr_t) buf;
  sqe->len = buf ? (unsigned) elem_bytes * nr : 0;
  io_uring_sqe_set_data (sqe, ev);
  cmd = (struct ublk_batch_io *) sqe->cmd;
  cmd->q_id = q->id;
  cmd->flags = flags;
  cmd->nr_elem = nr;
  cmd->elem_bytes = elem_bytes;
  return sqe;
}

static void
put_elem (struct ubq_batch *b, struct commit_buf *c, struct ubq_tag *t,
          int result)
{
  struct batch_elem *e = (struct batch_elem *) (c->elems +
                                                c->n++ * b->elem_bytes);

  e->tag = t->tag;
  e->buf_index = b->q->dev->zc ? ubq_buf_index (t) : 0;
  e->result = result;
  if (b->elem_bytes == sizeof *e)
    e->buf_addr = (uintptr_t) t->buf;
}

static void
maybe_end (struct ubq_batch *b)
{
  if (b->fetch_ended && !b->fetching && b->in_service == 0 &&
      !b->bufs[0].inflight && !b->bufs[1].inflight &&
      b->bufs[b->cur].n == 0)
    ubq_end (b->q);
}

static void fetched (struct loop_event *ev, int res, uint32_t cqe_flags);

static void
fetch (struct ubq_batch *b)
{
  struct io_uring_sqe *sqe;

  if (!b->page_in_ring) {
    io_uring_buf_ring_add (b->br, b->tags, b->page, 0,
                           io_uring_buf_ring_mask (1), 0);
    io_uring_buf_ring_advance (b->br, 1);
    b->page_in_ring = true;
    b->tags_off = 0;
  }
  sqe = batch_sqe (b, &b->fetch_ev, UBLK_U_IO_FETCH_IO_CMDS, NULL,
                   b->page / 2, 2, 0);
  sqe->flags |= IOSQE_BUFFER_SELECT;
  sqe->buf_group = 0;
  sqe->uring_cmd_flags = IORING_URING_CMD_MULTISHOT;
  b->fetching = true;
}

static void
fetched (struct loop_event *ev, int res, uint32_t cqe_flags)
{
  struct ubq_batch *b = container_of (ev, struct ubq_batch, fetch_ev);
  struct ubq *q = b->q;

  if (!(cqe_flags & IORING_CQE_F_MORE))
    b->fetching = false;
  if (res < 0 && res != -ENOBUFS) {
    /* The device is stopping (or quiescing): no more requests. */
    if (res != UBLK_IO_RES_ABORT)
      log_error ("ublk q%u: FETCH_IO_CMDS: %s", q->id, strerror (-res));
    b->fetch_ended = true;
    maybe_end (b);
    return;
  }
  if (res == -ENOBUFS)
    b->page_in_ring = false;
  else {
    size_t end = b->tags_off + (size_t) res;
    for (size_t off = b->tags_off; off + 2 <= end && off < b->page; off += 2) {
      uint16_t tag = b->tags[off / 2];
      if (tag >= q->pool.nr_slots) {
        log_error ("ublk q%u: FETCH_IO_CMDS gave tag %u of %zu", q->id, tag,
                   q->pool.nr_slots);
        continue;
      }
      b->in_service++;
      ubq_tag_serve (q->tags[tag]);
    }
    b->tags_off = end;
    if (!(cqe_flags & IORING_CQE_F_BUF_MORE))
      b->page_in_ring = false;      /* used up: the kernel let go of it */
  }
  if (!b->fetching && !b->fetch_ended)
    fetch (b);
}

static void
commit_now (struct loop_work *w)
{
  struct ubq_batch *b = container_of (w, struct ubq_batch, commit_work);
  struct commit_buf *c = &b->bufs[b->cur], *next = &b->bufs[1 - b->cur];

  if (c->n == 0 || next->inflight)
    return;                     /* next's completion brings us back */
  batch_sqe (b, &c->ev, UBLK_U_IO_COMMIT_IO_CMDS, c->elems, c->n,
             b->elem_bytes, b->flags);
  c->inflight = true;
  b->cur = 1 - b->cur;
  next->n = 0;
}

static void
committed (struct loop_event *ev, int res, uint32_t cqe_flags)
{
  struct commit_buf *c = container_of (ev, struct commit_buf, ev);
  struct ubq_batch *b = c->b;
  struct commit_buf *cur = &b->bufs[b->cur];
  unsigned done = res < 0 ? 0 : (unsigned) res / b->elem_bytes;

  c->inflight = false;
  if (res < 0 && res != -ENODEV)
    log_ratelimited ("ublk q%u: COMMIT_IO_CMDS of %u: %s", b->q->id, c->n,
                     strerror (-res));
  else if (res >= 0 && done < c->n) {
    /* Partial: the rest again, with what has gathered meanwhile. */
    memcpy (cur->elems + cur->n * b->elem_bytes,
            c->elems + done * b->elem_bytes, (c->n - done) * b->elem_bytes);
    cur->n += c->n - done;
  }
  c->n = 0;
  loop_defer (&b->q->loop, &b->commit_work);
  maybe_end (b);
}

void
ubq_batch_commit (struct ubq_tag *t, int result)
{
  struct ubq_batch *b = t->q->batch;

  put_elem (b, &b->bufs[b->cur], t, result);
  b->in_service--;
  loop_defer (&t->q->loop, &b->commit_work);
}

static void
prepared (struct loop_event *ev, int res, uint32_t cqe_flags)
{
  struct commit_buf *c = container_of (ev, struct commit_buf, ev);
  struct ubq_batch *b = c->b;

  c->inflight = false;
  c->n = 0;
  c->ev.fn = committed;
  if (res < 0) {
    log_error ("ublk q%u: PREP_IO_CMDS: %s", b->q->id, strerror (-res));
    b->fetch_ended = true;
    if (b->fetching)
      return;                   /* its end (abort) ends the queue */
    maybe_end (b);
  }
}

int
ubq_batch_init (struct ubq *q)
{
  size_t n = q->pool.nr_slots;
  struct ubq_batch *b = calloc (1, sizeof *b);
  size_t page = sysconf (_SC_PAGESIZE);

  if (!b)
    fatal ("calloc: %m");
  q->batch = b;
  b->q = q;
  b->elem_bytes = q->dev->zc ? 8 : sizeof (struct batch_elem);
  b->flags = q->dev->zc ? UBLK_BATCH_F_AUTO_BUF_REG_FALLBACK
                        : UBLK_BATCH_F_HAS_BUF_ADDR;
  b->page = (n * 2 + page - 1) & ~(page - 1);
  b->bufs_len = (n * b->elem_bytes + page - 1) & ~(page - 1);
  b->br = resident_map (page);
  b->tags = resident_map (b->page);
  b->bufs[0].elems = resident_map (b->bufs_len);
  b->bufs[1].elems = resident_map (b->bufs_len);
  if (!b->br || !b->tags || !b->bufs[0].elems || !b->bufs[1].elems) {
    log_error ("ublk q%u: batch buffers: %m", q->id);
    return -1;
  }
  for (int i = 0; i < 2; i++) {
    b->bufs[i].b = b;
    b->bufs[i].ev.fn = committed;
  }
  b->fetch_ev.fn = fetched;
  b->commit_work.fn = commit_now;
  return 0;
}

int
ubq_batch_start (struct ubq *q)
{
  struct ubq_batch *b = q->batch;
  struct io_uring_buf_reg reg = {
    .ring_addr = (uintptr_t) b->br, .ring_entries = 1, .bgid = 0,
    .pad = IOU_PBUF_RING_INC,   /* the flags field of newer headers */
  };
  struct commit_buf *prep = &b->bufs[0];
  int r;

  /* Only this thread may register on its single-issuer ring. */
  io_uring_buf_ring_init (b->br);
  r = io_uring_register_buf_ring (&q->loop.ring, &reg, 0);
  if (r < 0) {
    log_error ("ublk q%u: a provided buffer ring for FETCH_IO_CMDS: %s",
               q->id, strerror (-r));
    return -1;
  }
  for (size_t i = 0; i < q->pool.nr_slots; i++)
    put_elem (b, prep, q->tags[i], 0);
  prep->ev.fn = prepared;
  batch_sqe (b, &prep->ev, UBLK_U_IO_PREP_IO_CMDS, prep->elems, prep->n,
             b->elem_bytes, b->flags);
  prep->inflight = true;
  b->cur = 1;
  fetch (b);
  return 0;
}

void
ubq_batch_free (struct ubq *q)
{
  struct ubq_batch *b = q->batch;
  size_t page = sysconf (_SC_PAGESIZE);

  if (!b)
    return;
  if (b->br)
    munmap (b->br, page);
  if (b->tags)
    munmap (b->tags, b->page);
  for (int i = 0; i < 2; i++)
    if (b->bufs[i].elems)
      munmap (b->bufs[i].elems, b->bufs_len);
  free (b);
  q->batch = NULL;
}
