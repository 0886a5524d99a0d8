/* The supervisor `ubdkit add` leaves behind: a small process, locked in
 * memory and an IO_FLUSHER like the server, that starts the server and
 * watches it through a pidfd.  When the server dies, or has requests
 * outstanding but completes none for the watchdog period, the supervisor
 * kills it, calls process_mrelease so its memory comes back at once, and
 * starts a new server that re-attaches to the device (ublk user recovery).
 * A server that exits with status 0 has deleted its device: the
 * supervisor then exits too; one that exits with SERVER_EXIT_UPGRADE has
 * handed it over to the next binary. */
#ifndef UBDKIT_SUPERVISOR_H
#define UBDKIT_SUPERVISOR_H

#include <stdbool.h>
#include <stdint.h>

#include "ubdkit/backend.h"
#include "progress.h"
#include "ubdev.h"

/* The server's exit status once it handed its device over for `ubdkit
 * upgrade`: the supervisor then becomes the binary now on disk (exec of
 * `ubdkit recover`), whose server re-attaches. */
#define SERVER_EXIT_UPGRADE 3

struct supervisor_config {
  struct ubdev_options dev;
  struct progress_opts progress;
  unsigned watchdog;            /* seconds; 0 = off */
  int32_t recover_id;           /* >= 0: re-attach to this device first */
  bool foreground;
};

/* Runs in the (daemonized or foreground) process after the arguments were
 * checked; READY_FD (or -1) gets the device path once it is serving.
 * Returns the exit status. */
int supervisor_run (const struct supervisor_config *cfg, struct backend *b,
                    int ready_fd, int sfd);

#endif
