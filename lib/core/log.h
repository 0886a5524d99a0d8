/* Logging.  Every line names the program and the thread's role:
 * "ubdkit[loop1]: message".  Set-up code logs once where it has context and
 * returns -1; the data path uses log_ratelimited so a misbehaving client
 * cannot flood the log. */
#ifndef UBDKIT_LOG_H
#define UBDKIT_LOG_H

#include <stdbool.h>

#define PRINTF_FMT(a, b) __attribute__((format (printf, a, b)))

enum log_level { LOG_ERROR, LOG_WARN, LOG_INFO, LOG_DEBUG };

/* Debug switches: -v sets control, -vv also data (per-request) debug. */
extern bool log_debug_control;
extern bool log_debug_data;
extern bool log_quiet;           /* suppress info lines (tests) */

/* -v: control-path debug; given again, data-path debug too. */
void log_more_verbose (void);

/* The role of the calling thread, set once when the thread starts. */
void log_set_thread_name (const char *name);

void log_msg (enum log_level lvl, const char *fmt, ...) PRINTF_FMT (2, 3);
#define log_error(...) log_msg (LOG_ERROR, __VA_ARGS__)
#define log_warn(...)  log_msg (LOG_WARN, __VA_ARGS__)
#define log_info(...)  log_msg (LOG_INFO, __VA_ARGS__)
#define log_debug(...) \
  do { if (log_debug_control) log_msg (LOG_DEBUG, __VA_ARGS__); } while (0)
#define log_ddebug(...) \
  do { if (log_debug_data) log_msg (LOG_DEBUG, __VA_ARGS__); } while (0)

/* At most a few lines per second per thread; counts what it dropped. */
void log_ratelimited (const char *fmt, ...) PRINTF_FMT (1, 2);

/* Start-up only: log and exit(1). */
void fatal (const char *fmt, ...) PRINTF_FMT (1, 2) __attribute__((noreturn));

#endif
