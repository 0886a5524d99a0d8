/* `ubdkit serve -s`: one client on standard input/output, as nbdkit -s.
 *
 * libnbd's nbd_connect_command (and so nbdsh -c, nbdinfo [ ... ]) starts
 * the server with a socketpair on its fds 0 and 1 and speaks NBD on it.
 * The socket becomes the server's only connection, with no listener;
 * ubdkit exits 0 when it closes.
 *
 * The connection owns one fd, which it closes at the end: the client sees
 * EOF only when no copy of its socket is left open here, so fds 0 and 1
 * are pointed at /dev/null once the socket is taken.  That also keeps a
 * plugin's or backend's stray printf out of the protocol.
 *
 * The main loop asks single_done a few times a second (the server
 * counts its connections; no hook into the loops is needed).
 */
#include <config.h>

#include <fcntl.h>
#include <stdint.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <unistd.h>

#include "log.h"
#include "server.h"
#include "server-stats.h"
#include "single.h"

static int client_fd = -1;
static bool started;

int
single_take (void)
{
  struct stat in, out;
  int type;
  socklen_t len = sizeof type;
  int null;

  if (fstat (STDIN_FILENO, &in) == -1 || fstat (STDOUT_FILENO, &out) == -1 ||
      !S_ISSOCK (in.st_mode) || in.st_dev != out.st_dev ||
      in.st_ino != out.st_ino ||
      getsockopt (STDIN_FILENO, SOL_SOCKET, SO_TYPE, &type, &len) == -1 ||
      type != SOCK_STREAM) {
    log_error ("-s: standard input and output must be one stream socket "
               "(the client's, as nbd_connect_command gives it)");
    return -1;
  }
  client_fd = fcntl (STDIN_FILENO, F_DUPFD_CLOEXEC, 3);
  null = open ("/dev/null", O_RDWR | O_CLOEXEC);
  if (client_fd == -1 || null == -1 || dup2 (null, STDIN_FILENO) == -1 ||
      dup2 (null, STDOUT_FILENO) == -1) {
    log_error ("-s: taking the client's socket: %m");
    return -1;
  }
  close (null);
  return 0;
}

int
single_start (void)
{
  int fd = client_fd;

  client_fd = -1;
  if (server_add_connection (fd, "stdin") == -1)
    return -1;
  started = true;
  return 0;
}

bool
single_done (void)
{
  uint64_t current, total;

  if (!started)
    return false;
  server_stats_connections (&current, &total);
  return current == 0;
}
