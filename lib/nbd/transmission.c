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
 *
 * With extended headers (NBD_OPT_EXTENDED_HEADERS) requests and reply
 * headers are 32 bytes with 64-bit lengths; every reply is a chunk.  A
 * payload travels only with NBD_CMD_FLAG_PAYLOAD_LEN, its length bounded
 * by the advertised maximum; without it the length is an effect length,
 * and TRIM, WRITE_ZEROES, CACHE and BLOCK_STATUS ranges over 4 GiB are
 * run as a loop of backend calls of at most EFFECT_PIECE bytes each.
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
#define WRITE_DRAIN_MAX (2 * BACKEND_MAX_REQUEST)

/* The largest range given to one backend call by an effect-only request
 * (backend counts are 32-bit); a multiple of any block size we allow. */
#define EFFECT_PIECE (1u << 30)

static void start_read_piece (struct req *r);
static unsigned stats_op_of (uint16_t type);
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

/* Give a mapped piece's storage back to the backend.  The mapping is the
 * current piece's (see struct req): this runs before pos or piece move on. */
static void
unmap_piece (struct req *r)
{
  if (r->niov) {
    backend_unmap (r->c->b, r->piece, r->offset + r->pos, r->iov, r->niov);
    r->niov = 0;
  }
}

void
req_release (struct req *r)
{
  struct conn *c = r->c;
  struct nbd_loop *nl = c->nl;

  unmap_piece (r);
  stats_bump (&conn_stats (c)->completed, 1);
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
chunk_header (struct req *r, uint16_t flags, uint16_t type, uint64_t len)
{
  if (r->c->extended) {
    put32 (r->hdr, NBDP_EXTENDED_REPLY_MAGIC);
    put16 (r->hdr + 4, flags);
    put16 (r->hdr + 6, type);
    put64 (r->hdr + 8, r->cookie);
    put64 (r->hdr + 16, r->offset);
    put64 (r->hdr + 24, len);
    r->hdr_len = NBDP_EXTENDED_HDR_SIZE;
    return r->hdr + NBDP_EXTENDED_HDR_SIZE;
  }
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
  if (err) {
    stats_error (conn_stats (r->c), stats_op_of (r->type));
    log_ddebug ("%s: request type %u failed: %s", r->c->peer, r->type,
                strerror (-err));
  }
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

/* Requests without a payload in either direction run as a loop of
 * backend calls of at most EFFECT_PIECE bytes.  A backend that completes
 * inline calls DONE from inside call_backend, so the loop runs here
 * rather than recursing once per piece: DONE calls next_piece. */
static void
pump_pieces (struct req *r, enum backend_op op,
             void (*done) (struct backend_io *, int))
{
  r->pumping = true;
  do {
    uint64_t left = r->count - r->pos;

    r->again = false;
    r->piece = left < EFFECT_PIECE ? left : EFFECT_PIECE;
    call_backend (r, op, NULL, r->piece, r->offset + r->pos, done);
  } while (r->again);
  r->pumping = false;
}

static void
next_piece (struct req *r)
{
  r->pos += r->piece;
  if (r->pumping)
    r->again = true;
  else
    pump_pieces (r, r->io.op, r->io.done);
}

/* FLUSH, TRIM, WRITE_ZEROES, CACHE. */
static void
effect_done (struct backend_io *io, int res)
{
  struct req *r = container_of (io, struct req, io);

  if (res < 0 || r->count - r->pos <= r->piece)
    reply_final (r, res);
  else
    next_piece (r);
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
    stats_error (conn_stats (c), STATS_READ);
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

/* Sparse reads: with structured replies (and no DF) a backend that knows
 * its holes cheaply (backend_cheap_extents: memory, null) is asked before
 * each piece what the rest of the read starts with.  A hole that reads as
 * zeroes goes out as one OFFSET_HOLE chunk, without a read; data is read
 * up to where it ends or the buffer is full.  The file backend is not
 * asked: lseek(SEEK_DATA) can block (inode locks held by writers, network
 * filesystems), the loop thread must not, and a worker round trip per
 * piece would cost more than sending the zeroes. */
static uint32_t
leading_extent (struct req *r, uint32_t len, bool *hole)
{
  uint64_t offset = r->offset + r->pos;
  struct backend_extent v[2];
  struct backend_extents e = {
    .v = v, .max = 2, .start = offset, .end = offset + len,
  };
  struct backend_io io = {
    .op = BACKEND_OP_EXTENTS, .flags = BACKEND_FLAG_REQ_ONE,
    .offset = offset, .count = len,
  };

  *hole = false;
  if (backend_call (r->c->b, &io, &e) < 0 || e.n == 0 ||
      v[0].offset != offset || v[0].length == 0)
    return len;                 /* don't know: read it */
  *hole = (v[0].type & BACKEND_EXTENT_ZERO) != 0;
  return v[0].length < len ? v[0].length : len;
}

static void
queue_hole (struct req *r)
{
  bool last = r->pos + r->piece == r->count;
  unsigned char *p = chunk_header (r, last ? NBDP_REPLY_FLAG_DONE : 0,
                                   NBDP_REPLY_TYPE_OFFSET_HOLE, 12);

  put64 (p, r->offset + r->pos);
  put32 (p + 8, r->piece);
  r->hdr_len += 12;
  r->data_len = 0;
  r->final = last;
  conn_queue_reply (r->c, r);
}

static bool
map_read_piece (struct req *r)
{
  int n = backend_map (r->c->b, BACKEND_OP_READ, r->piece,
                       r->offset + r->pos, r->iov, REQ_IOV);

  if (n <= 0)
    return false;
  r->niov = n;
  read_piece_done (&r->io, 0);
  return true;
}

static void
start_read_piece (struct req *r)
{
  struct conn *c = r->c;
  uint64_t left = r->count - r->pos;
  uint32_t bufsz = c->nl->pool.buf_size;
  bool shrunk = false;

  r->piece = left < bufsz ? left : bufsz;
  /* Straight from the backend's storage when it allows: one copy less.
   * A backend refuses ranges with holes; those go on below. */
  if (map_read_piece (r))
    return;
  if (c->structured && !(r->nflags & NBDP_CMD_FLAG_DF) &&
      backend_cheap_extents (c->b)) {
    bool hole;
    uint32_t n = leading_extent (r, left, &hole);   /* reads are < 4 GiB */
    if (hole) {
      r->piece = n;
      queue_hole (r);
      return;
    }
    if (n < r->piece) {
      r->piece = n;
      shrunk = true;
    }
  }
  if (shrunk && map_read_piece (r))   /* the data before a hole */
    return;
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
  uint64_t left = r->count - r->pos;
  uint32_t bufsz = c->nl->pool.buf_size, n;

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
    /* The payload's start already read: spread it over the mapping (n is
     * at most the piece, which the iovecs cover). */
    const unsigned char *src = c->rbuf + c->rstart;
    for (unsigned i = 0, done = 0; done < n; i++) {
      uint32_t k = n - done < r->iov[i].iov_len ? n - done : r->iov[i].iov_len;
      memcpy (r->iov[i].iov_base, src + done, k);
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

/* BLOCK_STATUS: extents are gathered into the slot buffer, one backend
 * call per EFFECT_PIECE until the range, the buffer or REQ_ONE says stop,
 * and encoded in place: each descriptor (8 bytes, or 16 with extended
 * headers) is written at or before the 24-byte extent it comes from, and
 * the chunk's leading 4 or 8 bytes after the first extent was read. */
static void
encode_extents (struct req *r)
{
  struct backend_extents e = r->ext;
  bool ext = r->c->extended;
  uint32_t size = ext ? 16 : 8, head = ext ? 8 : 4;
  unsigned char *out = r->buf;

  for (size_t i = 0; i < e.n; i++) {
    struct backend_extent x = e.v[i];
    uint32_t flags = ((x.type & BACKEND_EXTENT_HOLE) ? NBDP_STATE_HOLE : 0) |
                     ((x.type & BACKEND_EXTENT_ZERO) ? NBDP_STATE_ZERO : 0);
    unsigned char *d = out + head + size * i;
    if (ext) {
      put64 (d, x.length);
      put32 (d + 8, 0);
      put32 (d + 12, flags);
    }
    else {
      put32 (d, x.length);
      put32 (d + 4, flags);
    }
  }
  put32 (out, NBDP_CONTEXT_BASE_ALLOCATION);
  if (ext)
    put32 (out + 4, e.n);
  r->data_len = head + size * e.n;
  chunk_header (r, NBDP_REPLY_FLAG_DONE,
                ext ? NBDP_REPLY_TYPE_BLOCK_STATUS_EXT
                    : NBDP_REPLY_TYPE_BLOCK_STATUS, r->data_len);
}

static void
block_status_done (struct backend_io *io, int res)
{
  struct req *r = container_of (io, struct req, io);
  struct backend_extents *e = &r->ext;
  uint64_t piece_end = r->offset + r->pos + r->piece;

  if (res == 0 && e->n == 0)
    res = -EIO;                 /* a backend bug: say so, don't lie */
  if (res < 0) {
    reply_final (r, res);
    return;
  }
  if (r->bflags & BACKEND_FLAG_REQ_ONE)
    e->n = 1;
  /* Go on while the answer so far ends exactly where the piece did. */
  if (r->count - r->pos > r->piece && e->n < e->max &&
      e->v[e->n - 1].offset + e->v[e->n - 1].length == piece_end) {
    next_piece (r);
    return;
  }
  encode_extents (r);
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
  pump_pieces (r, BACKEND_OP_EXTENTS, block_status_done);
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

/* The counters' type of an NBD command (stats.h): the backend operation
 * it maps to, the two enums being in the same order. */
_Static_assert ((int) STATS_READ == (int) BACKEND_OP_READ &&
                (int) STATS_WRITE == (int) BACKEND_OP_WRITE &&
                (int) STATS_FLUSH == (int) BACKEND_OP_FLUSH &&
                (int) STATS_TRIM == (int) BACKEND_OP_TRIM &&
                (int) STATS_ZERO == (int) BACKEND_OP_ZERO &&
                (int) STATS_CACHE == (int) BACKEND_OP_CACHE &&
                (int) STATS_BLOCK_STATUS == (int) BACKEND_OP_EXTENTS,
                "stats_op_of relies on STATS_* following BACKEND_OP_*");
static unsigned
stats_op_of (uint16_t type)
{
  return type < sizeof commands / sizeof commands[0] && type != NBDP_CMD_DISC
    ? (unsigned) commands[type].op : STATS_OTHER;
}

/* Does a payload follow this request's header? */
static bool
has_payload (const struct conn *c, uint16_t type, uint16_t flags)
{
  if (c->extended)
    return flags & NBDP_CMD_FLAG_PAYLOAD_LEN;
  return type == NBDP_CMD_WRITE;
}

static int
validate (struct req *r)
{
  struct conn *c = r->c;
  uint16_t f = r->nflags;

  if (r->type >= sizeof commands / sizeof commands[0] ||
      r->type == NBDP_CMD_DISC)
    return -EINVAL;
  if (c->extended && r->type == NBDP_CMD_WRITE) {
    /* A write's length is its payload's: the flag must say so. */
    if (!(f & NBDP_CMD_FLAG_PAYLOAD_LEN))
      return -EINVAL;
    f &= ~NBDP_CMD_FLAG_PAYLOAD_LEN;
  }
  /* With SEND_FUA advertised every command may carry FUA (the spec says
   * the server MUST accept it); it means something to writes only. */
  if ((f & NBDP_CMD_FLAG_FUA) && (c->tflags & NBDP_FLAG_SEND_FUA) &&
      !(commands[r->type].allowed & NBDP_CMD_FLAG_FUA))
    f &= ~NBDP_CMD_FLAG_FUA;
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

  if (has_payload (r->c, r->type, r->nflags)) {
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
    pump_pieces (r, commands[r->type].op, effect_done);
  }
}

/* Requests whose payload is too large to be valid and too large to skip:
 * past the drain limit with compact headers; with extended headers, past
 * the advertised maximum, as the spec asks. */
static bool
payload_too_large (const struct conn *c, uint16_t type, uint16_t flags,
                   uint64_t len)
{
  if (!has_payload (c, type, flags))
    return false;
  return c->extended ? len > c->b->max_block : len > WRITE_DRAIN_MAX;
}

/* A request slot for C, or NULL after putting C on the wait list. */
static struct req *
get_slot (struct conn *c)
{
  struct nbd_loop *nl = c->nl;
  struct req *r = request_pool_get (&nl->pool);

  if (!r) {
    /* Backpressure: read nothing more until a slot comes back. */
    stats_bump (&conn_stats (c)->pool_waits, 1);
    c->waiting_slot = true;
    c->wait_next = NULL;
    if (nl->wait_tail && nl->wait_head)
      nl->wait_tail->wait_next = c;
    else
      nl->wait_head = c;
    nl->wait_tail = c;
  }
  return r;
}

/* See PIPE_WINDOW. */
static void
note_pipelining (struct nbd_loop *nl, bool piped)
{
  nl->win_piped += piped;
  if (++nl->win_reqs < PIPE_WINDOW)
    return;
  bool hold = nl->win_piped * PIPE_SHARE > nl->win_reqs;
  nl->win_reqs = nl->win_piped = 0;
  if (hold == nl->loop.poll_hold || nl->loop.poll_max_ns == 0)
    return;
  nl->loop.poll_hold = hold;
  log_debug (hold ? "clients keep requests in flight: polling held"
                  : "a client waits on each reply: polling resumed");
}

int
transmission_step (struct conn *c)
{
  const unsigned char *p = c->rbuf + c->rstart;
  uint32_t size = c->extended ? NBDP_EXT_REQUEST_SIZE : NBDP_REQUEST_SIZE;
  uint32_t magic = c->extended ? NBDP_EXT_REQUEST_MAGIC : NBDP_REQUEST_MAGIC;
  uint16_t flags, type;
  uint64_t len;
  struct req *r;

  if (conn_avail (c) < size)
    return 0;
  if (get32 (p) != magic) {
    log_ratelimited ("%s: bad request magic 0x%08x (%s headers): closing",
                     c->peer, get32 (p), c->extended ? "extended" : "compact");
    conn_fail (c);
    return -1;
  }
  flags = get16 (p + 4);
  type = get16 (p + 6);
  len = c->extended ? get64 (p + 24) : get32 (p + 24);
  if (type == NBDP_CMD_DISC) {
    log_debug ("%s: NBD_CMD_DISC", c->peer);
    c->rstart += size;
    conn_stop_reading (c);
    conn_maybe_close (c);
    return -1;
  }
  if (payload_too_large (c, type, flags, len)) {
    log_ratelimited ("%s: request type %u with a %" PRIu64 "-byte payload: "
                     "closing", c->peer, type, len);
    conn_fail (c);
    return -1;
  }
  if (len <= SMALL_PAYLOAD && conn_avail (c) < size + len &&
      has_payload (c, type, flags))
    return 0;                   /* gather it: see SMALL_PAYLOAD */
  r = get_slot (c);
  if (!r)
    return 2;
  r->c = c;
  r->niov = 0;
  r->buf = request_pool_buffer (&c->nl->pool, r);
  r->nflags = flags;
  r->type = type;
  r->cookie = get64 (p + 8);
  r->offset = get64 (p + 16);
  r->count = len;
  c->rstart += size;
  note_pipelining (c->nl, c->inflight > 0);
  c->inflight++;
  stats_request (conn_stats (c), stats_op_of (type), len);
  log_ddebug ("%s: request type %u flags 0x%x offset %" PRIu64
              " count %" PRIu64, c->peer, r->type, r->nflags, r->offset,
              r->count);
  start_request (r);
  return 1;
}
