/* ubdkit: serve a block device from userspace, over NBD (and ublk). */
#include <config.h>

#include <stdio.h>
#include <string.h>

#include "devices.h"
#include "log.h"
#include "serve.h"
#include "stats.h"
#include "control.h"
#include "ublk.h"

static void
usage (void)
{
  printf ("Usage: ubdkit COMMAND [OPTIONS] BACKEND [KEY=VALUE ...]\n"
          "\n"
          "Commands:\n"
          "  serve    serve BACKEND over NBD (TCP, Unix socket)\n"
          "  add      serve BACKEND as a ublk device /dev/ublkbN\n"
          "  del      stop and delete ublk devices ([--force] ID or --all)\n"
          "  list     list ublk devices (--json)\n"
          "  recover  restart the server of a ublk device whose server died\n"
          "  resize   give a ublk device its backend's new size ([--shrink] ID [SIZE])\n"
          "  upgrade  hand a ublk device over to the ubdkit binary now on disk (ID)\n"
          "  features the ublk features of the running kernel\n"
          "  up       create the ublk devices of /etc/ubdkit/devices.d ([--all | NAME...])\n"
          "  down     delete them ([--force] [--all | NAME...])\n"
          "  stats    request counters of a device or server ([--json] ID|PATH)\n"
          "\n"
          "Options: ubdkit serve --help; ubdkit add --help; ubdkit --version.\n"
          "Example: ubdkit serve -U /run/disk.sock file file=disk.img\n");
}

int
main (int argc, char **argv)
{
  struct serve_config cfg;
  int r;

  if (argc < 2) {
    fprintf (stderr, "ubdkit: no command given (see 'ubdkit --help')\n");
    return 2;
  }
  stats_init ();                /* before any thread: see stats.h */
  if (strcmp (argv[1], "--help") == 0 || strcmp (argv[1], "-h") == 0) {
    usage ();
    printf ("\n");
    serve_usage ();
    return 0;
  }
  if (strcmp (argv[1], "--version") == 0 || strcmp (argv[1], "-V") == 0) {
    printf ("ubdkit %s\n", PACKAGE_VERSION);
    return 0;
  }
  if (strcmp (argv[1], "add") == 0)
    return cmd_add (argc - 1, argv + 1);
  if (strcmp (argv[1], "del") == 0)
    return cmd_del (argc - 1, argv + 1);
  if (strcmp (argv[1], "list") == 0)
    return cmd_list (argc - 1, argv + 1);
  if (strcmp (argv[1], "recover") == 0)
    return cmd_recover (argc - 1, argv + 1);
  if (strcmp (argv[1], "resize") == 0)
    return cmd_resize (argc - 1, argv + 1);
  if (strcmp (argv[1], "upgrade") == 0)
    return cmd_upgrade (argc - 1, argv + 1);
  if (strcmp (argv[1], "features") == 0)
    return cmd_features (argc - 1, argv + 1);
  /* systemd: persistent devices (devices.c). */
  if (strcmp (argv[1], "up") == 0)
    return cmd_up (argc - 1, argv + 1);
  if (strcmp (argv[1], "down") == 0)
    return cmd_down (argc - 1, argv + 1);
  /* Observability: */
  if (strcmp (argv[1], "stats") == 0)
    return cmd_stats (argc - 1, argv + 1);
  if (strcmp (argv[1], "serve") != 0) {
    fprintf (stderr, "ubdkit: unknown command '%s' (see 'ubdkit --help')\n",
             argv[1]);
    return 2;
  }
  r = serve_parse (argc - 1, argv + 1, &cfg);
  if (r != 0)
    return r == 1 ? 0 : 2;
  return serve_run (&cfg);
}
