/* --log=stderr|syslog|FILE for serve, add and recover (docs/logging.md). */
#ifndef UBDKIT_DAEMON_LOGGING_H
#define UBDKIT_DAEMON_LOGGING_H

/* The lines of --help that describe --log. */
#define LOGGING_USAGE \
"      --log stderr|syslog|FILE  where log lines go (default: stderr in\n" \
"                           the foreground, only warnings and errors\n" \
"                           unless -v or the journal; syslog in the\n" \
"                           background)\n"

/* Apply --log=ARG for `ubdkit CMD`.  Returns 0, or -1 after printing one
 * line to stderr (a usage error). */
int logging_option (const char *cmd, const char *arg);

#endif
