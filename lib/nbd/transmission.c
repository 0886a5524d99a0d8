/* The transmission phase: one request slot per request, one function per
 * command, replies queued on the connection.
 *
 * Each request is checked once (flags for its command, then
 * backend_check) before its backend is called.  A request larger than the
 * slot's buffer is streamed through it in pieces: a write receives and
 * writes one piece at a time; a read reads and sends one piece at a time.
 * With structured replies every read piece is a chunk of its own, so an
 * error after some data went out is still reported cleanly; with simple
 * replies (or DF) such an error can only close the connection.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <string.h>

#include "internal.h"
#include "log.h"
#include "protocol.h"
#include "wire.h"

/* A rejected write's payload is read and discarded up to this size, so the
 * connection stays usable; a larger one closes the connection. */
#define WRITE_DRAIN_MAX (64u << 20)

static void start_read_piece (struct req *r);
static void start_write_piece (struct req *r);

uint32_t
nbdp_errno (int err)
{
  switch (-err) {
  case 0: return 0;
  case EPERM: case EROFS: return NBDP_EPERM;
  case ENOMEM: return NBDP_ENOMEM;
  case EINVAL: return NBDP_EINVAL;
  case ENOSPC: case EFBIG: case EDQUOT: return NBDP_ENOSPC;
  case EOVERFLOW: return NBDP_EOVERFLOW;
  case ENOTSUP: return NBDP_ENOTSUP;
  case ESHUTDOWN: return NBDP_ESHUTDOWN;
  default: return NBDP_EIO;
  }
}

uint16_t
transmission_flags (const struct backend *b, bool structured)
{
  uint16_t f = NBDP_FLAG_HAS_FLAGS;

  if (b->readonly)
    f |= NBDP_FLAG_READ_ONLY;
  if (b->caps & BACKEND_CAN_FLUSH)
    f |= NBDP_FLAG_SEND_FLUSH;
  if (b->caps & BACKEND_CAN_FUA)
    f |= NBDP_FLAG_SEND_FUA;
  if (b->caps & BACKEND_IS_ROTATIONAL)
    f |= NBDP_FLAG_ROTATIONAL;
  if (b->caps & BACKEND_CAN_TRIM)
    f |= NBDP_FLAG_SEND_TRIM;
  if (b->caps & BACKEND_CAN_ZERO)
    f |= NBDP_FLAG_SEND_WRITE_ZEROES;
  if ((b->caps & BACKEND_CAN_FAST_ZERO) && (b->caps & BACKEND_CAN_ZERO))
    f |= NBDP_FLAG_SEND_FAST_ZERO;
  if (b->caps & BACKEND_CAN_CACHE)
    f |= NBDP_FLAG_SEND_CACHE;
  if (b->caps & BACKEND_CAN_MULTI_CONN)
    f |= NBDP_FLAG_CAN_MULTI_CONN;
  if (structured)
    f |= NBDP_FLAG_SEND_DF;
  return f;
}

/* Give a mapped piece's storage back to the backend. */
static void
unmap_piece (struct req *r)
{
  if (r->niov) {
    backend_unmap (r->c->b, r->iov, r->niov);
    r->niov = 0;
  }
}

void
req_release (struct req *r)
{
  struct conn *c = r->c;
  struct nbd_loop *nl = c->nl;

  unmap_piece (r);
  request_pool_put (&nl->pool, r);
  c->inflight--;
  /* Backpressure ends: let the first waiting connection take the slot. */
  while (nl->wait_head) {
    struct conn *w = nl->wait_head;
    nl->wait_head = w->wait_next;
    w->waiting_slot = false;
    if (w->dead || w->read_done) {
      conn_maybe_close (w);
      continue;
    }
    conn_schedule_input (w);
    break;
  }
  conn_maybe_close (c);
}

/* Reply headers. */

static void
simple_header (struct req *r, int err)
{
  put32 (r->hdr, NBDP_SIMPLE_REPLY_MAGIC);
  put32 (r->hdr + 4, nbdp_errno (err));
  put64 (r->hdr + 8, r->cookie);
  r->hdr_len = NBDP_SIMPLE_REPLY_SIZE;
}

static unsigned char *
chunk_header (struct req *r, uint16_t flags, uint16_t type, uint32_t len)
{
  put32 (r->hdr, NBDP_STRUCTURED_REPLY_MAGIC);
  put16 (r->hdr + 4, flags);
  put16 (r->hdr + 6, type);
  put64 (r->hdr + 8, r->cookie);
  put32 (r->hdr + 16, len);
  r->hdr_len = NBDP_STRUCTURED_HDR_SIZE;
  return r->hdr + NBDP_STRUCTURED_HDR_SIZE;
}

/* The final reply of a request without data: success or error. */
static void
reply_final (struct req *r, int err)
{
  r->data_len = 0;
  r->final = true;
  if (!r->c->structured)
    simple_header (r, err);
  else if (err == 0)
    chunk_header (r, NBDP_REPLY_FLAG_DONE, NBDP_REPLY_TYPE_NONE, 0);
  else {
    unsigned char *p = chunk_header (r, NBDP_REPLY_FLAG_DONE,
                                     NBDP_REPLY_TYPE_ERROR, 6);
    put32 (p, nbdp_errno (err));
    put16 (p + 4, 0);
    r->hdr_len += 6;
  }
  if (err)
    log_ddebug ("%s: request type %u failed: %s", r->c->peer, r->type,
                strerror (-err));
  conn_queue_reply (r->c, r);
}

/* Backend calls: asynchronous when the backend can, else inline. */

static void
call_backend (struct req *r, enum backend_op op, void *buf, uint32_t count,
              uint64_t offset, void (*done) (struct backend_io *, int))
{
  r->io.op = op;
  r->io.flags = r->bflags;
  r->io.buf = buf;
  r->io.count = count;
  r->io.offset = offset;
  r->io.done = done;
  backend_start (r->c->b, &r->c->nl->loop, &r->io);
}

static void
simple_done (struct backend_io *io, int res)
{
  reply_final (container_of (io, struct req, io), res);
}

/* READ. */

static void
read_piece_done (struct backend_io *io, int res)
{
  struct req *r = container_of (io, struct req, io);
  struct conn *c = r->c;
  bool df = r->nflags & NBDP_CMD_FLAG_DF;
  bool last = r->pos + r->piece == r->count;

  if (res < 0) {
    if (r->pos == 0 || (c->structured && !df)) {
      reply_final (r, res);
      return;
    }
    log_ratelimited ("%s: read failed mid-reply (%s): closing",
                     c->peer, strerror (-res));
    req_release (r);
    conn_fail (c);
    return;
  }
  r->hdr_len = 0;
  r->data_len = r->piece;
  r->final = last;
  if (c->structured && !df) {
    unsigned char *p = chunk_header (r, last ? NBDP_REPLY_FLAG_DONE : 0,
                                     NBDP_REPLY_TYPE_OFFSET_DATA,
                                     8 + r->piece);
    put64 (p, r->offset + r->pos);
    r->hdr_len += 8;
  }
  else if (r->pos == 0 && c->structured) {
    unsigned char *p = chunk_header (r, NBDP_REPLY_FLAG_DONE,
                                     NBDP_REPLY_TYPE_OFFSET_DATA,
                                     8 + r->count);
    put64 (p, r->offset);
    r->hdr_len += 8;
  }
  else if (r->pos == 0)
    simple_header (r, 0);
  conn_queue_reply (c, r);
}

static void
start_read_piece (struct req *r)
{
  int n;
  uint32_t left = r->count - r->pos;
  uint32_t bufsz = r->c->nl->pool.buf_size;

  r->piece = left < bufsz ? left : bufsz;
  /* Straight from the backend's storage when it allows: one copy less. */
  n = backend_map (r->c->b, BACKEND_OP_READ, r->piece, r->offset + r->pos,
                   r->iov, REQ_IOV);
  if (n > 0) {
    r->niov = n;
    read_piece_done (&r->io, 0);
    return;
  }
  call_backend (r, BACKEND_OP_READ, r->buf, r->piece, r->offset + r->pos,
                read_piece_done);
}

/* A queued piece has gone out. */
void
transmission_piece_sent (struct req *r)
{
  if (r->final) {
    req_release (r);
    return;
  }
  unmap_piece (r);
  r->pos += r->piece;
  start_read_piece (r);
}

/* WRITE: receive a piece, write it, repeat. */

static void
write_finish_piece (struct req *r)
{
  r->pos += r->piece;
  if (r->pos < r->count)
    start_write_piece (r);
  else
    reply_final (r, r->err);
}

static void
write_piece_done (struct backend_io *io, int res)
{
  struct req *r = container_of (io, struct req, io);

  if (res < 0 && r->err == 0) {
    r->err = res;
    r->discard = true;          /* drain the rest of the payload */
  }
  write_finish_piece (r);
}

static void
write_piece_ready (struct req *r)
{
  struct conn *c = r->c;

  if (r->pos + r->piece == r->count) {
    /* The whole payload is in: the next request may be parsed now. */
    c->rx_req = NULL;
    conn_schedule_input (c);
  }
  if (r->niov) {
    unmap_piece (r);          /* the data is in place: nothing to call */
    write_finish_piece (r);
  }
  else if (r->discard)
    write_finish_piece (r);
  else
    call_backend (r, BACKEND_OP_WRITE, r->buf, r->piece, r->offset + r->pos,
                  write_piece_done);
}

static void
start_write_piece (struct req *r)
{
  struct conn *c = r->c;
  uint32_t left = r->count - r->pos, n;
  uint32_t bufsz = c->nl->pool.buf_size;

  r->piece = left < bufsz ? left : bufsz;
  if (!r->discard) {
    /* Straight into the backend's storage when it allows. */
    int m = backend_map (c->b, BACKEND_OP_WRITE, r->piece,
                         r->offset + r->pos, r->iov, REQ_IOV);
    if (m > 0)
      r->niov = m;
    else if (m < 0) {
      r->err = m;
      r->discard = true;
    }
  }
  n = conn_avail (c) < r->piece ? conn_avail (c) : r->piece;
  if (r->niov) {
    struct iovec dst[REQ_IOV];
    unsigned nd = iov_tail (dst, REQ_IOV, r->iov, r->niov, 0);
    const unsigned char *src = c->rbuf + c->rstart;
    for (unsigned i = 0, done = 0; i < nd && done < n; i++) {
      uint32_t k = n - done < dst[i].iov_len ? n - done : dst[i].iov_len;
      memcpy (dst[i].iov_base, src + done, k);
      done += k;
    }
  }
  else
    memcpy (r->buf, c->rbuf + c->rstart, n);
  c->rstart += n;
  r->have = 0;
  c->rx_req = r;
  transmission_payload (r, n);
}

void
transmission_payload (struct req *r, int res)
{
  r->have += res;
  if (r->have == r->piece)
    write_piece_ready (r);
  else if (r->niov)
    conn_recv_payload_mapped (r->c, r);
  else
    conn_recv_payload (r->c, (char *) r->buf + r->have, r->piece - r->have);
}

/* BLOCK_STATUS: extents are gathered into the slot buffer and encoded in
 * place (each 8-byte descriptor is written at or before the 24-byte
 * extent it comes from). */
static void
block_status_done (struct backend_io *io, int res)
{
  struct req *r = container_of (io, struct req, io);
  struct backend_extents e = r->ext;
  unsigned char *out = r->buf;

  if (res == 0 && e.n == 0)
    res = -EIO;                 /* a backend bug: say so, don't lie */
  if (res < 0) {
    reply_final (r, res);
    return;
  }
  for (size_t i = 0; i < e.n; i++) {
    struct backend_extent x = e.v[i];
    uint32_t flags = ((x.type & BACKEND_EXTENT_HOLE) ? NBDP_STATE_HOLE : 0) |
                     ((x.type & BACKEND_EXTENT_ZERO) ? NBDP_STATE_ZERO : 0);
    put32 (out + 4 + 8 * i, x.length);
    put32 (out + 8 + 8 * i, flags);
  }
  put32 (out, NBDP_CONTEXT_BASE_ALLOCATION);
  chunk_header (r, NBDP_REPLY_FLAG_DONE, NBDP_REPLY_TYPE_BLOCK_STATUS,
                4 + 8 * e.n);
  r->data_len = 4 + 8 * e.n;
  r->final = true;
  conn_queue_reply (r->c, r);
}

static void
cmd_block_status (struct req *r)
{
  r->ext = (struct backend_extents) {
    .v = r->buf, .max = r->c->nl->pool.buf_size / sizeof (struct backend_extent),
    .start = r->offset, .end = r->offset + r->count,
  };
  r->io.ext = &r->ext;
  call_backend (r, BACKEND_OP_EXTENTS, NULL, r->count, r->offset,
                block_status_done);
}

/* Validation: the flags each command accepts, mapped to backend flags. */
static const struct {
  enum backend_op op;
  uint16_t allowed;
} commands[] = {
  [NBDP_CMD_READ] = { BACKEND_OP_READ, NBDP_CMD_FLAG_DF },
  [NBDP_CMD_WRITE] = { BACKEND_OP_WRITE, NBDP_CMD_FLAG_FUA },
  [NBDP_CMD_DISC] = { 0, 0 },
  [NBDP_CMD_FLUSH] = { BACKEND_OP_FLUSH, 0 },
  [NBDP_CMD_TRIM] = { BACKEND_OP_TRIM, NBDP_CMD_FLAG_FUA },
  [NBDP_CMD_CACHE] = { BACKEND_OP_CACHE, 0 },
  [NBDP_CMD_WRITE_ZEROES] = { BACKEND_OP_ZERO, NBDP_CMD_FLAG_FUA |
                              NBDP_CMD_FLAG_NO_HOLE | NBDP_CMD_FLAG_FAST_ZERO },
  [NBDP_CMD_BLOCK_STATUS] = { BACKEND_OP_EXTENTS, NBDP_CMD_FLAG_REQ_ONE },
};

static int
validate (struct req *r)
{
  struct conn *c = r->c;
  uint16_t f = r->nflags;

  if (r->type >= sizeof commands / sizeof commands[0] ||
      r->type == NBDP_CMD_DISC)
    return -EINVAL;
  if (f & ~commands[r->type].allowed)
    return -EINVAL;
  if ((f & NBDP_CMD_FLAG_DF) && !c->structured)
    return -EINVAL;
  if (r->type == NBDP_CMD_BLOCK_STATUS && !c->meta_base_alloc)
    return -EINVAL;
  r->bflags = ((f & NBDP_CMD_FLAG_FUA) ? BACKEND_FLAG_FUA : 0) |
              ((f & NBDP_CMD_FLAG_REQ_ONE) ? BACKEND_FLAG_REQ_ONE : 0) |
              ((f & NBDP_CMD_FLAG_FAST_ZERO) ? BACKEND_FLAG_FAST : 0);
  if (r->type == NBDP_CMD_WRITE_ZEROES && !(f & NBDP_CMD_FLAG_NO_HOLE))
    r->bflags |= BACKEND_FLAG_MAY_TRIM;
  return backend_check (c->b, commands[r->type].op, r->offset, r->count,
                        r->bflags);
}

static void
start_request (struct req *r)
{
  int err = validate (r);

  if (r->type == NBDP_CMD_WRITE) {
    /* The payload follows whatever we think of the request. */
    r->err = err;
    r->discard = err != 0;
    start_write_piece (r);
    return;
  }
  if (err) {
    reply_final (r, err);
    return;
  }
  switch (r->type) {
  case NBDP_CMD_READ:
    start_read_piece (r);
    break;
  case NBDP_CMD_BLOCK_STATUS:
    cmd_block_status (r);
    break;
  default:
    call_backend (r, commands[r->type].op, NULL, r->count, r->offset,
                  simple_done);
  }
}

int
transmission_step (struct conn *c)
{
  const unsigned char *p = c->rbuf + c->rstart;
  struct nbd_loop *nl = c->nl;
  struct req *r;

  if (conn_avail (c) < NBDP_REQUEST_SIZE)
    return 0;
  if (get32 (p) != NBDP_REQUEST_MAGIC) {
    log_ratelimited ("%s: bad request magic 0x%08x: closing", c->peer,
                     get32 (p));
    conn_fail (c);
    return -1;
  }
  if (get16 (p + 6) == NBDP_CMD_DISC) {
    log_debug ("%s: NBD_CMD_DISC", c->peer);
    c->rstart += NBDP_REQUEST_SIZE;
    conn_stop_reading (c);
    conn_maybe_close (c);
    return -1;
  }
  if (get16 (p + 6) == NBDP_CMD_WRITE && get32 (p + 24) > WRITE_DRAIN_MAX) {
    /* Too large to be valid, too large to skip. */
    log_ratelimited ("%s: write of %u bytes: closing", c->peer,
                     get32 (p + 24));
    conn_fail (c);
    return -1;
  }
  r = request_pool_get (&nl->pool);
  if (!r) {
    /* Backpressure: read nothing more until a slot comes back. */
    c->waiting_slot = true;
    c->wait_next = NULL;
    if (nl->wait_tail && nl->wait_head)
      nl->wait_tail->wait_next = c;
    else
      nl->wait_head = c;
    nl->wait_tail = c;
    return 2;
  }
  r->c = c;
  r->niov = 0;
  r->buf = request_pool_buffer (&nl->pool, r);
  r->nflags = get16 (p + 4);
  r->type = get16 (p + 6);
  r->cookie = get64 (p + 8);
  r->offset = get64 (p + 16);
  r->count = get32 (p + 24);
  c->rstart += NBDP_REQUEST_SIZE;
  c->inflight++;
  log_ddebug ("%s: request type %u flags 0x%x offset %" PRIu64 " count %u",
              c->peer, r->type, r->nflags, r->offset, r->count);
  start_request (r);
  return 1;
}
