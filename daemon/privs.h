/* -u USER / -g GROUP: `ubdkit serve` sets itself up as the user that
 * started it (root: to bind low ports, lock memory, set IO_FLUSHER, open
 * devices) and then drops to USER:GROUP before it accepts a client.
 * Files it made in privileged places (the Unix socket, the pidfile) are
 * removed at exit by a small helper process that keeps the original
 * identity.  Errors: logged once here; functions return -1. */
#ifndef UBDKIT_DAEMON_PRIVS_H
#define UBDKIT_DAEMON_PRIVS_H

#include "access.h"
#include "serve.h"

/* Resolve c->user and c->group (names or numbers) into c->uid, c->gid.
 * Returns 0, or -1 after printing a one-line error (exit status 2). */
int privs_resolve (struct access_config *c);
/* With -u or -g, fork the cleanup helper: call before any thread exists
 * and before memory is locked (the fork is then cheap).  Returns 0, or -1
 * after logging. */
int privs_helper_start (const struct access_config *c,
                        const struct listeners *ls, const char *pidfile);
/* Tell the helper the pidfile is ours to remove at exit. */
void privs_helper_pidfile_written (void);
/* Drop to -u/-g (no-op without them) and check that root is gone for
 * good.  memlocked: memory is locked with MCL_FUTURE, so lift
 * RLIMIT_MEMLOCK first (or every later allocation would fail).  Returns
 * 0, or -1 after logging. */
int privs_drop (const struct access_config *c, struct listeners *ls,
                bool memlocked);
/* At exit: let the helper clean up and wait for it. */
void privs_helper_finish (void);

#endif
