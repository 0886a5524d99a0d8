/* systemd's two small protocols, spoken directly (no libsystemd: one less
 * library mapped and locked into a memory-locked daemon, and nothing here
 * allocates, so notifying from a running server cannot fail for memory).
 *
 * sd_notify(3): datagrams "KEY=VALUE\n..." to the socket named by
 * NOTIFY_SOCKET (a path, or "@name" for the abstract namespace).
 * sd_listen_fds(3): LISTEN_PID names us, LISTEN_FDS counts the listening
 * sockets passed from fd 3 on, LISTEN_FDNAMES optionally names them.
 *
 * Errors: set-up logs once and returns -1; notifying is best effort and
 * returns nothing (systemd not listening is not our failure). */
#ifndef UBDKIT_SYSTEMD_H
#define UBDKIT_SYSTEMD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdlib.h>
#include <unistd.h>

#include "log.h"

/* The first passed descriptor (SD_LISTEN_FDS_START). */
#define SYSTEMD_LISTEN_FDS_START 3

/* True if the environment passes listening sockets to this process: what
 * decides, when no -U/-p/--bind is given, between socket activation and
 * the default port.  Inline so option parsing needs nothing linked. */
static inline bool
systemd_listen_fds_for_us (void)
{
  const char *pid = getenv ("LISTEN_PID"), *n = getenv ("LISTEN_FDS");
  char *end;
  long v;

  if (!pid || !n)
    return false;
  v = strtol (pid, &end, 10);
  return *end == '\0' && end != pid && v == (long) getpid ();
}

/* Read NOTIFY_SOCKET and open the socket to notify through; with UNSET,
 * also unset the variable so that no command we start (serve's --run)
 * takes our messages for its own.  (add keeps it: an upgrade execs the new
 * binary in the supervisor's place, and that must notify too.)  Call
 * once, before forking; a no-op without NOTIFY_SOCKET.  Returns -1 after
 * logging if NOTIFY_SOCKET is unusable. */
int systemd_notify_init (bool unset);

/* Send one notification: the lines of FMT (e.g. "READY=1\nSTATUS=...").
 * Formats into a stack buffer; silently does nothing without
 * NOTIFY_SOCKET.  Safe in any process forked after systemd_notify_init. */
void systemd_notify (const char *fmt, ...) PRINTF_FMT (1, 2);

/* Take the sockets passed by socket activation: checks LISTEN_PID and
 * LISTEN_FDS, that each descriptor is a listening stream socket, sets
 * FD_CLOEXEC and unsets the three variables.  Fills fds[0..n-1] (the
 * caller then owns them) and, if names is not NULL, names[i] with the
 * LISTEN_FDNAMES entry (pointing into the process environment string,
 * which stays allocated) or "".  Returns n (>= 1), or -1 after logging. */
int systemd_listen_fds (int *fds, const char **names, size_t max);

#endif
