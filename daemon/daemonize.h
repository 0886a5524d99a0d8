/* Going to the background with a readiness report: the parent waits until
 * the child says it is serving (or failed), prints what the child sends
 * (e.g. the device path) and exits with the child's status.  Must run
 * before any thread exists. */
#ifndef UBDKIT_DAEMONIZE_H
#define UBDKIT_DAEMONIZE_H

/* Fork.  Returns, in the child, the descriptor to report readiness on. */
int daemonize_start (void);
/* Report STATUS (0 = serving) and a line for the parent to print (may be
 * NULL).  Also redirects stdin/stdout to /dev/null on success.  No-op when
 * *fd < 0; sets *fd to -1. */
void daemonize_ready (int *fd, int status, const char *line);

/* Point stdin and stdout at /dev/null (stderr stays: it carries logs). */
void daemonize_detach_stdio (void);

/* Ignore SIGPIPE; block SIGTERM, SIGINT, SIGHUP and SIGCHLD (before any
 * thread exists, so every thread inherits the mask) and return a signalfd
 * for them, or -1 after logging. */
int daemonize_signalfd (void);

#endif
