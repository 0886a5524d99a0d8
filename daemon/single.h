/* `ubdkit serve -s`: one client on standard input/output (daemon/single.c). */
#ifndef UBDKIT_SINGLE_H
#define UBDKIT_SINGLE_H

#include <stdbool.h>

/* Before the backend runs any code: check that standard input and output
 * are one socket (a client's, as libnbd's nbd_connect_command gives it),
 * and take it, leaving /dev/null on fds 0 and 1 so that nothing else
 * writes into the protocol.  Returns 0, or -1 after logging. */
int single_take (void);

/* Once the server runs: hand the client to it.  Returns 0 or -1. */
int single_start (void);

/* Is the client gone (its connection closed)?  Asked by the main loop. */
bool single_done (void);

#endif /* UBDKIT_SINGLE_H */
