/* See systemd.h.  Both protocols as sd_notify(3) and sd_listen_fds(3)
 * document them; none of this allocates. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>

#include "systemd.h"

static int notify_fd = -1;
static struct sockaddr_un notify_addr;
static socklen_t notify_len;

int
systemd_notify_init (bool unset)
{
  const char *path = getenv ("NOTIFY_SOCKET");
  size_t len;

  if (!path || notify_fd >= 0)
    return 0;
  len = strlen (path);
  /* A path, or "@name" for an abstract socket (a leading NUL in the
   * address, whose length then counts every byte of the name). */
  if ((path[0] != '/' && path[0] != '@') || len < 2 ||
      len >= sizeof notify_addr.sun_path) {
    log_error ("NOTIFY_SOCKET=%s: not an absolute path or @abstract name of "
               "at most %zu bytes", path, sizeof notify_addr.sun_path - 1);
    return -1;
  }
  notify_addr.sun_family = AF_UNIX;
  memcpy (notify_addr.sun_path, path, len);
  if (path[0] == '@') {
    notify_addr.sun_path[0] = '\0';
    notify_len = offsetof (struct sockaddr_un, sun_path) + len;
  }
  else
    notify_len = offsetof (struct sockaddr_un, sun_path) + len + 1;
  notify_fd = socket (AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  if (notify_fd == -1) {
    log_error ("NOTIFY_SOCKET: socket: %m");
    return -1;
  }
  if (unset)
    unsetenv ("NOTIFY_SOCKET");
  return 0;
}

void
systemd_notify (const char *fmt, ...)
{
  char msg[1024];
  va_list ap;
  int n;

  if (notify_fd < 0)
    return;
  va_start (ap, fmt);
  n = vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  if (n < 0)
    return;
  if ((size_t) n >= sizeof msg)
    n = sizeof msg - 1;         /* a STATUS= cut short is still a status */
  /* MSG_NOSIGNAL: a gone manager must not kill us with SIGPIPE. */
  if (sendto (notify_fd, msg, n, MSG_NOSIGNAL | MSG_DONTWAIT,
              (struct sockaddr *) &notify_addr, notify_len) == -1)
    log_debug ("NOTIFY_SOCKET: sendto: %m");
}

/* LISTEN_FDNAMES, copied: the names outlive the variable. */
static char fd_names[1024];

static int
check_fd (int fd)
{
  struct stat st;
  int type = 0, listening = 0;
  socklen_t len = sizeof type;

  if (fstat (fd, &st) == -1) {
    log_error ("socket activation: fd %d (LISTEN_FDS): %m", fd);
    return -1;
  }
  if (!S_ISSOCK (st.st_mode) ||
      getsockopt (fd, SOL_SOCKET, SO_TYPE, &type, &len) == -1 ||
      type != SOCK_STREAM) {
    log_error ("socket activation: fd %d is not a stream socket (NBD needs "
               "ListenStream=)", fd);
    return -1;
  }
  len = sizeof listening;
  if (getsockopt (fd, SOL_SOCKET, SO_ACCEPTCONN, &listening, &len) == -1 ||
      !listening) {
    log_error ("socket activation: fd %d is not listening (Accept=yes is "
               "not supported: use Accept=no)", fd);
    return -1;
  }
  if (fcntl (fd, F_SETFD, FD_CLOEXEC) == -1) {
    log_error ("socket activation: fd %d: F_SETFD: %m", fd);
    return -1;
  }
  return 0;
}

int
systemd_listen_fds (int *fds, const char **names, size_t max)
{
  const char *n = getenv ("LISTEN_FDS"), *fdn = getenv ("LISTEN_FDNAMES");
  char *end, *name;
  long count;

  if (!systemd_listen_fds_for_us ()) {
    log_error ("socket activation: LISTEN_PID does not name this process");
    return -1;
  }
  count = strtol (n, &end, 10);
  if (*end != '\0' || end == n || count < 1 || (size_t) count > max) {
    log_error ("socket activation: LISTEN_FDS=%s: expected 1 to %zu sockets",
               n, max);
    return -1;
  }
  snprintf (fd_names, sizeof fd_names, "%s", fdn ? fdn : "");
  name = fd_names;
  for (long i = 0; i < count; i++) {
    fds[i] = SYSTEMD_LISTEN_FDS_START + i;
    if (check_fd (fds[i]) == -1)
      return -1;
    if (names) {
      names[i] = name;
      if ((end = strchr (name, ':')) != NULL) {
        *end = '\0';
        name = end + 1;
      }
      else
        name += strlen (name);
    }
  }
  unsetenv ("LISTEN_PID");
  unsetenv ("LISTEN_FDS");
  unsetenv ("LISTEN_FDNAMES");
  return count;
}
