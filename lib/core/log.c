/* Logging to stderr, one write(2) per line so threads never interleave, and
 * no allocation: lines are formatted into a stack buffer. */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

bool log_debug_control;
bool log_debug_data;
bool log_quiet;

static __thread const char *thread_name = "main";

void
log_more_verbose (void)
{
  if (log_debug_control)
    log_debug_data = true;
  log_debug_control = true;
}

void
log_set_thread_name (const char *name)
{
  thread_name = name;
}

static void
log_vmsg (enum log_level lvl, const char *fmt, va_list ap)
{
  static const char *const prefix[] = {
    [LOG_ERROR] = "error: ", [LOG_WARN] = "warning: ",
    [LOG_INFO] = "", [LOG_DEBUG] = "debug: ",
  };
  char line[1024];
  int saved_errno = errno;
  int n;

  if (lvl == LOG_INFO && log_quiet)
    return;
  n = snprintf (line, sizeof line, "ubdkit[%s]: %s", thread_name, prefix[lvl]);
  errno = saved_errno;          /* so %m works */
  if (n >= 0 && (size_t) n < sizeof line)
    n += vsnprintf (line + n, sizeof line - n, fmt, ap);
  if (n < 0)
    return;
  if ((size_t) n >= sizeof line - 1)
    n = sizeof line - 2;
  line[n++] = '\n';
  if (write (STDERR_FILENO, line, n) < 0) {
    /* Nothing sensible to do: stderr is gone. */
  }
  errno = saved_errno;
}

void
log_msg (enum log_level lvl, const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  log_vmsg (lvl, fmt, ap);
  va_end (ap);
}

void
log_ratelimited (const char *fmt, ...)
{
  static __thread time_t window;
  static __thread unsigned count, dropped;
  time_t now = time (NULL);
  va_list ap;

  if (now != window) {
    if (dropped)
      log_msg (LOG_WARN, "%u similar messages suppressed", dropped);
    window = now;
    count = dropped = 0;
  }
  if (++count > 5) {
    dropped++;
    return;
  }
  va_start (ap, fmt);
  log_vmsg (LOG_WARN, fmt, ap);
  va_end (ap);
}

void
fatal (const char *fmt, ...)
{
  va_list ap;

  va_start (ap, fmt);
  log_vmsg (LOG_ERROR, fmt, ap);
  va_end (ap);
  exit (EXIT_FAILURE);
}
