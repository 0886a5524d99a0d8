/* TLS records in userspace, where the kernel cannot carry them: what kTLS
 * does, with GnuTLS's AEAD ciphers and buffers allocated once per
 * connection (GnuTLS's own record layer allocates per record).
 *
 * TLS 1.3 (RFC 8446 5.2): nonce = iv XOR seq; the additional data is the
 * record header; the plaintext ends with the real content type, then
 * zero padding.  TLS 1.2 AES-GCM (RFC 5288): nonce = salt || explicit
 * nonce (we send the sequence number), the explicit nonce leads the
 * record; TLS 1.2 ChaCha20-Poly1305 (RFC 7905): nonce = iv XOR seq.  In
 * 1.2 the additional data is seq || type || version || plaintext length.
 *
 * Receiving: ciphertext arrives in cin with one recv at a time; whole
 * records are opened into `plain`, from which the connection's recv
 * destination is filled; the completion is delivered as recv_ev's (on a
 * deferred work, never from inside the call that asked).  Sending: the
 * iovecs of a send are sealed where they lie (gnutls_aead_cipher_encryptv),
 * up to TLS_TX_BUDGET bytes, into cout and
 * sent with one send; once all of it is out, send_ev completes with the
 * plaintext byte count, as sendmsg's would.
 */
#include <config.h>

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "log.h"
#include "tls-conn.h"
#include "wire.h"

enum { REC_ALERT = 21, REC_HANDSHAKE = 22, REC_DATA = 23 };

static void cin_done (struct loop_event *ev, int res, uint32_t flags);
static void cout_done (struct loop_event *ev, int res, uint32_t flags);
static void rx_deliver_work (struct loop_work *w);

static int
dir_init (struct tls_dir *d, gnutls_session_t s, int read,
          gnutls_cipher_algorithm_t cipher)
{
  gnutls_datum_t mac, iv, key;
  unsigned char seq[8];

  if (gnutls_record_get_state (s, read, &mac, &iv, &key, seq) < 0 ||
      iv.size > sizeof d->iv)
    return -1;
  memcpy (d->iv, iv.data, iv.size);
  d->seq = get64 (seq);
  return gnutls_aead_cipher_init (&d->h, cipher, &key) < 0 ? -1 : 0;
}

int
tls_record_start (struct conn *c)
{
  struct tls_conn *t = c->tls;
  gnutls_cipher_algorithm_t cipher = gnutls_cipher_get (t->s);
  gnutls_protocol_t ver = gnutls_protocol_get_version (t->s);
  size_t max;

  if ((ver != GNUTLS_TLS1_2 && ver != GNUTLS_TLS1_3) ||
      (cipher != GNUTLS_CIPHER_AES_128_GCM &&
       cipher != GNUTLS_CIPHER_AES_256_GCM &&
       cipher != GNUTLS_CIPHER_CHACHA20_POLY1305)) {
    log_ratelimited ("%s: TLS %s with %s: only AES-GCM and "
                     "ChaCha20-Poly1305 records are carried", c->peer,
                     gnutls_protocol_get_name (ver),
                     gnutls_cipher_get_name (cipher));
    return -1;
  }
  t->tls13 = ver == GNUTLS_TLS1_3;
  t->explicit_nonce = !t->tls13 && cipher != GNUTLS_CIPHER_CHACHA20_POLY1305;
  max = gnutls_record_get_max_size (t->s);
  t->max_send = max && max < TLS_MAX_PLAIN ? max : TLS_MAX_PLAIN;
  t->cin = malloc (TLS_CIN_SIZE);
  t->plain = malloc (TLS_MAX_RECORD);
  t->cout = malloc (TLS_COUT_SIZE);
  if (!t->cin || !t->plain || !t->cout) {
    log_ratelimited ("%s: TLS: no memory for the record buffers: closing",
                     c->peer);
    return -1;
  }
  if (dir_init (&t->rd, t->s, 1, cipher) == -1 ||
      dir_init (&t->wr, t->s, 0, cipher) == -1) {
    log_ratelimited ("%s: TLS: cannot take the session's keys: closing",
                     c->peer);
    return -1;
  }
  t->cin_ev.fn = cin_done;
  t->cout_ev.fn = cout_done;
  t->rx_work = (struct loop_work) { .fn = rx_deliver_work };
  return 0;
}

void
tls_record_free (struct tls_conn *t)
{
  if (t->rd.h)
    gnutls_aead_cipher_deinit (t->rd.h);
  if (t->wr.h)
    gnutls_aead_cipher_deinit (t->wr.h);
  t->rd.h = t->wr.h = NULL;
  free (t->cin);
  free (t->plain);
  free (t->cout);
  t->cin = t->plain = t->cout = NULL;
}

static void
make_nonce (const struct tls_conn *t, const struct tls_dir *d,
            unsigned char nonce[12])
{
  if (t->explicit_nonce) {
    memcpy (nonce, d->iv, 4);
    put64 (nonce + 4, d->seq);
    return;
  }
  memcpy (nonce, d->iv, 12);
  for (int i = 0; i < 8; i++)
    nonce[4 + i] ^= (d->seq >> (56 - 8 * i)) & 0xff;
}

/* Seal the LEN bytes of V[0..NV) (room for one more iovec: TLS 1.3's
 * content type goes there) as one record of TYPE at OUT (ROOM bytes),
 * straight from where they lie; returns its size, or 0 on failure. */
static uint32_t
seal (struct tls_conn *t, unsigned type, giovec_t *v, int nv, uint32_t len,
      unsigned char *out, size_t room)
{
  static const unsigned char inner_type[1] = { REC_DATA };
  unsigned char nonce[12], aad[13], tbyte = type;
  uint32_t body = t->explicit_nonce ? 8 : 0;
  size_t clen = room - TLS_HDR - body;
  uint32_t plen = len;
  giovec_t a;

  if (t->tls13) {                /* the inner content type; no padding */
    v[nv++] = (giovec_t) { type == REC_DATA ? (void *) inner_type : &tbyte,
                           1 };
    plen++;
  }
  make_nonce (t, &t->wr, nonce);
  out[0] = t->tls13 ? REC_DATA : type;
  out[1] = 3;
  out[2] = 3;
  put16 (out + 3, body + plen + TLS_TAG);
  if (t->tls13)
    memcpy (aad, out, TLS_HDR);
  else {
    put64 (aad, t->wr.seq);
    aad[8] = type;
    aad[9] = aad[10] = 3;
    put16 (aad + 11, len);
  }
  if (body)
    put64 (out + TLS_HDR, t->wr.seq);
  a = (giovec_t) { aad, t->tls13 ? TLS_HDR : 13 };
  if (gnutls_aead_cipher_encryptv (t->wr.h, nonce, 12, &a, 1, TLS_TAG, v, nv,
                                   out + TLS_HDR + body, &clen) < 0 ||
      clen != plen + TLS_TAG)
    return 0;
  t->wr.seq++;
  return TLS_HDR + body + clen;
}

/* The room a record's opening needs: its plaintext, and in TLS 1.3 the
 * content type and padding after it. */
static uint32_t
opened_size (const struct tls_conn *t, uint32_t len)
{
  uint32_t over = (t->explicit_nonce ? 8 : 0) + TLS_TAG;

  return len > over ? len - over : 0;
}

/* Open the record REC of LEN bytes (whole: the caller checked) into DST,
 * which has room for opened_size; *DLEN is then its data's length.
 * Returns its content type, or -1. */
static int
open_record (struct tls_conn *t, const unsigned char *rec, uint32_t len,
             unsigned char *dst, uint32_t *dlen)
{
  unsigned char nonce[12], aad[13];
  uint32_t body = t->explicit_nonce ? 8 : 0;
  size_t plen = opened_size (t, len);
  int type = rec[0];

  if (len < body + TLS_TAG + (t->tls13 ? 1 : 0))
    return -1;
  if (t->explicit_nonce) {
    memcpy (nonce, t->rd.iv, 4);
    memcpy (nonce + 4, rec + TLS_HDR, 8);
  }
  else
    make_nonce (t, &t->rd, nonce);
  if (t->tls13)
    memcpy (aad, rec, TLS_HDR);
  else {
    put64 (aad, t->rd.seq);
    aad[8] = type;
    aad[9] = aad[10] = 3;
    put16 (aad + 11, len - body - TLS_TAG);
  }
  if (gnutls_aead_cipher_decrypt (t->rd.h, nonce, 12, aad,
                                  t->tls13 ? TLS_HDR : 13, TLS_TAG,
                                  rec + TLS_HDR + body, len - body, dst,
                                  &plen) < 0)
    return -1;
  t->rd.seq++;
  if (t->tls13) {
    while (plen > 0 && dst[plen - 1] == 0)
      plen--;                   /* padding */
    if (plen == 0)
      return -1;
    type = dst[--plen];
  }
  if (plen > TLS_MAX_PLAIN)
    return -1;
  *dlen = plen;
  return type;
}

static void
rx_deliver_work (struct loop_work *w)
{
  struct tls_conn *t = container_of (w, struct tls_conn, rx_work);
  struct conn *c = t->c;

  c->recv_ev.fn (&c->recv_ev, t->rx_res, 0);
}

/* Fill the destination from what we have.  Returns true when the
 * receive is complete (rx_res set). */
static bool
rx_fill (struct conn *c)
{
  struct tls_conn *t = c->tls;

  for (;;) {
    /* Plaintext first. */
    while (t->p_start < t->p_end && t->rx_n > 0) {
      struct iovec *v = &t->rx[0];
      uint32_t n = t->p_end - t->p_start;
      if (n > v->iov_len)
        n = v->iov_len;
      memcpy (v->iov_base, t->plain + t->p_start, n);
      t->p_start += n;
      t->rx_got += n;
      v->iov_base = (char *) v->iov_base + n;
      v->iov_len -= n;
      if (v->iov_len == 0) {
        memmove (t->rx, t->rx + 1, (t->rx_n - 1) * sizeof *t->rx);
        t->rx_n--;
      }
    }
    if (t->rx_n == 0 || t->eof || t->rx_err)
      break;
    /* Then the next whole record. */
    uint32_t avail = t->cin_end - t->cin_start;
    const unsigned char *rec = t->cin + t->cin_start;
    if (avail < TLS_HDR)
      break;
    uint32_t len = get16 (rec + 3);
    if (len > TLS_MAX_RECORD - TLS_HDR || rec[1] != 3) {
      log_ratelimited ("%s: TLS record of %u bytes (version %u.%u): closing",
                       c->peer, len, rec[1], rec[2]);
      t->rx_err = -EPROTO;
      break;
    }
    if (avail < TLS_HDR + len)
      break;
    /* Straight into the destination when it has room (a write's payload,
     * the input buffer), else into plain, taken from by the loop above. */
    uint32_t dlen = 0;
    int type;
    if (t->rx_n > 0 && t->rx[0].iov_len >= opened_size (t, len)) {
      struct iovec *v = &t->rx[0];
      type = open_record (t, rec, len, v->iov_base, &dlen);
      if (type == REC_DATA) {
        t->cin_start += TLS_HDR + len;
        t->rx_got += dlen;
        v->iov_base = (char *) v->iov_base + dlen;
        v->iov_len -= dlen;
        if (v->iov_len == 0) {
          memmove (t->rx, t->rx + 1, (t->rx_n - 1) * sizeof *t->rx);
          t->rx_n--;
        }
        continue;
      }
      if (type >= 0)
        memcpy (t->plain, v->iov_base, dlen);  /* an alert: two bytes */
    }
    else
      type = open_record (t, rec, len, t->plain, &dlen);
    t->cin_start += TLS_HDR + len;
    t->p_start = 0;
    t->p_end = dlen;
    if (type == REC_DATA)
      continue;
    bool close_notify = type == REC_ALERT && t->p_end == 2 &&
                        t->plain[1] == 0;
    t->p_start = t->p_end = 0;
    if (close_notify) {
      t->eof = true;
      break;
    }
    log_ratelimited ("%s: TLS %s: closing", c->peer, type < 0
                     ? "record does not decrypt (bad key or tampering)"
                     : type == REC_ALERT ? "alert from the client"
                     : type == REC_HANDSHAKE
                     ? "post-handshake message (key update) not supported"
                     : "unexpected record type");
    t->rx_err = -EPROTO;
    break;
  }
  /* The rest of a record on its way: wait for it before answering, as a
   * recv of plaintext would have found the bytes together.  (Clients
   * write a record with one send; libnbd writes a request's header and
   * its payload as two records, and the header alone is of no use to the
   * parser.)  Only while the destination has room for it, so that a
   * record never waits for a receive that will not come. */
  if (t->rx_got > 0 && t->rx_n > 0 && !t->rx_err && !t->eof &&
      t->cin_end - t->cin_start >= TLS_HDR)
    return false;
  if (t->rx_got > 0)
    t->rx_res = t->rx_got;
  else if (t->rx_err)
    t->rx_res = t->rx_err;
  else if (t->eof)
    t->rx_res = 0;
  else
    return false;
  return true;
}

static void
rx_complete (struct conn *c)
{
  c->tls->rx_n = 0;
  loop_defer (&c->nl->loop, &c->tls->rx_work);
}

static void
post_cin (struct conn *c)
{
  struct tls_conn *t = c->tls;
  struct io_uring_sqe *sqe;

  if (t->cin_start == t->cin_end)
    t->cin_start = t->cin_end = 0;
  else if (t->cin_start > 0 && TLS_CIN_SIZE - t->cin_end < TLS_MAX_RECORD) {
    memmove (t->cin, t->cin + t->cin_start, t->cin_end - t->cin_start);
    t->cin_end -= t->cin_start;
    t->cin_start = 0;
  }
  sqe = loop_sqe (&c->nl->loop, &t->cin_ev);
  io_uring_prep_recv (sqe, c->fd, t->cin + t->cin_end,
                      TLS_CIN_SIZE - t->cin_end, 0);
  t->rx_busy = true;
}

void
tls_recv (struct conn *c, const struct iovec *iov, unsigned n)
{
  struct tls_conn *t = c->tls;

  t->rx_n = 0;
  t->rx_got = 0;
  for (unsigned i = 0; i < n && i < REQ_IOV; i++)
    if (iov[i].iov_len)
      t->rx[t->rx_n++] = iov[i];
  if (rx_fill (c))
    rx_complete (c);
  else
    post_cin (c);
}

static void
cin_done (struct loop_event *ev, int res, uint32_t flags)
{
  struct tls_conn *t = container_of (ev, struct tls_conn, cin_ev);
  struct conn *c = t->c;

  t->rx_busy = false;
  if (res <= 0) {
    t->rx_res = res;
    rx_complete (c);
    return;
  }
  t->cin_end += res;
  if (rx_fill (c))
    rx_complete (c);
  else
    post_cin (c);
}

/* Seal as much of IOV as the budget allows into cout, record by record,
 * each straight from the reply headers and data it is made of. */
void
tls_send (struct conn *c, const struct iovec *iov, unsigned n)
{
  struct tls_conn *t = c->tls;
  struct io_uring_sqe *sqe;
  giovec_t v[SEND_BATCH + 1];
  unsigned i = 0;
  size_t off = 0;

  t->cout_len = t->cout_off = t->tx_plain = 0;
  while (t->tx_plain < TLS_TX_BUDGET && i < n) {
    uint32_t fill = 0;
    int nv = 0;
    /* One record's plaintext, as iovecs into IOV. */
    while (fill < t->max_send && i < n && nv < SEND_BATCH) {
      size_t take = iov[i].iov_len - off;
      if (take > t->max_send - fill)
        take = t->max_send - fill;
      if (take)
        v[nv++] = (giovec_t) { (char *) iov[i].iov_base + off, take };
      fill += take;
      off += take;
      if (off == iov[i].iov_len) {
        i++;
        off = 0;
      }
    }
    if (fill == 0)
      break;
    uint32_t rec = seal (t, REC_DATA, v, nv, fill, t->cout + t->cout_len,
                         TLS_COUT_SIZE - t->cout_len);
    if (rec == 0) {
      log_ratelimited ("%s: TLS: sealing a record failed: closing", c->peer);
      t->cout_len = 0;
      t->tx_plain = 0;
      break;
    }
    t->cout_len += rec;
    t->tx_plain += fill;
  }
  if (t->cout_len == 0) {
    /* Nothing sealed: fail the send as a socket error would. */
    c->send_ev.fn (&c->send_ev, -EPROTO, 0);
    return;
  }
  sqe = loop_sqe (&c->nl->loop, &t->cout_ev);
  io_uring_prep_send (sqe, c->fd, t->cout, t->cout_len, MSG_NOSIGNAL);
}

static void
cout_done (struct loop_event *ev, int res, uint32_t flags)
{
  struct tls_conn *t = container_of (ev, struct tls_conn, cout_ev);
  struct conn *c = t->c;
  struct io_uring_sqe *sqe;

  if (res <= 0) {
    c->send_ev.fn (&c->send_ev, res ? res : -EPIPE, 0);
    return;
  }
  t->cout_off += res;
  if (t->cout_off < t->cout_len && !c->dead) {
    sqe = loop_sqe (&c->nl->loop, &t->cout_ev);
    io_uring_prep_send (sqe, c->fd, t->cout + t->cout_off,
                        t->cout_len - t->cout_off, MSG_NOSIGNAL);
    return;
  }
  c->send_ev.fn (&c->send_ev, c->dead ? -EPIPE : (int) t->tx_plain, 0);
}

/* Best effort, at close: the connection has nothing else in flight. */
void
tls_record_close_notify (struct conn *c)
{
  struct tls_conn *t = c->tls;
  unsigned char rec[TLS_HDR + 8 + 3 + TLS_TAG];
  unsigned char alert[2] = { 1, 0 };    /* warning, close_notify */
  giovec_t v[2] = { { alert, 2 } };
  uint32_t len;

  if (!t->wr.h)
    return;
  len = seal (t, REC_ALERT, v, 1, 2, rec, sizeof rec);
  if (len)
    (void) send (c->fd, rec, len, MSG_DONTWAIT | MSG_NOSIGNAL);
}
