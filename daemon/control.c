/* See control.h.  The thread sleeps in poll on the socket and an eventfd
 * that control_stop signals; it answers from a static buffer, so a
 * request allocates nothing. */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "log.h"
#include "server-stats.h"

static int listen_fd = -1, stop_fd = -1;
static char *sock_path;
static pthread_t thread;
/* 64 exports of well under 1 KiB each, and room to spare. */
static char out[128 * 1024];

/* Send all of BUF (the client reads until we close). */
static void
send_all (int c, const char *buf, size_t len)
{
  while (len > 0) {
    ssize_t n = send (c, buf, len, MSG_NOSIGNAL);
    if (n <= 0)
      return;                   /* the client went away: nothing to tell */
    buf += n;
    len -= n;
  }
}

static void
answer (int c)
{
  struct timeval tv = { 2, 0 };
  struct ucred cred;
  socklen_t len = sizeof cred;
  struct stats_buf b = { .p = out, .len = sizeof out };
  char req[128];
  size_t got = 0;
  ssize_t n;

  setsockopt (c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  setsockopt (c, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof tv);
  if (getsockopt (c, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1 ||
      (cred.uid != 0 && cred.uid != geteuid ())) {
    stats_printf (&b, "error permission denied\n");
    send_all (c, out, b.used);
    return;
  }
  while (got < sizeof req - 1 && !memchr (req, '\n', got)) {
    n = read (c, req + got, sizeof req - 1 - got);
    if (n <= 0)
      return;
    got += n;
  }
  req[got] = '\0';
  req[strcspn (req, "\r\n")] = '\0';
  if (strcmp (req, "stats") == 0 || strcmp (req, "stats json") == 0)
    server_stats_json (&b);
  else if (strcmp (req, "stats text") == 0)
    server_stats_text (&b);
  else {
    stats_printf (&b, "error unknown request '");
    stats_printf (&b, "%.64s", req);
    stats_printf (&b, "' (try \"stats\")\n");
  }
  if (b.truncated)
    log_warn ("control: the answer was cut at %zu bytes", sizeof out);
  send_all (c, out, b.used);
}

static void *
run (void *arg)
{
  struct pollfd p[2] = {
    { .fd = listen_fd, .events = POLLIN },
    { .fd = stop_fd, .events = POLLIN },
  };

  (void) arg;
  for (;;) {
    if (poll (p, 2, -1) == -1) {
      if (errno == EINTR)
        continue;
      log_error ("control: poll: %m");
      return NULL;
    }
    if (p[1].revents)
      return NULL;
    if (p[0].revents & POLLIN) {
      int c = accept4 (listen_fd, NULL, NULL, SOCK_CLOEXEC);
      if (c >= 0) {
        answer (c);
        close (c);
      }
    }
  }
}

int
control_start (const char *path)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  struct stat st;
  bool bound = false;
  int r;

  if (strlen (path) >= sizeof sa.sun_path) {
    log_error ("--control %s: the path is too long for a Unix socket", path);
    return -1;
  }
  strcpy (sa.sun_path, path);
  /* A server that died left its socket behind: ours replaces it; but
   * never remove anything else. */
  if (lstat (path, &st) == 0) {
    if (!S_ISSOCK (st.st_mode)) {
      log_error ("--control %s: exists and is not a socket", path);
      return -1;
    }
    unlink (path);
  }
  listen_fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (listen_fd == -1 ||
      !(bound = bind (listen_fd, (struct sockaddr *) &sa, sizeof sa) == 0) ||
      chmod (path, 0600) == -1 || listen (listen_fd, 8) == -1) {
    log_error ("--control %s: %m", path);
    goto fail;
  }
  sock_path = strdup (path);
  stop_fd = eventfd (0, EFD_CLOEXEC);
  if (!sock_path || stop_fd == -1) {
    log_error ("--control: %m");
    goto fail;
  }
  r = pthread_create (&thread, NULL, run, NULL);
  if (r) {
    log_error ("--control: pthread_create: %s", strerror (r));
    goto fail;
  }
  return 0;

 fail:
  if (listen_fd >= 0)
    close (listen_fd);
  if (bound)
    unlink (path);
  if (stop_fd >= 0)
    close (stop_fd);
  free (sock_path);
  listen_fd = stop_fd = -1;
  sock_path = NULL;
  return -1;
}

void
control_stop (void)
{
  uint64_t one = 1;

  if (stop_fd < 0)
    return;
  if (write (stop_fd, &one, sizeof one) != sizeof one)
    log_warn ("control: eventfd: %m");
  pthread_join (thread, NULL);
  close (stop_fd);
  close (listen_fd);
  unlink (sock_path);
  free (sock_path);
  listen_fd = stop_fd = -1;
  sock_path = NULL;
}
