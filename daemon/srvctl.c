/* See srvctl.h. */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "size.h"
#include "stats.h"
#include "srvctl.h"
#include "ublk.h"

static void
sock_path (uint32_t id, struct sockaddr_un *sa)
{
  memset (sa, 0, sizeof *sa);
  sa->sun_family = AF_UNIX;
  snprintf (sa->sun_path, sizeof sa->sun_path, UBDKIT_RUNDIR "/%u.sock", id);
}

void
srvctl_socket_path (uint32_t id, struct sockaddr_un *sa)
{
  sock_path (id, sa);
}

int
srvctl_listen (uint32_t id)
{
  struct sockaddr_un sa;
  int fd;

  sock_path (id, &sa);
  mkdir (UBDKIT_RUNDIR, 0755);
  /* A server that died left its socket behind: ours replaces it. */
  unlink (sa.sun_path);
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || bind (fd, (struct sockaddr *) &sa, sizeof sa) == -1 ||
      chmod (sa.sun_path, 0600) == -1 || listen (fd, 4) == -1) {
    log_warn ("ublk: control socket %s: %m: resize and upgrade will not "
              "reach this server", sa.sun_path);
    if (fd >= 0)
      close (fd);
    return -1;
  }
  return fd;
}

void
srvctl_close (int fd, uint32_t id)
{
  struct sockaddr_un sa;

  if (fd < 0)
    return;
  close (fd);
  sock_path (id, &sa);
  unlink (sa.sun_path);
}

static void
reply (int c, const char *fmt, ...)
{
  char buf[512];
  va_list ap;
  int n;

  va_start (ap, fmt);
  n = vsnprintf (buf, sizeof buf - 1, fmt, ap);
  va_end (ap);
  if (n < 0)
    return;
  if ((size_t) n > sizeof buf - 2)
    n = sizeof buf - 2;
  buf[n++] = '\n';
  if (send (c, buf, n, MSG_NOSIGNAL) != n) {
    /* The client went away: nothing to tell. */
  }
}

/* "resize BYTES SHRINK": BYTES 0 means all the backend has now. */
static void
do_resize (int c, struct ubdev *dev, struct backend *view, const char *args)
{
  uint64_t want, have = backend_query_size (view), cur = view->size;
  uint64_t lbs = view->min_block > 512 ? 4096 : 512;
  int shrink, r;

  if (sscanf (args, "%" SCNu64 " %d", &want, &shrink) != 2) {
    reply (c, "error bad request");
    return;
  }
  if (!(ubdev_flags (dev) & UBLK_F_UPDATE_SIZE)) {
    reply (c, "error the device was created without UPDATE_SIZE (the kernel "
           "lacks it)");
    return;
  }
  if (want == 0)
    want = have - have % lbs;
  else if (want > have) {
    reply (c, "error %" PRIu64 " bytes is more than the backend has (%"
           PRIu64 "): grow it first", want, have);
    return;
  }
  else if (want % lbs) {
    reply (c, "error %" PRIu64 " is not a multiple of the device's block "
           "size (%" PRIu64 ")", want, lbs);
    return;
  }
  if (want == 0) {
    reply (c, "error the backend has no room for one block");
    return;
  }
  if (want < cur && !shrink) {
    reply (c, "error that shrinks the device from %" PRIu64 " to %" PRIu64
           " bytes, cutting off what is beyond: pass --shrink if you mean it",
           cur, want);
    return;
  }
  r = ubdev_resize (dev, want);
  if (r < 0) {
    reply (c, "error UPDATE_SIZE: %s", strerror (-r));
    return;
  }
  reply (c, "ok %" PRIu64 " %" PRIu64, cur, want);
}

/* "stats json", "stats text", "stats line" (for `ubdkit list`): the
 * answer runs until we close (docs/observability.md). */
static void
do_stats (int c, struct ubdev *dev, struct backend *view, const char *how)
{
  static char out[8192];
  struct stats_buf b = { .p = out, .len = sizeof out };
  struct stats_sum sum;
  const char *p;
  size_t left;

  ubdev_stats (dev, &sum);
  sum.reconnects = backend_reconnects (view);
  if (strcmp (how, "json") == 0) {
    stats_printf (&b, "{\"kind\":\"ublk\",\"id\":%u,\"enabled\":%s,"
                  "\"backend\":", ubdev_id (dev),
                  stats_enabled () ? "true" : "false");
    stats_json_string (&b, view->ops->name);
    stats_printf (&b, ",\"counters\":");
    stats_json_counters (&b, &sum);
    stats_printf (&b, "}\n");
  }
  else if (strcmp (how, "text") == 0) {
    stats_printf (&b, "device %u (%s)%s:\n", ubdev_id (dev), view->ops->name,
                  stats_enabled () ? "" : ", counters disabled");
    stats_text_counters (&b, &sum, "  ");
  }
  else if (strcmp (how, "line") == 0) {
    stats_line_counters (&b, &sum);
    stats_printf (&b, "\n");
  }
  else
    stats_printf (&b, "error unknown stats format '%.32s'\n", how);
  for (p = out, left = b.used; left > 0; ) {
    ssize_t n = send (c, p, left, MSG_NOSIGNAL);
    if (n <= 0)
      break;                    /* the client went away */
    p += n;
    left -= n;
  }
}

enum srvctl_result
srvctl_handle (int fd, struct ubdev *dev, struct backend *view)
{
  struct timeval tv = { 5, 0 };
  struct ucred cred;
  socklen_t len = sizeof cred;
  char req[256];
  size_t got;
  ssize_t n;
  int c, r;

  c = accept4 (fd, NULL, NULL, SOCK_CLOEXEC);
  if (c == -1)
    return SRVCTL_CONTINUE;
  /* The control thread serves nothing else meanwhile: do not let a client
   * that sends nothing hold it. */
  setsockopt (c, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  if (getsockopt (c, SOL_SOCKET, SO_PEERCRED, &cred, &len) == -1 ||
      (cred.uid != 0 && cred.uid != geteuid ())) {
    reply (c, "error permission denied");
    close (c);
    return SRVCTL_CONTINUE;
  }
  /* The line, which may come in pieces. */
  for (got = 0; got < sizeof req - 1 && !memchr (req, '\n', got);
       got += n) {
    n = read (c, req + got, sizeof req - 1 - got);
    if (n <= 0) {
      close (c);
      return SRVCTL_CONTINUE;
    }
  }
  req[got] = '\0';
  req[strcspn (req, "\n")] = '\0';
  if (strcmp (req, "stats") == 0 || strncmp (req, "stats ", 6) == 0) {
    do_stats (c, dev, view, req[5] ? req + 6 : "json");
    close (c);
    return SRVCTL_CONTINUE;
  }
  if (strncmp (req, "resize ", 7) == 0) {
    do_resize (c, dev, view, req + 7);
    close (c);
    return SRVCTL_CONTINUE;
  }
  if (strcmp (req, "upgrade") != 0) {
    reply (c, "error unknown request '%s'", req);
    close (c);
    return SRVCTL_CONTINUE;
  }
  if (!(ubdev_flags (dev) & UBLK_F_QUIESCE)) {
    log_info ("upgrade: no QUIESCE: exiting with requests in flight, which "
              "the kernel re-issues to the next server");
    reply (c, "ok exit no QUIESCE on this device: the old server exited and "
           "the kernel re-issues the requests it had in flight");
    close (c);
    return SRVCTL_EXIT_NOW;
  }
  log_info ("upgrade: quiescing device %u", ubdev_id (dev));
  r = ubdev_quiesce (dev, 30000);
  if (r < 0) {
    /* The kernel may already hold new requests back: hand over anyway,
     * as a crash would. */
    log_warn ("upgrade: quiesce: %s: exiting with requests in flight",
              strerror (-r));
    reply (c, "ok exit the quiesce failed (%s): the old server exited and "
           "the kernel re-issues the requests it had in flight",
           strerror (-r));
    close (c);
    return SRVCTL_EXIT_NOW;
  }
  log_info ("upgrade: device quiesced, every request completed");
  reply (c, "ok quiesced every request in flight completed; new ones wait "
         "for the new server");
  close (c);
  return SRVCTL_QUIESCED;
}

int
ctl_exchange (const struct sockaddr_un *sa, const char *req, char *buf,
              size_t len, int timeout_ms, bool *connected)
{
  struct timeval tv = { timeout_ms / 1000, timeout_ms % 1000 * 1000 };
  char line[256];
  size_t got = 0;
  ssize_t n;
  int fd, err;

  *connected = false;
  fd = socket (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
  if (fd == -1 || connect (fd, (const struct sockaddr *) sa, sizeof *sa) == -1)
    goto fail;
  *connected = true;
  setsockopt (fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof tv);
  /* One write: a server that has its line may answer and go (upgrade)
   * before a second one, which would then raise SIGPIPE. */
  snprintf (line, sizeof line, "%s\n", req);
  if (send (fd, line, strlen (line), MSG_NOSIGNAL) != (ssize_t) strlen (line))
    goto fail;
  while (got < len - 1 && (n = read (fd, buf + got, len - 1 - got)) > 0)
    got += n;
  close (fd);
  buf[got] = '\0';
  return (int) got;

 fail:
  err = errno;
  if (fd >= 0)
    close (fd);
  return -err;
}

int
srvctl_request (const char *prog, uint32_t id, const char *req,
                char *buf, size_t len, int timeout_s)
{
  struct sockaddr_un sa;
  bool connected;
  int r;

  sock_path (id, &sa);
  r = ctl_exchange (&sa, req, buf, len, timeout_s * 1000, &connected);
  if (r < 0) {
    fprintf (stderr, "ubdkit %s: device %u: %s: %s%s\n", prog, id,
             sa.sun_path, strerror (-r),
             connected ? "" : " (is its server running?)");
    return -1;
  }
  buf[strcspn (buf, "\n")] = '\0';
  if (r == 0) {
    fprintf (stderr, "ubdkit %s: device %u: no answer from the server\n",
             prog, id);
    return -1;
  }
  return 0;
}
