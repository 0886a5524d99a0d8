/* A connection's TLS state, shared by tls.c (handshake, kTLS) and
 * tls-record.c (records in userspace).  Allocated at STARTTLS, freed when
 * the connection closes; the record buffers are allocated once, when the
 * handshake ends, and only for connections the kernel does not carry. */
#ifndef UBDKIT_NBD_TLS_CONN_H
#define UBDKIT_NBD_TLS_CONN_H

#include <gnutls/gnutls.h>
#include <gnutls/crypto.h>

#include "internal.h"
#include "tls.h"

#define TLS_HDR        5
#define TLS_MAX_PLAIN  16384
#define TLS_TAG        16
/* Largest record we accept: a TLS 1.3 record's plaintext, content type,
 * and up to 255 bytes of padding and expansion, as RFC 8446 allows. */
#define TLS_MAX_RECORD (TLS_HDR + TLS_MAX_PLAIN + 256)
#define TLS_CIN_SIZE   (2 * TLS_MAX_RECORD)
/* Plaintext sealed per send: four full records. */
#define TLS_TX_BUDGET  (4 * TLS_MAX_PLAIN)
#define TLS_COUT_SIZE  (4 * (TLS_HDR + 8 + TLS_MAX_PLAIN + 1 + TLS_TAG))

struct tls_dir {
  gnutls_aead_cipher_hd_t h;
  unsigned char iv[12];         /* TLS 1.2 AES-GCM: the 4-byte salt */
  uint64_t seq;
};

struct tls_conn {
  struct conn *c;
  gnutls_session_t s;           /* the handshake's; NULL once it is over */
  uint32_t pull_want;           /* bytes GnuTLS asked for and did not get */
  bool hs_done;                 /* handshake over, last flight on its way */
  bool ktls, user;              /* who carries the records */
  bool closed;                  /* close_notify sent */

  /* Records in userspace. */
  struct tls_dir rd, wr;
  bool tls13;
  bool explicit_nonce;          /* TLS 1.2 AES-GCM */
  uint32_t max_send;            /* record payload limit (the peer's) */
  /* The receive in progress: its plaintext destination. */
  struct iovec rx[REQ_IOV];
  unsigned rx_n;
  uint32_t rx_got;
  int rx_res;
  bool rx_busy;                 /* a recv of ciphertext in flight */
  struct loop_event cin_ev, cout_ev;
  struct loop_work rx_work;
  unsigned char *cin;           /* ciphertext received */
  uint32_t cin_start, cin_end;
  unsigned char *plain;         /* a record's plaintext not yet taken */
  uint32_t p_start, p_end;
  bool eof;                     /* close_notify received */
  int rx_err;                   /* a broken record: negative errno */
  unsigned char *cout;          /* sealed records being sent */
  uint32_t cout_len, cout_off, tx_plain;
};

/* tls-record.c */
int tls_record_start (struct conn *c);  /* keys from t->s; 0 or -1 */
void tls_record_free (struct tls_conn *t);
void tls_record_close_notify (struct conn *c);

#endif
