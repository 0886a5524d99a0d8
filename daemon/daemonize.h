/* Going to the background with a readiness report: the parent waits until
 * the child says it is serving (or failed), prints what the child sends
 * (e.g. the device path) and exits with the child's status.  Must run
 * before any thread exists. */
#ifndef UBDKIT_DAEMONIZE_H
#define UBDKIT_DAEMONIZE_H

/* Fork.  Returns, in the child, the descriptor to report readiness on; the
 * child logs to syslog from now on unless --log said otherwise. */
int daemonize_start (void);
/* Report STATUS (0 = serving) and a line for the parent to print (may be
 * NULL).  Also redirects stdin, stdout and stderr (see
 * daemonize_detach_stderr) to /dev/null on success.  No-op when *fd < 0;
 * sets *fd to -1. */
void daemonize_ready (int *fd, int status, const char *line);

/* Point stdin and stdout at /dev/null. */
void daemonize_detach_stdio (void);

/* In a process that went to the background: point stderr at /dev/null
 * too, so that nothing of ours keeps the caller's stderr (a `$(... 2>&1)`
 * would wait for it), unless --log=stderr asked for it.  Errors before
 * this reach the caller. */
void daemonize_detach_stderr (void);

/* Ignore SIGPIPE; block SIGTERM, SIGINT, SIGHUP and SIGCHLD (before any
 * thread exists, so every thread inherits the mask) and return a signalfd
 * for them, or -1 after logging. */
int daemonize_signalfd (void);

#endif
