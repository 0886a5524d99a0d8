/* The server's control socket, UBDKIT_RUNDIR/ID.sock: how `ubdkit resize`
 * and `ubdkit upgrade` reach the process that owns a device's backend.
 * One request line per connection, one reply line: "ok ..." or
 * "error MESSAGE".  Only root and the server's own user may connect. */
#ifndef UBDKIT_SRVCTL_H
#define UBDKIT_SRVCTL_H

#include <stddef.h>
#include <stdbool.h>
#include <stdint.h>

#include "ubdkit/backend.h"
#include "ubdev.h"

enum srvctl_result {
  SRVCTL_CONTINUE,              /* keep serving */
  SRVCTL_QUIESCED,              /* handed over: flush, close, exit */
  SRVCTL_EXIT_NOW,              /* handed over without quiesce: _exit */
};

/* Listen for device ID: the socket, or -1 after a warning (resize and
 * upgrade are then unavailable; the device serves anyway). */
int srvctl_listen (uint32_t id);
void srvctl_close (int fd, uint32_t id);
/* Take one connection from FD and answer its request on DEV, whose
 * requests are checked against VIEW. */
enum srvctl_result srvctl_handle (int fd, struct ubdev *dev,
                                  struct backend *view);

/* The socket's address for device ID (for clients of their own:
 * `ubdkit stats`). */
struct sockaddr_un;
void srvctl_socket_path (uint32_t id, struct sockaddr_un *sa);

/* Client side: connect to SA, send the line REQ, read the reply into BUF
 * (NUL-terminated) until the server closes, waiting up to TIMEOUT_MS for
 * each read.  Returns the bytes read, or -errno (*CONNECTED says whether
 * the connect had succeeded). */
int ctl_exchange (const struct sockaddr_un *sa, const char *req, char *buf,
                  size_t len, int timeout_ms, bool *connected);

/* Client side: send REQ to the server of device ID and read its reply
 * into REPLY, waiting up to TIMEOUT_S.  Returns 0, or -1 after printing
 * why (PROG: the command, for the message). */
int srvctl_request (const char *prog, uint32_t id, const char *req,
                    char *reply, size_t len, int timeout_s);

#endif
