/* TLS: credentials, the handshake on the loop's ring, kTLS (see tls.h). */
#include <config.h>

#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>
#include <linux/tls.h>

#include <gnutls/x509.h>

#include "log.h"
#include "tls-conn.h"

#ifndef SOL_TLS
#define SOL_TLS 282
#endif
#ifndef TCP_ULP
#define TCP_ULP 31
#endif

#define TLS_AEADS "-CIPHER-ALL:+AES-128-GCM:+AES-256-GCM:+CHACHA20-POLY1305"

enum tls_mode tls_mode = TLS_OFF;
static struct tls_options opts;
static gnutls_certificate_credentials_t x509_creds;
static gnutls_psk_server_credentials_t psk_creds;
static gnutls_priority_t priority;
/* Said once: the first connection the kernel could not carry, and why. */
static atomic_bool ktls_refusal_logged;

static int
file_exists (const char *dir, const char *name, char *path, size_t len)
{
  snprintf (path, len, "%s/%s", dir, name);
  return access (path, R_OK) == 0;
}

static int
load_x509 (const char *dir)
{
  char ca[4096], cert[4096], key[4096], crl[4096];
  int r;

  if (!file_exists (dir, "server-cert.pem", cert, sizeof cert) ||
      !file_exists (dir, "server-key.pem", key, sizeof key)) {
    log_error ("--tls-certificates %s: server-cert.pem and server-key.pem "
               "are needed there", dir);
    return -1;
  }
  if ((r = gnutls_certificate_allocate_credentials (&x509_creds)) < 0)
    goto err;
  if ((r = gnutls_certificate_set_x509_key_file (x509_creds, cert, key,
                                                 GNUTLS_X509_FMT_PEM)) < 0) {
    log_error ("%s, %s: %s", cert, key, gnutls_strerror (r));
    return -1;
  }
  if (file_exists (dir, "ca-cert.pem", ca, sizeof ca) &&
      (r = gnutls_certificate_set_x509_trust_file (x509_creds, ca,
                                                   GNUTLS_X509_FMT_PEM)) < 0) {
    log_error ("%s: %s", ca, gnutls_strerror (r));
    return -1;
  }
  else if (access (ca, R_OK) != 0 && opts.verify_peer) {
    log_error ("--tls-verify-peer: %s is needed to check client "
               "certificates", ca);
    return -1;
  }
  if (file_exists (dir, "ca-crl.pem", crl, sizeof crl) &&
      (r = gnutls_certificate_set_x509_crl_file (x509_creds, crl,
                                                 GNUTLS_X509_FMT_PEM)) < 0) {
    log_error ("%s: %s", crl, gnutls_strerror (r));
    return -1;
  }
  return 0;
 err:
  log_error ("gnutls: %s", gnutls_strerror (r));
  return -1;
}

int
tls_setup (const struct tls_options *o)
{
  const char *prio, *err_pos = NULL;
  int r;

  opts = *o;
  tls_mode = o->mode;
  if (o->mode == TLS_OFF)
    return 0;
  if (!o->certificates && !o->psk) {
    log_error ("--tls=%s needs --tls-certificates DIR or --tls-psk FILE",
               o->mode == TLS_ON ? "on" : "require");
    return -1;
  }
  if (o->verify_peer && !o->certificates) {
    log_error ("--tls-verify-peer and --tls-allow-dn need "
               "--tls-certificates (client certificates are X.509)");
    return -1;
  }
  if ((r = gnutls_global_init ()) < 0) {
    log_error ("gnutls_global_init: %s", gnutls_strerror (r));
    return -1;
  }
  if (o->certificates && load_x509 (o->certificates) == -1)
    return -1;
  if (o->psk) {
    if (access (o->psk, R_OK) != 0) {
      log_error ("--tls-psk %s: %m", o->psk);
      return -1;
    }
    if ((r = gnutls_psk_allocate_server_credentials (&psk_creds)) < 0 ||
        (r = gnutls_psk_set_server_credentials_file (psk_creds, o->psk)) < 0) {
      log_error ("--tls-psk %s: %s", o->psk, gnutls_strerror (r));
      return -1;
    }
  }
  /* By default only the ciphers whose records we carry, kernel or not. */
  prio = o->priority ? o->priority
    : o->psk ? "NORMAL:" TLS_AEADS ":+ECDHE-PSK:+DHE-PSK:+PSK"
    : "NORMAL:" TLS_AEADS;
  if ((r = gnutls_priority_init (&priority, prio, &err_pos)) < 0) {
    log_error ("--tls-priority '%s': %s%s%s", prio, gnutls_strerror (r),
               err_pos ? " at " : "", err_pos ? err_pos : "");
    return -1;
  }
  log_info ("TLS %s: %s%s%s%s; records by %s", o->mode == TLS_ON
            ? "offered" : "required", o->certificates ? "X.509 from " : "",
            o->certificates ? o->certificates : "",
            o->certificates && o->psk ? ", " : "",
            o->psk ? "PSK" : "", o->ktls
            ? "the kernel (kTLS) where it can, else in userspace"
            : "userspace (--tls-ktls=off)");
  return 0;
}

void
tls_cleanup (void)
{
  if (tls_mode == TLS_OFF)
    return;
  if (priority)
    gnutls_priority_deinit (priority);
  if (x509_creds)
    gnutls_certificate_free_credentials (x509_creds);
  if (psk_creds)
    gnutls_psk_free_server_credentials (psk_creds);
  priority = NULL;
  x509_creds = NULL;
  psk_creds = NULL;
  gnutls_global_deinit ();
  tls_mode = TLS_OFF;
}

/* The handshake's transport: the connection's buffers, never the socket. */
static ssize_t
pull (gnutls_transport_ptr_t p, void *buf, size_t size)
{
  struct conn *c = p;
  uint32_t avail = conn_avail (c);

  if (avail == 0) {
    c->tls->pull_want = size;
    gnutls_transport_set_errno (c->tls->s, EAGAIN);
    return -1;
  }
  if (size > avail)
    size = avail;
  memcpy (buf, c->rbuf + c->rstart, size);
  c->rstart += size;
  return size;
}

static ssize_t
push (gnutls_transport_ptr_t p, const void *buf, size_t size)
{
  struct conn *c = p;
  uint32_t room = CONN_TBUF - c->tlen;

  if (room == 0) {
    gnutls_transport_set_errno (c->tls->s, EAGAIN);
    return -1;
  }
  if (size > room)
    size = room;
  memcpy (c->tbuf + c->tlen, buf, size);
  c->tlen += size;
  return size;
}

void
tls_begin (struct conn *c)
{
  uint32_t stale = conn_avail (c);

  /* Bytes behind STARTTLS came before the handshake: in plaintext, from
   * anyone on the path.  None of it is acted on (CVE-2021-3716's lesson:
   * a client that pipelined options behind STARTTLS gets answers from
   * what came through TLS only). */
  if (stale)
    log_debug ("%s: %u bytes behind STARTTLS dropped", c->peer, stale);
  c->rstart = c->rend = 0;
  c->tls = calloc (1, sizeof *c->tls);
  if (!c->tls) {
    log_ratelimited ("%s: no memory for TLS: closing", c->peer);
    c->dead = true;
    return;
  }
  c->tls->c = c;
}

bool
tls_userspace (const struct conn *c)
{
  return c->tls && c->tls->user;
}

static int
session_start (struct conn *c)
{
  struct tls_conn *t = c->tls;
  int r;

  if ((r = gnutls_init (&t->s, GNUTLS_SERVER | GNUTLS_NONBLOCK |
                        GNUTLS_NO_TICKETS)) < 0)
    goto err;
  gnutls_session_set_ptr (t->s, c);
  if ((r = gnutls_priority_set (t->s, priority)) < 0)
    goto err;
  if (x509_creds &&
      (r = gnutls_credentials_set (t->s, GNUTLS_CRD_CERTIFICATE,
                                   x509_creds)) < 0)
    goto err;
  if (psk_creds &&
      (r = gnutls_credentials_set (t->s, GNUTLS_CRD_PSK, psk_creds)) < 0)
    goto err;
  if (opts.verify_peer) {
    gnutls_certificate_server_set_request (t->s, GNUTLS_CERT_REQUIRE);
    gnutls_session_set_verify_cert (t->s, NULL, 0);
  }
  gnutls_transport_set_ptr (t->s, c);
  gnutls_transport_set_pull_function (t->s, pull);
  gnutls_transport_set_push_function (t->s, push);
  return 0;
 err:
  log_ratelimited ("%s: TLS handshake failed: %s", c->peer,
                   gnutls_strerror (r));
  return -1;
}

/* The client's identity, for the log and the DN allow-list: *dn is set
 * (to free) for a certificate. */
static void
peer_identity (struct conn *c, char *who, size_t len, gnutls_datum_t *dn)
{
  gnutls_session_t s = c->tls->s;
  const gnutls_datum_t *certs;
  unsigned n = 0;

  dn->data = NULL;
  dn->size = 0;
  if (gnutls_auth_get_type (s) == GNUTLS_CRD_PSK) {
    const char *user = gnutls_psk_server_get_username (s);
    snprintf (who, len, "psk user '%s'", user ? user : "");
    return;
  }
  certs = gnutls_certificate_get_peers (s, &n);
  if (certs && n > 0) {
    gnutls_x509_crt_t crt;
    if (gnutls_x509_crt_init (&crt) == 0) {
      if (gnutls_x509_crt_import (crt, &certs[0], GNUTLS_X509_FMT_DER) == 0)
        gnutls_x509_crt_get_dn3 (crt, dn, 0);
      gnutls_x509_crt_deinit (crt);
    }
  }
  if (dn->data)
    snprintf (who, len, "x509 client '%s'", (char *) dn->data);
  else
    snprintf (who, len, "x509, no client certificate");
}

static bool
dn_allowed (const gnutls_datum_t *dn)
{
  if (opts.nr_allow_dn == 0)
    return true;
  for (size_t i = 0; dn->data && i < opts.nr_allow_dn; i++)
    if (strcmp ((const char *) dn->data, opts.allow_dn[i]) == 0)
      return true;
  return false;
}

static void
ktls_refused (const char *why)
{
  if (!atomic_exchange (&ktls_refusal_logged, true))
    log_info ("kernel TLS not used: %s; TLS records are handled in "
              "userspace instead (said once)", why);
}

/* Hand the keys to the kernel.  1: kTLS carries the connection; 0: it
 * cannot, nothing changed; -1: the socket is half set up, unusable. */
static int
ktls_install (struct conn *c)
{
  gnutls_session_t s = c->tls->s;
  gnutls_cipher_algorithm_t cipher = gnutls_cipher_get (s);
  gnutls_protocol_t ver = gnutls_protocol_get_version (s);
  union {
    struct tls12_crypto_info_aes_gcm_128 g128;
    struct tls12_crypto_info_aes_gcm_256 g256;
    struct tls12_crypto_info_chacha20_poly1305 cc;
  } ci;
  char why[128];

  if (!opts.ktls)
    return 0;
  if (ver != GNUTLS_TLS1_2 && ver != GNUTLS_TLS1_3) {
    ktls_refused ("a TLS version other than 1.2 and 1.3");
    return 0;
  }
  if (cipher != GNUTLS_CIPHER_AES_128_GCM &&
      cipher != GNUTLS_CIPHER_AES_256_GCM &&
      cipher != GNUTLS_CIPHER_CHACHA20_POLY1305) {
    snprintf (why, sizeof why, "cipher %s", gnutls_cipher_get_name (cipher));
    ktls_refused (why);
    return 0;
  }
  if (gnutls_record_get_max_size (s) < TLS_MAX_PLAIN) {
    ktls_refused ("the client limits record sizes");
    return 0;
  }
  if (setsockopt (c->fd, SOL_TCP, TCP_ULP, "tls", sizeof "tls") == -1) {
    snprintf (why, sizeof why, "setsockopt TCP_ULP tls: %s%s",
              strerror (errno), errno == ENOENT
              ? " (no tls kernel module)" : errno == EOPNOTSUPP
              ? " (not a TCP socket)" : "");
    ktls_refused (why);
    return 0;
  }
  for (int read = 1; read >= 0; read--) {
    gnutls_datum_t mac, iv, key;
    unsigned char seq[8];
    socklen_t len;

    if (gnutls_record_get_state (s, read, &mac, &iv, &key, seq) < 0)
      return read ? 0 : -1;
    memset (&ci, 0, sizeof ci);
    if (cipher == GNUTLS_CIPHER_CHACHA20_POLY1305) {
      ci.cc.info.version = ver == GNUTLS_TLS1_3 ? TLS_1_3_VERSION
                                                : TLS_1_2_VERSION;
      ci.cc.info.cipher_type = TLS_CIPHER_CHACHA20_POLY1305;
      memcpy (ci.cc.iv, iv.data, sizeof ci.cc.iv);
      memcpy (ci.cc.key, key.data, sizeof ci.cc.key);
      memcpy (ci.cc.rec_seq, seq, sizeof ci.cc.rec_seq);
      len = sizeof ci.cc;
    }
    else {
      /* Both GCM layouts share the offsets of everything but the key. */
      bool g256 = cipher == GNUTLS_CIPHER_AES_256_GCM;
      struct tls12_crypto_info_aes_gcm_128 *g = &ci.g128;
      g->info.version = ver == GNUTLS_TLS1_3 ? TLS_1_3_VERSION
                                             : TLS_1_2_VERSION;
      g->info.cipher_type = g256 ? TLS_CIPHER_AES_GCM_256
                                 : TLS_CIPHER_AES_GCM_128;
      if (g256) {
        memcpy (ci.g256.salt, iv.data, 4);
        memcpy (ci.g256.iv, ver == GNUTLS_TLS1_3 ? iv.data + 4 : seq, 8);
        memcpy (ci.g256.key, key.data, 32);
        memcpy (ci.g256.rec_seq, seq, 8);
        len = sizeof ci.g256;
      }
      else {
        memcpy (g->salt, iv.data, 4);
        memcpy (g->iv, ver == GNUTLS_TLS1_3 ? iv.data + 4 : seq, 8);
        memcpy (g->key, key.data, 16);
        memcpy (g->rec_seq, seq, 8);
        len = sizeof *g;
      }
    }
    if (setsockopt (c->fd, SOL_TLS, read ? TLS_RX : TLS_TX, &ci, len) == -1) {
      int e = errno;
      memset (&ci, 0, sizeof ci);
      snprintf (why, sizeof why, "setsockopt %s: %s", read ? "TLS_RX"
                : "TLS_TX", strerror (e));
      if (read) {               /* nothing set yet: fall back */
        ktls_refused (why);
        return 0;
      }
      log_ratelimited ("%s: %s after TLS_RX: closing", c->peer, why);
      return -1;
    }
    memset (&ci, 0, sizeof ci);
  }
  return 1;
}

/* The handshake is over and its last flight sent: authorize, pick who
 * carries the records, forget the negotiation so far. */
static int
established (struct conn *c)
{
  struct tls_conn *t = c->tls;
  gnutls_datum_t dn;
  char who[320];
  int r;

  peer_identity (c, who, sizeof who, &dn);
  if (!dn_allowed (&dn)) {
    log_ratelimited ("%s: TLS handshake failed: client '%s' is not on the "
                     "--tls-allow-dn list", c->peer,
                     dn.data ? (char *) dn.data : "(no certificate)");
    gnutls_free (dn.data);
    return -1;
  }
  gnutls_free (dn.data);
  r = ktls_install (c);
  if (r == -1)
    return -1;
  t->ktls = r == 1;
  if (!t->ktls && tls_record_start (c) == -1)
    return -1;                  /* said why */
  t->user = !t->ktls;
  log_debug ("%s: TLS %s %s, %s: %s", c->peer,
             gnutls_protocol_get_name (gnutls_protocol_get_version (t->s)),
             gnutls_cipher_get_name (gnutls_cipher_get (t->s)), who,
             t->ktls ? "kTLS" : "userspace TLS records");
  gnutls_deinit (t->s);
  t->s = NULL;
  /* The spec: after STARTTLS the negotiation starts over. */
  c->tls_up = true;
  c->bconn.tls = true;          /* what backends are told at connect */
  c->structured = c->extended = c->meta_base_alloc = false;
  c->meta_export = NULL;
  c->rwant = 0;
  return 0;
}

int
tls_handshake_step (struct conn *c)
{
  struct tls_conn *t = c->tls;
  int r;

  if (!t->s && !t->hs_done && session_start (c) == -1)
    goto fail;
  if (t->hs_done) {
    if (established (c) == -1)
      goto fail;
    return 2;                   /* handshake.c goes on with options */
  }
  r = gnutls_handshake (t->s);
  if (r == 0) {
    t->hs_done = true;
    if (c->tlen) {
      conn_send_tbuf (c);       /* established () once it is sent */
      return 1;
    }
    if (established (c) == -1)
      goto fail;
    return 2;
  }
  if (c->tlen) {
    conn_send_tbuf (c);
    return 1;
  }
  if (r == GNUTLS_E_AGAIN || r == GNUTLS_E_INTERRUPTED) {
    /* One record at a time: exactly the bytes GnuTLS waits for. */
    c->rwant = t->pull_want ? t->pull_want : TLS_HDR;
    return 0;
  }
  log_ratelimited ("%s: TLS handshake failed: %s", c->peer,
                   gnutls_strerror (r));
 fail:
  c->dead = true;
  return -1;
}

void
tls_handshake_cut (struct conn *c, int res)
{
  log_ratelimited ("%s: TLS handshake failed: %s", c->peer, res == 0
                   ? "the client hung up" : strerror (-res));
}

int
tls_ktls_control (struct conn *c)
{
  unsigned char buf[TLS_MAX_PLAIN], cbuf[CMSG_SPACE (sizeof (unsigned char))];
  struct iovec iov = { buf, sizeof buf };
  struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                        .msg_control = cbuf, .msg_controllen = sizeof cbuf };
  struct cmsghdr *h;
  unsigned char type = 0;
  ssize_t n;

  if (!c->tls->ktls)
    return -EIO;
  n = recvmsg (c->fd, &msg, MSG_DONTWAIT);
  if (n < 0)
    return -errno;
  if (n == 0)
    return 0;
  h = CMSG_FIRSTHDR (&msg);
  if (h && h->cmsg_level == SOL_TLS && h->cmsg_type == TLS_GET_RECORD_TYPE)
    type = *CMSG_DATA (h);
  if (type == 21 && n >= 2 && buf[1] == 0)
    return 0;                   /* close_notify */
  log_ratelimited ("%s: TLS record type %u (%s) not handled: closing",
                   c->peer, type, type == 21 ? "alert"
                   : type == 22 ? "post-handshake message" : "unexpected");
  return -EPROTO;
}

void
tls_close (struct conn *c)
{
  struct tls_conn *t = c->tls;

  if (!t)
    return;
  if (t->ktls && !t->closed && !c->dead) {
    unsigned char alert[2] = { 1, 0 };  /* warning, close_notify */
    char cbuf[CMSG_SPACE (sizeof (unsigned char))];
    struct iovec iov = { alert, 2 };
    struct msghdr msg = { .msg_iov = &iov, .msg_iovlen = 1,
                          .msg_control = cbuf, .msg_controllen = sizeof cbuf };
    struct cmsghdr *h = CMSG_FIRSTHDR (&msg);
    h->cmsg_level = SOL_TLS;
    h->cmsg_type = TLS_SET_RECORD_TYPE;
    h->cmsg_len = CMSG_LEN (sizeof (unsigned char));
    *CMSG_DATA (h) = 21;
    msg.msg_controllen = h->cmsg_len;
    (void) sendmsg (c->fd, &msg, MSG_DONTWAIT | MSG_NOSIGNAL);
  }
  else if (t->user && !t->closed && !c->dead)
    tls_record_close_notify (c);
  t->closed = true;
  if (t->s)
    gnutls_deinit (t->s);
  tls_record_free (t);
  free (t);
  c->tls = NULL;
}
