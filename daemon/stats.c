/* `ubdkit stats [--json] ID|PATH`: ask a server for its counters.
 *
 * ID (digits) is a ublk device: its server's control socket
 * (UBDKIT_RUNDIR/ID.sock, daemon/srvctl.c).  Anything else is the path of
 * a `ubdkit serve --control` socket (daemon/control.c).  Both answer the
 * same requests: "stats json" (one JSON object, docs/observability.md)
 * and "stats text", the reply running until the server closes. */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "control.h"
#include "srvctl.h"

static void
stats_usage (void)
{
  printf ("Usage: ubdkit stats [--json] ID|PATH\n"
          "\n"
          "Print the request counters of the server of ublk device ID, or\n"
          "of the `ubdkit serve --control PATH` server listening on PATH.\n"
          "\n"
          "      --json               one JSON object (schema:\n"
          "                           docs/observability.md)\n"
          "  -h, --help               this text\n");
}

static bool
is_id (const char *s)
{
  return *s && strspn (s, "0123456789") == strlen (s) && strlen (s) < 10;
}

int
control_query (const char *target, const char *req, char *buf, size_t len,
               bool quiet, int timeout_ms)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  bool connected;
  int r;

  if (is_id (target))
    srvctl_socket_path (strtoul (target, NULL, 10), &sa);
  else if (strlen (target) >= sizeof sa.sun_path) {
    if (!quiet)
      fprintf (stderr, "ubdkit stats: %s: the path is too long for a Unix "
             "socket\n", target);
    return -1;
  }
  else
    strcpy (sa.sun_path, target);
  r = ctl_exchange (&sa, req, buf, len, timeout_ms, &connected);
  if (r < 0) {
    if (!quiet)
      fprintf (stderr, "ubdkit stats: %s: %s%s\n", sa.sun_path,
               strerror (-r), connected ? ""
               : is_id (target) ? " (is the device's server running?)"
               : " (is it a `ubdkit serve --control` socket?)");
    return -1;
  }
  if (r == 0) {
    if (!quiet)
      fprintf (stderr, "ubdkit stats: %s: no answer from the server\n",
               sa.sun_path);
    return -1;
  }
  if (strncmp (buf, "error ", 6) == 0) {
    buf[strcspn (buf, "\n")] = '\0';
    if (!quiet)
      fprintf (stderr, "ubdkit stats: %s: %s\n", sa.sun_path, buf + 6);
    return -1;
  }
  return 0;
}

int
cmd_stats (int argc, char **argv)
{
  static const struct option opts[] = {
    { "json", no_argument, NULL, 'j' },
    { "help", no_argument, NULL, 'h' },
    { NULL, 0, NULL, 0 },
  };
  static char buf[128 * 1024];
  bool json = false;
  int c;

  while ((c = getopt_long (argc, argv, "h", opts, NULL)) != -1) {
    if (c == 'j')
      json = true;
    else if (c == 'h') {
      stats_usage ();
      return 0;
    }
    else {
      fprintf (stderr, "ubdkit stats: see 'ubdkit stats --help'\n");
      return 2;
    }
  }
  if (optind != argc - 1) {
    fprintf (stderr, "ubdkit stats: give one ublk device ID or control "
             "socket PATH (see 'ubdkit stats --help')\n");
    return 2;
  }
  if (control_query (argv[optind], json ? "stats json" : "stats text", buf,
                     sizeof buf, false, 5000) == -1)
    return 1;
  fputs (buf, stdout);
  return 0;
}
