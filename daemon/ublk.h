/* The ublk commands: add, del, list, features, recover, resize, upgrade. */
#ifndef UBDKIT_DAEMON_UBLK_H
#define UBDKIT_DAEMON_UBLK_H

/* Each takes argv after the command name and returns the exit status. */
int cmd_add (int argc, char **argv);
int cmd_del (int argc, char **argv);
int cmd_list (int argc, char **argv);
int cmd_features (int argc, char **argv);
int cmd_recover (int argc, char **argv);
int cmd_resize (int argc, char **argv);
int cmd_upgrade (int argc, char **argv);

#include <stdint.h>
/* Record (ARGS) or forget (NULL) the backend of device ID for `list` and
 * `recover`. */
void cmd_record_backend (uint32_t id, const char *args);
/* Serve until a signal on SFD or until DONE_FD says the device stopped
 * (returns 0), or until the control socket CTL_FD (or -1) has a client
 * (returns 1), or the backend's SIZE_FD (or -1) says its size may have
 * changed (returns 2). */
int cmd_wait_for_end (int sfd, int done_fd, int ctl_fd, int size_fd);

/* Where `add` records each device's backend, for `list`. */
#define UBDKIT_RUNDIR "/run/ubdkit"

#endif
