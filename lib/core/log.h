/* Logging.  Every line names the program and the thread's role:
 * "ubdkit[loop1]: message".  Set-up code logs once where it has context and
 * returns -1; the data path uses log_ratelimited so a misbehaving client
 * cannot flood the log.
 *
 * Where lines go (docs/logging.md): stderr, a file (--log=FILE) or syslog
 * (--log=syslog: datagrams to /dev/log, written here, not with glibc's
 * syslog(), which allocates).  No allocation and one write per line on any
 * of them: lines are formatted into a stack buffer.  The target is chosen
 * during start-up, before any thread exists. */
#ifndef UBDKIT_LOG_H
#define UBDKIT_LOG_H

#include <stdbool.h>

#define PRINTF_FMT(a, b) __attribute__((format (printf, a, b)))

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

enum log_target {
  LOG_TARGET_DEFAULT,           /* stderr; syslog once in the background */
  LOG_TARGET_STDERR,
  LOG_TARGET_SYSLOG,
  LOG_TARGET_FILE,
};

/* Debug switches: -v sets control, -vv also data (per-request) debug. */
extern bool log_debug_control;
extern bool log_debug_data;
extern bool log_quiet;           /* suppress info lines (tests) */

/* -v: control-path debug; given again, data-path debug too. */
void log_more_verbose (void);

/* The role of the calling thread, set once when the thread starts. */
void log_set_thread_name (const char *name);

/* --log=SPEC: "stderr", "syslog" or a file name (opened O_APPEND now, so
 * before any privilege drop).  Returns 0, or -1 with *why set to a static
 * explanation (errno kept for %m). */
int log_set_target (const char *spec, const char **why);
enum log_target log_get_target (void);
/* The --log argument that selects the current target again (for a ubdkit
 * this one execs); a static string. */
const char *log_target_spec (void);

/* Going to the background: without --log, log to syslog from now on.  If
 * the syslog socket cannot be reached, says so on stderr (still the
 * caller's); errors still go to stderr until the daemon detaches, and
 * lines are lost until the socket appears (each line tries to connect
 * again). */
void log_background (void);

/* Until this is called, errors also go to stderr when the target is not
 * stderr, so that errors before detaching reach the caller. */
void log_stderr_detached (void);

/* SIGHUP: reopen the --log file (after logrotate moved it).  Returns 1 if
 * the target is a file (reopened, or still the old one after logging why),
 * 0 if there is nothing to reopen. */
int log_reopen (void);

void log_msg (enum log_level lvl, const char *fmt, ...) PRINTF_FMT (2, 3);
#define log_error(...) log_msg (LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg (LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg (LOG_INFO, __VA_ARGS__)
#define log_debug(...) \
  do { if (log_debug_control) log_msg (LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_ddebug(...) \
  do { if (log_debug_data) log_msg (LOG_DEBUG, __VA_ARGS__); } while (0)

/* A warning, at most 5 a second per thread; the first line let through
 * after a dropping second says how many were dropped. */
void log_ratelimited (const char *fmt, ...) PRINTF_FMT (1, 2);

/* Start-up only: log and exit(1). */
void fatal (const char *fmt, ...) PRINTF_FMT (1, 2) __attribute__((noreturn));

#endif
