/* Fixed-newstyle option negotiation.
 *
 * The server speaks first (NBDMAGIC, IHAVEOPT, handshake flags); then each
 * option is read whole into the connection's input buffer, answered into
 * its reply buffer by one function per option, and sent before the next
 * option is read.  Options too large for the buffer are discarded unread
 * and answered NBD_REP_ERR_TOO_BIG, so a client can never make the server
 * buffer more than CONN_RBUF bytes.
 */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "internal.h"
#include "handshake-mask.h"       /* nbdkit compat */
#include "log.h"
#include "protocol.h"
#include "tls.h"
#include "wire.h"

enum { HS_FLAGS, HS_OPT_HEADER, HS_OPT_DATA, HS_OPT_DISCARD, HS_TLS };

/* Options larger than the input buffer, up to this size, are read and
 * thrown away so negotiation can go on; larger ones close the connection. */
#define OPT_DISCARD_MAX (1u << 20)

/* nbdkit compat: --mask-handshake.  Without FIXED_NEWSTYLE we are a plain
 * newstyle server (only NBD_OPT_EXPORT_NAME); without NO_ZEROES its reply
 * always has the 124 zeros.  A client may not ask for a flag not offered. */
static uint16_t offered = NBDP_FLAG_FIXED_NEWSTYLE | NBDP_FLAG_NO_ZEROES;

void
nbd_handshake_mask (unsigned mask)
{
  offered = (NBDP_FLAG_FIXED_NEWSTYLE | NBDP_FLAG_NO_ZEROES) & mask;
}

void
handshake_start (struct conn *c)
{
  put64 (c->tbuf, NBDP_MAGIC);
  put64 (c->tbuf + 8, NBDP_IHAVEOPT);
  put16 (c->tbuf + 16, offered);
  c->tlen = 18;
  c->hs_state = HS_FLAGS;
  conn_send_tbuf (c);
}

static void
put_reply_header (unsigned char *p, uint32_t opt, uint32_t type, uint32_t len)
{
  put64 (p, NBDP_REP_MAGIC);
  put32 (p + 8, opt);
  put32 (p + 12, type);
  put32 (p + 16, len);
}

/* Append an option reply of type TYPE with LEN bytes of DATA (may be NULL
 * when the caller fills them in afterwards).  Returns the data's address,
 * or NULL (and the connection closes after what fits) if it would not fit:
 * callers then write nothing. */
static unsigned char *
reply (struct conn *c, uint32_t type, const void *data, uint32_t len)
{
  unsigned char *p = c->tbuf + c->tlen;

  if (c->tlen + 20 + len > CONN_TBUF) {
    /* Replies are bounded by export names and descriptions, which the
     * configuration limits; this is a bug if it ever happens. */
    log_ratelimited ("%s: option reply too large", c->peer);
    c->after_reply_close = true;
    return NULL;
  }
  put_reply_header (p, c->opt, type, len);
  if (data)
    memcpy (p + 20, data, len);
  c->tlen += 20 + len;
  return p + 20;
}

static void
reply_error (struct conn *c, uint32_t type, const char *why)
{
  log_debug ("%s: option %u refused: %s", c->peer, c->opt, why);
  reply (c, type, why, strlen (why));
}

static void
opt_export_name (struct conn *c, const unsigned char *data)
{
  const struct export *e = server_find_export ((const char *) data, c->optlen);
  const struct backend *b;
  unsigned char *p = c->tbuf;

  if (c->extended) {
    /* The spec forbids it with extended headers, and it has no error. */
    log_ratelimited ("%s: NBD_OPT_EXPORT_NAME after extended headers: "
                     "closing", c->peer);
    c->dead = true;
    return;
  }
  if (!e) {
    /* This option has no error reply: all we can do is hang up. */
    log_ratelimited ("%s: NBD_OPT_EXPORT_NAME: unknown export", c->peer);
    c->dead = true;
    return;
  }
  b = conn_backend (c, e, (const char *) data, c->optlen);
  if (!b) {
    c->dead = !c->hs_paused;    /* refused: hang up, as for no export */
    return;
  }
  c->exp = e;
  c->b = b;
  c->tflags = transmission_flags (b, false);
  c->structured = false;
  put64 (p, b->size);
  put16 (p + 8, c->tflags);
  c->tlen = 10;
  if (!(c->cflags & NBDP_FLAG_C_NO_ZEROES)) {
    memset (p + 10, 0, 124);
    c->tlen += 124;
  }
  c->after_reply_go = true;
}

/* An NBD_REP_SERVER reply's data at P: name length, name, description
 * (none: NULL).  Returns its length. */
static uint32_t
put_server (unsigned char *p, const char *name, const char *desc)
{
  uint32_t nlen = strlen (name), dlen = desc ? strlen (desc) : 0;

  if (p) {
    put32 (p, nlen);
    memcpy (p + 4, name, nlen);
    memcpy (p + 4 + nlen, desc ? desc : "", dlen);
  }
  return 4 + nlen + dlen;
}

/* One of the default export's backend's own exports, from a worker while
 * the connection waits (conn_list_exports): appended after the ones
 * before it, up to list_room, touching nothing else of the connection. */
static int
list_add (struct backend_conn *bc, const char *name, const char *desc)
{
  struct conn *c = container_of (bc, struct conn, bconn);
  uint32_t len = put_server (NULL, name, desc);
  unsigned char *p = c->tbuf + c->list_len;

  if (c->list_len + 20 + len > c->list_room)
    return -E2BIG;
  put_reply_header (p, NBDP_OPT_LIST, NBDP_REP_SERVER, len);
  put_server (p + 20, name, desc);
  c->list_len += 20 + len;
  return 0;
}

static void
opt_list (struct conn *c, const unsigned char *data)
{
  uint32_t room = CONN_TBUF - 20;       /* the ACK's */
  int r;

  if (c->optlen) {
    reply_error (c, NBDP_REP_ERR_INVALID, "NBD_OPT_LIST takes no data");
    return;
  }
  for (size_t i = 1; i < server_nr_exports; i++) {
    uint32_t len = 20 + put_server (NULL, server_exports[i].name,
                                    server_exports[i].description);
    room = room > len ? room - len : 0;
  }
  r = conn_list_exports (c, room, list_add);
  if (c->hs_paused)
    return;
  if (r < 0) {
    log_ratelimited ("%s: NBD_OPT_LIST: %s", c->peer, r == -E2BIG
                     ? "the backend's exports do not fit in a reply buffer"
                     : "the backend failed to list its exports");
    reply_error (c, r == -E2BIG ? NBDP_REP_ERR_TOO_BIG : NBDP_REP_ERR_PLATFORM,
                 r == -E2BIG ? "too many exports" : "cannot list exports");
    return;
  }
  /* Listed by its backend, the default export stands for those names. */
  for (size_t i = r; i < server_nr_exports; i++) {
    const struct export *e = &server_exports[i];
    put_server (reply (c, NBDP_REP_SERVER, NULL,
                       put_server (NULL, e->name, e->description)),
                e->name, e->description);
  }
  reply (c, NBDP_REP_ACK, NULL, 0);
}

static void
info_reply (struct conn *c, uint16_t type, const void *data, uint32_t len)
{
  unsigned char *p = reply (c, NBDP_REP_INFO, NULL, 2 + len);

  if (!p)
    return;
  put16 (p, type);
  memcpy (p + 2, data, len);
}

static void
send_infos (struct conn *c, const struct export *e, const struct backend *b,
            const unsigned char *reqs, uint16_t nreq)
{
  unsigned char buf[12];
  bool name = false, desc = false;

  for (uint16_t i = 0; i < nreq; i++) {
    uint16_t t = get16 (reqs + 2 * i);
    name |= t == NBDP_INFO_NAME;
    desc |= t == NBDP_INFO_DESCRIPTION;
  }
  put64 (buf, b->size);
  put16 (buf + 8, transmission_flags (b, c->structured));
  info_reply (c, NBDP_INFO_EXPORT, buf, 10);
  /* nbdkit compat: a backend that knows the connection's canonical name
   * (an nbdkit plugin's default_export for "") and description says. */
  const char *cname = b->ops->conn_name ? b->ops->conn_name (b->h) : NULL;
  const char *cdesc = b->ops->conn_description
    ? b->ops->conn_description (b->h) : NULL;
  if (name && cname)
    info_reply (c, NBDP_INFO_NAME, cname, strlen (cname));
  /* A backend with names of its own was connected under the client's. */
  else if (name && e->backend->ops->list_exports && c->name[0])
    info_reply (c, NBDP_INFO_NAME, c->name, strlen (c->name));
  else if (name)
    info_reply (c, NBDP_INFO_NAME, e->name, strlen (e->name));
  if (desc && cdesc)
    info_reply (c, NBDP_INFO_DESCRIPTION, cdesc, strlen (cdesc));
  else if (desc && e->description)
    info_reply (c, NBDP_INFO_DESCRIPTION, e->description,
                strlen (e->description));
  put32 (buf, b->min_block);
  put32 (buf + 4, b->pref_block);
  put32 (buf + 8, b->max_block);
  info_reply (c, NBDP_INFO_BLOCK_SIZE, buf, 12);
}

/* NBD_OPT_INFO and NBD_OPT_GO: name length, name, request count, requests. */
static void
opt_info_go (struct conn *c, const unsigned char *data)
{
  const struct export *e;
  const struct backend *b;
  uint32_t nlen;
  uint16_t nreq;

  if (c->optlen < 6 || (nlen = get32 (data)) > c->optlen - 6 ||
      (nreq = get16 (data + 4 + nlen), c->optlen != 6 + nlen + 2u * nreq)) {
    reply_error (c, NBDP_REP_ERR_INVALID, "malformed NBD_OPT_INFO/GO");
    return;
  }
  e = server_find_export ((const char *) data + 4, nlen);
  if (!e) {
    reply_error (c, NBDP_REP_ERR_UNKNOWN, "unknown export");
    return;
  }
  b = conn_backend (c, e, (const char *) data + 4, nlen);
  if (!b) {
    if (!c->hs_paused)
      reply_error (c, NBDP_REP_ERR_UNKNOWN, "the backend refused the "
                   "connection");
    return;
  }
  send_infos (c, e, b, data + 6 + nlen, nreq);
  reply (c, NBDP_REP_ACK, NULL, 0);
  if (c->opt == NBDP_OPT_GO) {
    c->exp = e;
    c->b = b;
    c->tflags = transmission_flags (b, c->structured);
    if (c->meta_export != e)
      c->meta_base_alloc = false;
    c->after_reply_go = true;
  }
}

/* NBD_OPT_STRUCTURED_REPLY, and NBD_OPT_EXTENDED_HEADERS (32-byte
 * requests and replies with 64-bit lengths from GO on), which brings
 * structured replies with it: asking for structured replies afterwards is
 * answered as the spec says, with NBD_REP_ERR_EXT_HEADER_REQD. */
static void
opt_reply_style (struct conn *c, const unsigned char *data)
{
  bool ext = c->opt == NBDP_OPT_EXTENDED_HEADERS;

  if (c->optlen)
    reply_error (c, NBDP_REP_ERR_INVALID, "option takes no data");
  else if (c->extended && !ext)
    reply_error (c, NBDP_REP_ERR_EXT_HEADER_REQD,
                 "extended headers already negotiated");
  else if (c->extended)
    reply_error (c, NBDP_REP_ERR_INVALID, "extended headers already negotiated");
  else {
    c->structured = true;
    c->extended = ext;
    reply (c, NBDP_REP_ACK, NULL, 0);
  }
}

static bool
meta_query_matches (const unsigned char *q, uint32_t len, bool list)
{
  static const char base_alloc[] = "base:allocation";

  if (len == sizeof base_alloc - 1 && memcmp (q, base_alloc, len) == 0)
    return true;
  return list && len == 5 && memcmp (q, "base:", 5) == 0;
}

static void
meta_reply (struct conn *c)
{
  static const char name[] = "base:allocation";
  unsigned char *p = reply (c, NBDP_REP_META_CONTEXT, NULL, 4 + sizeof name - 1);

  if (!p)
    return;
  put32 (p, NBDP_CONTEXT_BASE_ALLOCATION);
  memcpy (p + 4, name, sizeof name - 1);
}

/* LIST/SET_META_CONTEXT: export name length and name, query count, then
 * each query as length and string. */
static void
opt_meta_context (struct conn *c, const unsigned char *data)
{
  bool list = c->opt == NBDP_OPT_LIST_META_CONTEXT, match = false;
  const struct export *e;
  uint32_t nlen, nq, pos;

  if (!c->structured) {
    reply_error (c, NBDP_REP_ERR_INVALID, "structured replies not negotiated");
    return;
  }
  if (c->optlen < 8 || (nlen = get32 (data)) > c->optlen - 8) {
    reply_error (c, NBDP_REP_ERR_INVALID, "malformed meta context option");
    return;
  }
  nq = get32 (data + 4 + nlen);
  pos = 8 + nlen;
  for (uint32_t i = 0; i < nq; i++) {
    uint32_t qlen;
    if (c->optlen - pos < 4 || (qlen = get32 (data + pos)) > c->optlen - pos - 4) {
      reply_error (c, NBDP_REP_ERR_INVALID, "malformed meta context query");
      return;
    }
    match |= meta_query_matches (data + pos + 4, qlen, list);
    pos += 4 + qlen;
  }
  if (pos != c->optlen) {
    reply_error (c, NBDP_REP_ERR_INVALID, "trailing bytes in meta context option");
    return;
  }
  e = server_find_export ((const char *) data + 4, nlen);
  if (!e) {
    reply_error (c, NBDP_REP_ERR_UNKNOWN, "unknown export");
    return;
  }
  if (list && nq == 0)
    match = true;
  if (match)
    meta_reply (c);
  if (!list) {
    c->meta_base_alloc = match;
    c->meta_export = e;
  }
  reply (c, NBDP_REP_ACK, NULL, 0);
}

static void
opt_abort (struct conn *c, const unsigned char *data)
{
  reply (c, NBDP_REP_ACK, NULL, 0);
  c->after_reply_close = true;
}

/* The reply goes out in plaintext; then the TLS handshake (tls.c) runs
 * in the HS_TLS state, and the negotiation starts over inside TLS. */
static void
opt_starttls (struct conn *c, const unsigned char *data)
{
  if (tls_mode == TLS_OFF)
    reply_error (c, NBDP_REP_ERR_UNSUP, "TLS is not configured");
  else if (c->tls_up)
    reply_error (c, NBDP_REP_ERR_INVALID, "TLS is already negotiated");
  else if (c->optlen)
    reply_error (c, NBDP_REP_ERR_INVALID, "NBD_OPT_STARTTLS takes no data");
  else {
    reply (c, NBDP_REP_ACK, NULL, 0);
    tls_begin (c);
    c->hs_state = HS_TLS;
  }
}

typedef void (*option_fn) (struct conn *c, const unsigned char *data);
static const option_fn options[] = {
  [NBDP_OPT_EXPORT_NAME] = opt_export_name,
  [NBDP_OPT_ABORT] = opt_abort,
  [NBDP_OPT_LIST] = opt_list,
  [NBDP_OPT_STARTTLS] = opt_starttls,
  [NBDP_OPT_INFO] = opt_info_go,
  [NBDP_OPT_GO] = opt_info_go,
  [NBDP_OPT_STRUCTURED_REPLY] = opt_reply_style,
  [NBDP_OPT_LIST_META_CONTEXT] = opt_meta_context,
  [NBDP_OPT_SET_META_CONTEXT] = opt_meta_context,
  [NBDP_OPT_EXTENDED_HEADERS] = opt_reply_style,
};

static void
run_option (struct conn *c, const unsigned char *data)
{
  option_fn fn = c->opt < sizeof options / sizeof options[0]
    ? options[c->opt] : NULL;

  if (tls_mode == TLS_REQUIRE && !c->tls_up &&
      c->opt != NBDP_OPT_STARTTLS && c->opt != NBDP_OPT_ABORT) {
    /* Nothing but STARTTLS before TLS; EXPORT_NAME has no error reply. */
    if (c->opt == NBDP_OPT_EXPORT_NAME) {
      log_ratelimited ("%s: NBD_OPT_EXPORT_NAME without TLS, which is "
                       "required: closing", c->peer);
      c->dead = true;
      return;
    }
    reply_error (c, NBDP_REP_ERR_TLS_REQD, "TLS is required");
  }
  else if (fn)
    fn (c, data);
  else
    reply_error (c, NBDP_REP_ERR_UNSUP, "unknown option");
  if (c->tlen)
    conn_send_tbuf (c);
}

static int
step_flags (struct conn *c, const unsigned char *p)
{
  c->cflags = get32 (p);
  /* Without FIXED_NEWSTYLE, a plain newstyle client (as old nbd-client
   * and qemu were): it may send NBD_OPT_EXPORT_NAME only. */
  if (c->cflags & ~(NBDP_FLAG_C_FIXED_NEWSTYLE | NBDP_FLAG_C_NO_ZEROES)) {
    log_ratelimited ("%s: client flags 0x%x refused (unknown bits)",
                     c->peer, c->cflags);
    return -1;
  }
  if (c->cflags & ~offered) {     /* nbdkit compat: --mask-handshake */
    log_ratelimited ("%s: client flags 0x%x refused (not offered: 0x%x)",
                     c->peer, c->cflags, offered);
    return -1;
  }
  c->hs_state = HS_OPT_HEADER;
  return 4;
}

static int
step_header (struct conn *c, const unsigned char *p)
{
  if (get64 (p) != NBDP_IHAVEOPT) {
    log_ratelimited ("%s: bad option magic", c->peer);
    return -1;
  }
  c->opt = get32 (p + 8);
  c->optlen = get32 (p + 12);
  if (!(c->cflags & NBDP_FLAG_C_FIXED_NEWSTYLE) &&
      c->opt != NBDP_OPT_EXPORT_NAME) {
    /* A plain newstyle server cannot answer other options: it hangs up. */
    log_ratelimited ("%s: option %u from a client without fixed newstyle: "
                     "closing", c->peer, c->opt);
    return -1;
  }
  if (c->optlen <= CONN_RBUF - NBDP_OPT_HEADER_SIZE)
    c->hs_state = HS_OPT_DATA;
  else if (c->opt == NBDP_OPT_EXPORT_NAME || c->optlen > OPT_DISCARD_MAX) {
    /* Draining gigabytes would let one client tie up a loop for nothing. */
    log_ratelimited ("%s: option %u with %u bytes of data: closing",
                     c->peer, c->opt, c->optlen);
    return -1;
  }
  else {
    c->discard = c->optlen;
    c->hs_state = HS_OPT_DISCARD;
  }
  return NBDP_OPT_HEADER_SIZE;
}

int
handshake_step (struct conn *c)
{
  const unsigned char *p = c->rbuf + c->rstart;
  uint32_t avail = conn_avail (c);
  int used;

  switch (c->hs_state) {
  case HS_FLAGS:
    if (avail < 4)
      return 0;
    used = step_flags (c, p);
    break;
  case HS_OPT_HEADER:
    if (avail < NBDP_OPT_HEADER_SIZE)
      return 0;
    used = step_header (c, p);
    break;
  case HS_OPT_DATA:
    if (avail < c->optlen)
      return 0;
    c->rstart += c->optlen;
    c->hs_state = HS_OPT_HEADER;
    run_option (c, p);
    if (c->hs_paused) {
      /* The backend connects on a worker; the option runs again, from
       * the same bytes, when it finished (conn_backend). */
      c->rstart -= c->optlen;
      c->hs_state = HS_OPT_DATA;
      return 2;
    }
    if (c->dead) {
      conn_fail (c);
      return -1;
    }
    return 1;
  case HS_TLS:
    used = tls_handshake_step (c);
    if (used == 2) {
      c->hs_state = HS_OPT_HEADER;
      return 1;
    }
    if (used == -1) {
      conn_fail (c);
      return -1;
    }
    return used;
  default: /* HS_OPT_DISCARD */
    if (avail == 0)
      return 0;
    used = avail < c->discard ? avail : c->discard;
    c->discard -= used;
    if (c->discard == 0) {
      c->hs_state = HS_OPT_HEADER;
      c->rstart += used;
      if (c->opt < sizeof options / sizeof options[0] && options[c->opt])
        reply_error (c, NBDP_REP_ERR_TOO_BIG, "option too large");
      else
        reply_error (c, NBDP_REP_ERR_UNSUP, "unknown option");
      conn_send_tbuf (c);
      return 1;
    }
    break;
  }
  if (used < 0) {
    conn_fail (c);
    return -1;
  }
  c->rstart += used;
  return 1;
}
