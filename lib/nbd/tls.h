/* TLS for the NBD server (NBD_OPT_STARTTLS), with GnuTLS.
 *
 * GnuTLS runs the handshake only, on the loop's ring like every other
 * byte of the negotiation: its pull and push functions read the
 * connection's input buffer and write its reply buffer, so a handshake
 * never blocks a loop and obeys the handshake timeout.  The input is read
 * one TLS record at a time while the handshake runs, so that nothing the
 * client sends after its Finished is in our buffer when it ends.
 *
 * Then the session's keys (gnutls_record_get_state) go either to the
 * kernel (kTLS: setsockopt TCP_ULP "tls", TLS_TX, TLS_RX), and the data
 * path stays exactly what it is without TLS, replies leaving through
 * io_uring with one copy; or, where the kernel cannot (no tls module, a
 * Unix socket, another cipher, --tls-ktls=off), to our own record layer
 * (tls-record.c), which frames and seals records with GnuTLS's AEAD
 * ciphers in buffers allocated once per connection.  Either way no
 * allocation happens per request, and the GnuTLS session is freed as soon
 * as the handshake is over.
 */
#ifndef UBDKIT_NBD_TLS_H
#define UBDKIT_NBD_TLS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/uio.h>

enum tls_mode { TLS_OFF, TLS_ON, TLS_REQUIRE };

struct tls_options {
  enum tls_mode mode;
  const char *certificates;     /* directory in nbdkit's layout, or NULL */
  const char *psk;              /* psktool keys file, or NULL */
  const char *priority;         /* GnuTLS priority string, or NULL */
  bool verify_peer;             /* client certificates required */
  const char **allow_dn;        /* client certificate DNs allowed */
  size_t nr_allow_dn;
  bool ktls;                    /* use kernel TLS where it can be */
};

/* Main thread, before the loops start: load credentials.  0 or -1 after
 * logging. */
int tls_setup (const struct tls_options *o);
void tls_cleanup (void);
extern enum tls_mode tls_mode;

struct conn;
struct tls_conn;

/* The handshake state's step (handshake.c): as handshake_step returns. */
int tls_handshake_step (struct conn *c);
/* The input ended (RES: 0 or a negative errno) during the handshake. */
void tls_handshake_cut (struct conn *c, int res);
/* After STARTTLS was answered: what the client sent behind it is dropped
 * (it came in plaintext), and the next handshake_step starts TLS. */
void tls_begin (struct conn *c);
/* Our record layer carries this connection's data. */
bool tls_userspace (const struct conn *c);
/* Userspace records: receive plaintext into IOV (completion as recv_ev's,
 * with the plaintext byte count) and send IOV (completion as send_ev's). */
void tls_recv (struct conn *c, const struct iovec *iov, unsigned n);
void tls_send (struct conn *c, const struct iovec *iov, unsigned n);
/* kTLS: recv failed with EIO, a record other than data is next.  Returns
 * 0 (close_notify: end of input) or a negative errno. */
int tls_ktls_control (struct conn *c);
/* At close: close_notify, then free the connection's TLS state. */
void tls_close (struct conn *c);

#endif
