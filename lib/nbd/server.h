/* The NBD server: event loops that own client connections.
 *
 * The main thread accepts connections (daemon/) and hands each to the loop
 * with the fewest, through server_add_connection.  Everything after that
 * (handshake, requests, replies) happens on that loop's io_uring, with
 * request slots from the loop's own request pool.
 *
 * Set-up functions log and return -1; they run on the main thread only.
 */
#ifndef UBDKIT_NBD_SERVER_H
#define UBDKIT_NBD_SERVER_H

#include <stdbool.h>
#include <stddef.h>

#include "ubdkit/backend.h"
#include "tls.h"

/* One export: a name clients ask for and the backend serving it.
 * The caller owns the strings and the backend; they must outlive the
 * server. */
struct export {
  const char *name;
  const char *description;     /* may be NULL */
  struct backend *backend;
};

struct server_options {
  unsigned threads;             /* event loops */
  unsigned depth;               /* request slots per loop */
  size_t buf_size;              /* data buffer per slot */
  unsigned max_connections;     /* in total */
  unsigned workers;             /* threads for backends that block */
  unsigned handshake_timeout;   /* seconds to finish negotiating */
  unsigned poll_us;             /* longest adaptive poll (0: none) */
  struct tls_options tls;       /* NBD_OPT_STARTTLS (tls.h) */
};

/* Start the loops and their pools.  EXPORTS[0] is the default export (the
 * one named "" resolves to).  Returns 0 or -1 after logging. */
int server_start (const struct server_options *o, const struct export *exports,
                  size_t nr_exports);
/* Take ownership of an accepted socket.  Returns 0, or -1 (and closes fd)
 * when the server is full. */
int server_add_connection (int fd, const char *peer);
/* Finish in-flight requests, close every connection, join the loops. */
void server_stop (void);
/* Are all loop threads IO_FLUSHERs?  (For logs and tests.) */
bool server_threads_io_flusher (void);

#endif
