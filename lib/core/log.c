/* Logging to stderr, a file or syslog: one write(2) per line so threads and
 * processes never interleave, and no allocation: lines are formatted into
 * a stack buffer.  See log.h and docs/logging.md. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "log.h"

bool log_debug_control;
bool log_debug_data;
bool log_quiet;

static __thread const char *thread_name = "main";

/* Set during start-up, before any thread exists; read-only afterwards
 * (log_reopen replaces the file with dup2, keeping the descriptor). */
static enum log_target target = LOG_TARGET_DEFAULT;
static int target_fd = -1;                  /* the file, or the socket */
static char file_path[4096];
static struct sockaddr_un syslog_addr;
static bool stderr_attached = true;
/* Syslog lines dropped because the socket was full or gone: we never wait
 * for the log reader, which may itself be waiting for memory we free. */
static atomic_uint syslog_lost;

/* Syslog facility daemon (3) and the severities of RFC 3164 (syslog.h's
 * names clash with ours). */
#define SYSLOG_FACILITY_DAEMON (3 << 3)
static const int severity[] = {
  [LOG_ERROR] = 3, [LOG_WARN] = 4, [LOG_INFO] = 6, [LOG_DEBUG] = 7,
};
static const char *const prefix[] = {
  [LOG_ERROR] = "error: ", [LOG_WARN] = "warning: ",
  [LOG_INFO] = "", [LOG_DEBUG] = "debug: ",
};

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

static int
syslog_connect (int fd)
{
  return connect (fd, (struct sockaddr *) &syslog_addr, sizeof syslog_addr);
}

/* Open the syslog socket.  Returns 0, or -1 with errno set; the socket
 * stays (unconnected) so that later lines can try again. */
static int
syslog_open (void)
{
  const char *path = getenv ("UBDKIT_SYSLOG_SOCKET");

  if (!path || !*path)
    path = "/dev/log";
  memset (&syslog_addr, 0, sizeof syslog_addr);
  syslog_addr.sun_family = AF_UNIX;
  if (strlen (path) >= sizeof syslog_addr.sun_path) {
    errno = ENAMETOOLONG;
    return -1;
  }
  strcpy (syslog_addr.sun_path, path);
  if (target_fd < 0)
    target_fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (target_fd < 0)
    return -1;
  target = LOG_TARGET_SYSLOG;
  return syslog_connect (target_fd);
}

/* Said on stderr, while it is still the caller's. */
static void
syslog_unreachable (void)
{
  int e = errno;

  if (target == LOG_TARGET_SYSLOG)
    dprintf (STDERR_FILENO, "ubdkit[%s]: warning: syslog: %s: %s: lines are "
             "lost until it can be reached (errors still go to stderr until "
             "detached; or use --log=FILE)\n", thread_name,
             syslog_addr.sun_path, strerror (e));
  else
    dprintf (STDERR_FILENO, "ubdkit[%s]: warning: syslog: %s: logging to "
             "stderr\n", thread_name, strerror (e));
}

static int
file_open (const char *path)
{
  return open (path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC | O_NOCTTY,
               0640);
}

int
log_set_target (const char *spec, const char **why)
{
  char cwd[2048];
  int fd;

  *why = "";
  if (target != LOG_TARGET_DEFAULT) {
    *why = "given twice";
    errno = EINVAL;
    return -1;
  }
  if (strcmp (spec, "stderr") == 0) {
    target = LOG_TARGET_STDERR;
    return 0;
  }
  if (strcmp (spec, "syslog") == 0) {
    if (syslog_open () == -1) {
      if (target_fd < 0) {
        *why = "socket";
        return -1;
      }
      syslog_unreachable ();    /* later lines retry */
    }
    return 0;
  }
  if (!*spec) {
    *why = "expected stderr, syslog or a file name";
    errno = EINVAL;
    return -1;
  }
  /* An absolute name, so that a ubdkit we exec (upgrade) opens the same. */
  if (spec[0] != '/' && getcwd (cwd, sizeof cwd))
    snprintf (file_path, sizeof file_path, "%s/%s", cwd, spec);
  else
    snprintf (file_path, sizeof file_path, "%s", spec);
  fd = file_open (file_path);
  if (fd < 0) {
    *why = "open";
    return -1;
  }
  /* gmtime_r reads the time zone once; do it now, not on the data path. */
  tzset ();
  target_fd = fd;
  target = LOG_TARGET_FILE;
  return 0;
}

enum log_target
log_get_target (void)
{
  return target;
}

const char *
log_target_spec (void)
{
  switch (target) {
  case LOG_TARGET_SYSLOG: return "syslog";
  case LOG_TARGET_FILE: return file_path;
  default: return "stderr";
  }
}

void
log_background (void)
{
  if (target == LOG_TARGET_DEFAULT && syslog_open () == -1)
    syslog_unreachable ();
}

void
log_stderr_detached (void)
{
  stderr_attached = false;
}

int
log_reopen (void)
{
  int fd;

  if (target != LOG_TARGET_FILE)
    return 0;
  fd = file_open (file_path);
  if (fd < 0) {
    log_error ("--log %s: reopen: %m: still writing to the old file",
               file_path);
    return 1;
  }
  dup2 (fd, target_fd);         /* atomic for threads writing meanwhile */
  close (fd);
  log_info ("log file reopened");
  return 1;
}

/* One datagram; on a socket that lost its reader (syslogd restarted),
 * connect again once.  Returns 0, or -1 if the line was dropped. */
static int
syslog_send (const struct iovec *iov, int n)
{
  struct msghdr mh = { .msg_iov = (struct iovec *) iov, .msg_iovlen = n };

  if (sendmsg (target_fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
    return 0;
  if (errno != EAGAIN && syslog_connect (target_fd) == 0 &&
      sendmsg (target_fd, &mh, MSG_DONTWAIT | MSG_NOSIGNAL) >= 0)
    return 0;
  return -1;
}

static void
write_all (int fd, const struct iovec *iov, int n)
{
  if (writev (fd, iov, n) < 0) {
    /* Nothing sensible to do: the log is gone. */
  }
}

/* "2026-12-03T05:48:31.123Z", UTC so that lines from any zone compare. */
static int
timestamp (char *buf, size_t len)
{
  struct timespec ts;
  struct tm tm;

  clock_gettime (CLOCK_REALTIME, &ts);
  gmtime_r (&ts.tv_sec, &tm);
  return snprintf (buf, len, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ ",
                   tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday, tm.tm_hour,
                   tm.tm_min, tm.tm_sec, (int) (ts.tv_nsec / 1000000));
}

/* Returns -1 if a syslog line was dropped, else 0. */
static int
emit (enum log_level lvl, const char *msg, int len)
{
  char head[160], ts[64];
  struct iovec iov[3] = {
    { head, 0 }, { (void *) msg, len }, { (void *) "\n", 1 },
  };
  int n, r = 0;

  switch (target) {
  case LOG_TARGET_SYSLOG:
    n = snprintf (head, sizeof head, "<%d>ubdkit[%d]: %s: ",
                  SYSLOG_FACILITY_DAEMON | severity[lvl], (int) getpid (),
                  thread_name);
    iov[0].iov_len = n < (int) sizeof head ? n : (int) sizeof head - 1;
    r = syslog_send (iov, 2);
    break;
  case LOG_TARGET_FILE:
    timestamp (ts, sizeof ts);
    n = snprintf (head, sizeof head, "%subdkit[%d]: %s: %s", ts,
                  (int) getpid (), thread_name, prefix[lvl]);
    iov[0].iov_len = n < (int) sizeof head ? n : (int) sizeof head - 1;
    write_all (target_fd, iov, 3);
    break;
  default:
    break;
  }
  if (target == LOG_TARGET_DEFAULT || target == LOG_TARGET_STDERR ||
      (lvl == LOG_ERROR && stderr_attached)) {
    n = snprintf (head, sizeof head, "ubdkit[%s]: %s", thread_name,
                  prefix[lvl]);
    iov[0].iov_len = n < (int) sizeof head ? n : (int) sizeof head - 1;
    write_all (STDERR_FILENO, iov, 3);
  }
  return r;
}

/* Is stderr systemd's journal (JOURNAL_STREAM names its device and inode)?
 * Asked once; getenv and fstat allocate nothing. */
static bool
stderr_is_journal (void)
{
  static atomic_int known = -1;
  int k = atomic_load (&known);

  if (k == -1) {
    const char *js = getenv ("JOURNAL_STREAM");
    unsigned long long dev, ino;
    struct stat st;
    char *end;

    k = 0;
    if (js && fstat (STDERR_FILENO, &st) == 0) {
      errno = 0;
      dev = strtoull (js, &end, 10);
      if (errno == 0 && *end == ':') {
        ino = strtoull (end + 1, &end, 10);
        k = errno == 0 && *end == '\0' &&
          dev == (unsigned long long) st.st_dev &&
          ino == (unsigned long long) st.st_ino;
      }
    }
    atomic_store (&known, k);
  }
  return k;
}

/* Info lines.  nbdkit says nothing in the foreground unless -v, and
 * scripts written for it expect that, so lines of the default target in
 * the foreground are warnings and errors only.  Info lines are shown
 * wherever a log was asked for: an explicit --log (--log=stderr too), the
 * background's syslog, systemd's journal on stderr, or -v. */
static bool
info_shown (void)
{
  if (log_quiet)
    return false;
  return target != LOG_TARGET_DEFAULT || log_debug_control ||
    stderr_is_journal ();
}

static void
log_vmsg (enum log_level lvl, const char *fmt, va_list ap)
{
  char msg[1024];
  int saved_errno = errno;
  unsigned lost;
  int n;

  if (lvl == LOG_INFO && !info_shown ())
    return;
  n = vsnprintf (msg, sizeof msg, fmt, ap);
  if (n < 0)
    return;
  if ((size_t) n >= sizeof msg)
    n = sizeof msg - 1;
  if (emit (lvl, msg, n) == -1)
    atomic_fetch_add (&syslog_lost, 1);
  else if (atomic_load (&syslog_lost) &&
           (lost = atomic_exchange (&syslog_lost, 0)) > 0) {
    char note[96];
    int m = snprintf (note, sizeof note, "%u earlier lines were lost (the "
                      "syslog socket was full or gone)", lost);
    if (emit (LOG_WARN, note, m) == -1)
      atomic_fetch_add (&syslog_lost, lost);
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
      log_msg (LOG_WARN, "rate limit: %u lines dropped", dropped);
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
