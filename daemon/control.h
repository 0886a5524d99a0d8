/* `ubdkit serve --control PATH`: a Unix socket answering "stats" (JSON)
 * and "stats text" requests, one per connection, on a thread of its own
 * so that a slow client never holds the accepting thread or a loop.
 * Only root and the server's own user may ask.  Protocol and schema:
 * docs/observability.md. */
#ifndef UBDKIT_DAEMON_CONTROL_H
#define UBDKIT_DAEMON_CONTROL_H

/* Bind PATH (replacing a stale socket) and start the thread; after
 * server_start, before privileges are dropped.  Returns 0, or -1 after
 * logging. */
int control_start (const char *path);
/* Join the thread, close and unlink the socket; before server_stop (the
 * thread reads the server's counters).  No-op if never started. */
void control_stop (void);

/* stats.c, the client: `ubdkit stats` (argv after "stats"; returns the
 * exit status), and one request REQ to TARGET (a ublk device ID or a
 * control socket path), its whole answer into BUF, waiting at most
 * TIMEOUT_MS for each read.  Returns 0, or -1 after printing why unless
 * QUIET (an "error ..." answer included). */
#include <stdbool.h>
#include <stddef.h>
int cmd_stats (int argc, char **argv);
int control_query (const char *target, const char *req, char *buf, size_t len,
                   bool quiet, int timeout_ms);

#endif
