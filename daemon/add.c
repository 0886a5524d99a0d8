/* `ubdkit add` and `ubdkit recover`: serve a backend as /dev/ublkbN.
 *
 * Arguments are checked first; then (unless --foreground) we fork and the
 * parent waits to print the device path.  The child protects itself
 * (forward-progress steps) and becomes the supervisor (supervisor.c),
 * which forks the server: backend, device, queue threads.  The server
 * serves until SIGTERM/SIGINT (it then stops and deletes the device) or
 * until someone else stops the device (`ubdkit del`).
 */
#include <config.h>

#include <errno.h>
#include <getopt.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <unistd.h>

#include "ubdkit/backend.h"
#include "daemonize.h"
#include "log.h"
#include "logging.h"
#include "progress.h"
#include "size.h"
#include "ubctl.h"
#include "supervisor.h"
#include "systemd.h"
#include "ubdev.h"
#include "ublk.h"

struct add_config {
  struct ubdev_options dev;
  struct progress_opts progress;
  bool readonly, foreground;
  unsigned watchdog;
  const char *backend;
  char **params;
  int nr_params;
};

static void
add_usage (void)
{
  printf (
"Usage: ubdkit add [OPTIONS] BACKEND [KEY=VALUE ...]\n"
"Serve BACKEND as a ublk block device (/dev/ublkbN) and print its path.\n"
"\n"
"  -n, --id ID            device number (default: the kernel picks)\n"
"  -q, --queues N         hardware queues, one thread each (default 1)\n"
"  -d, --depth N          requests in flight per queue (default 64)\n"
"      --queue-threads N  threads serving each queue, tag t by thread t %% N\n"
"                         (default 1; more need UBLK_F_PER_IO_DAEMON)\n"
"      --max-io SIZE      largest request (default 512k)\n"
"  -r, --readonly         read-only device\n"
"      --filter NAME      an nbdkit filter over BACKEND (repeatable; the\n"
"                         first is outermost); NAME or a path to a .so\n"
"      --foreground       serve in the foreground (default: background)\n"
"      --recovery MODE    while no server runs (it died, is restarting or\n"
"                         is being upgraded): hold (default: requests wait\n"
"                         and those in flight are re-issued), fail-io\n"
"                         (requests fail at once; needs the kernel's\n"
"                         USER_RECOVERY_FAIL_IO) or off (no recovery: the\n"
"                         device goes with its server)\n"
"      --no-recovery      the same as --recovery=off\n"
"      --poll USEC        queue threads poll for up to USEC before sleeping,\n"
"                         adapting to the load (default 0: never)\n"
"      --zero-copy, --no-zero-copy\n"
"                         require, or never use, zero copy: the file backend\n"
"                         reads and writes the request's own pages\n"
"                         (UBLK_F_AUTO_BUF_REG, kernel 6.16 and later); by\n"
"                         default used where kernel and backend offer it\n"
"      --batch-io         fetch and commit requests in batches (UBLK_F_BATCH_IO,\n"
"                         kernel 7.x; one thread per queue; upgrade without\n"
"                         quiesce)\n"
"      --watchdog SECS    restart a server that completes no request for\n"
"                         SECS while requests wait (default: off)\n"
"      --io-flusher on|off|require, --no-mlock, --oom-score-adj N|off\n"
"                         forward-progress protections (as for serve)\n"
"  -v, --verbose          debug output\n"
"      --log stderr|syslog|FILE  where log lines go (default: stderr in\n"
"                         the foreground, only warnings and errors unless\n"
"                         -v or the journal; syslog in the background)\n"
"\n"
"Backends: see 'ubdkit serve --help'.\n");
}

static int
bad_in (const char *cmd, const char *what, const char *arg)
{
  fprintf (stderr, "ubdkit %s: invalid %s: '%s'\n", cmd, what, arg);
  return -1;
}

static int bad (const char *what, const char *arg) { return bad_in ("add", what, arg); }

/* recover returns its exit status: 2 for a usage error. */
static int
bad_recover (const char *what, const char *arg)
{
  bad_in ("recover", what, arg);
  return 2;
}

static int
add_parse (int argc, char **argv, struct add_config *cfg)
{
  enum { O_MAX_IO = 256, O_FG, O_NO_RECOVERY, O_IOF, O_NO_MLOCK, O_OOM,
         O_WATCHDOG, O_POLL, O_RECOVERY, O_ZC, O_NO_ZC, O_QTHREADS, O_BATCH,
         O_LOG /* logging */, O_FILTER /* --filter */ };
  static const struct option opts[] = {
    { "id", required_argument, NULL, 'n' },
    { "queues", required_argument, NULL, 'q' },
    { "depth", required_argument, NULL, 'd' },
    { "max-io", required_argument, NULL, O_MAX_IO },
    { "readonly", no_argument, NULL, 'r' },
    { "foreground", no_argument, NULL, O_FG },
    { "no-recovery", no_argument, NULL, O_NO_RECOVERY },
    { "recovery", required_argument, NULL, O_RECOVERY },
    { "watchdog", required_argument, NULL, O_WATCHDOG },
    { "poll", required_argument, NULL, O_POLL },
    { "zero-copy", no_argument, NULL, O_ZC },
    { "queue-threads", required_argument, NULL, O_QTHREADS },
    { "batch-io", no_argument, NULL, O_BATCH },
    { "no-zero-copy", no_argument, NULL, O_NO_ZC },
    { "io-flusher", required_argument, NULL, O_IOF },
    { "no-mlock", no_argument, NULL, O_NO_MLOCK },
    { "oom-score-adj", required_argument, NULL, O_OOM },
    { "verbose", no_argument, NULL, 'v' },
    { "help", no_argument, NULL, 'h' },
    { "log", required_argument, NULL, O_LOG }, /* logging */
    { "filter", required_argument, NULL, O_FILTER }, /* --filter */
    { NULL, 0, NULL, 0 },
  };
  uint64_t v;
  const char *why;
  int c;

  memset (cfg, 0, sizeof *cfg);
  cfg->dev = (struct ubdev_options) {
    .id = -1, .queues = 1, .depth = 64, .max_io = 512 * 1024, .recovery = true,
    .poll_us = 0,                 /* see docs/architecture.md */
  };
  cfg->progress = progress_defaults;
  optind = 1;
  opterr = 0;
  while ((c = getopt_long (argc, argv, "n:q:d:rvh", opts, NULL)) != -1) {
    switch (c) {
    case 'n':
      if (size_parse_uint (optarg, 0, 1 << 20, &v) == -1)
        return bad ("--id", optarg);
      cfg->dev.id = v;
      break;
    case 'q':
      if (size_parse_uint (optarg, 1, 64, &v) == -1)
        return bad ("--queues (1 to 64)", optarg);
      cfg->dev.queues = v;
      break;
    case 'd':
      if (size_parse_uint (optarg, 1, UBLK_MAX_QUEUE_DEPTH, &v) == -1)
        return bad ("--depth (1 to 4096)", optarg);
      cfg->dev.depth = v;
      break;
    case O_MAX_IO:
      if (size_parse (optarg, &v, &why) == -1 || v < 4096 || v > (32u << 20) ||
          v % 4096)
        return bad ("--max-io (4k to 32M, a multiple of 4k)", optarg);
      cfg->dev.max_io = v;
      break;
    case 'r': cfg->readonly = true; break;
    case O_FG: cfg->foreground = true; break;
    case O_NO_RECOVERY: cfg->dev.recovery = false; break;
    case O_RECOVERY:
      if (strcmp (optarg, "hold") == 0)
        cfg->dev.recovery = true, cfg->dev.fail_io = false;
      else if (strcmp (optarg, "fail-io") == 0)
        cfg->dev.recovery = cfg->dev.fail_io = true;
      else if (strcmp (optarg, "off") == 0)
        cfg->dev.recovery = cfg->dev.fail_io = false;
      else
        return bad ("--recovery (hold, fail-io or off)", optarg);
      break;
    case O_WATCHDOG:
      if (size_parse_uint (optarg, 0, 86400, &v) == -1)
        return bad ("--watchdog (seconds)", optarg);
      cfg->watchdog = v;
      break;
    case O_POLL:
      if (size_parse_uint (optarg, 0, 10000, &v) == -1)
        return bad ("--poll (microseconds, 0 to 10000)", optarg);
      cfg->dev.poll_us = v;
      break;
    case O_QTHREADS:
      if (size_parse_uint (optarg, 1, 64, &v) == -1)
        return bad ("--queue-threads (1 to 64)", optarg);
      cfg->dev.threads = v;
      break;
    case O_ZC: cfg->dev.zero_copy = UBDEV_ZC_ON; break;
    case O_BATCH: cfg->dev.batch = true; break;
    case O_NO_ZC: cfg->dev.zero_copy = UBDEV_ZC_OFF; break;
    case O_IOF:
      if (progress_parse_io_flusher (optarg, &cfg->progress.io_flusher) == -1)
        return bad ("--io-flusher (on, off or require)", optarg);
      break;
    case O_NO_MLOCK: cfg->progress.mlock = false; break;
    case O_OOM:
      if (progress_parse_oom_score_adj (optarg, &cfg->progress) == -1)
        return bad ("--oom-score-adj (-1000 to 1000, or off)", optarg);
      break;
    case 'v':
      log_more_verbose ();
      break;
    /* Logging: */
    case O_LOG:
      if (logging_option ("add", optarg) == -1)
        return -1;
      break;
    case O_FILTER:                /* --filter */
#ifdef HAVE_NBDKIT
      filter_chain_add (optarg);
      break;
#else
      return bad ("--filter (ubdkit was built without nbdkit)", optarg);
#endif
    case 'h':
      add_usage ();
      return 1;
    default:
      fprintf (stderr, "ubdkit add: unknown option '%s' (see 'ubdkit add --help')\n",
               argv[optind - 1]);
      return -1;
    }
  }
  if (optind >= argc) {
    fprintf (stderr, "ubdkit add: no backend given (see 'ubdkit add --help')\n");
    return -1;
  }
  cfg->backend = argv[optind];
  cfg->params = &argv[optind + 1];
  cfg->nr_params = argc - optind - 1;
  return 0;
}

void
cmd_record_backend (uint32_t id, const char *args)
{
  char path[64];
  FILE *f;

  snprintf (path, sizeof path, UBDKIT_RUNDIR "/%u", id);
  if (!args) {
    unlink (path);
    return;
  }
  mkdir (UBDKIT_RUNDIR, 0755);
  f = fopen (path, "w");
  if (!f || fprintf (f, "%s\n", args) < 0 || fclose (f) != 0)
    log_warn ("cannot record the backend in %s: %m", path);
}

int
cmd_wait_for_end (int sfd, int done_fd, int ctl_fd, int size_fd)
{
  /* Absent descriptors (-1) are ignored by poll. */
  struct pollfd p[4] = {
    { .fd = sfd, .events = POLLIN }, { .fd = done_fd, .events = POLLIN },
    { .fd = ctl_fd, .events = POLLIN }, { .fd = size_fd, .events = POLLIN },
  };

  for (;;) {
    struct signalfd_siginfo si;

    if (poll (p, 4, -1) == -1)
      continue;
    if (p[1].revents & POLLIN) {
      log_info ("ublk: device stopped from outside");
      return 0;
    }
    if ((p[0].revents & POLLIN) && read (sfd, &si, sizeof si) == sizeof si &&
        si.ssi_signo != SIGCHLD) {
      /* Logging: SIGHUP with --log=FILE reopens it (logrotate). */
      if (si.ssi_signo == SIGHUP && log_reopen () == 1)
        continue;
      log_info ("signal %d: stopping the device", (int) si.ssi_signo);
      return 0;
    }
    if (p[2].revents & POLLIN)
      return 1;
    if (p[3].revents & POLLIN)
      return 2;
  }
}

/* Check for the module before forking, so its absence is one clear line. */
static int
check_control (void)
{
  if (access (UBCTL_PATH, F_OK) == 0)
    return 0;
  log_error ("ublk: " UBCTL_PATH " does not exist: load the ublk_drv "
             "kernel module (modprobe ublk_drv)");
  return -1;
}

/* What the options need of the kernel, checked before forking so that a
 * refusal is one clear line. */
static int
check_kernel (const struct ubdev_options *o)
{
  struct ubctl ctl;

  if (!o->fail_io || ubctl_open (&ctl) < 0)
    return 0;                   /* check_control explains a missing module */
  ubctl_close (&ctl);
  if (ctl.features & UBLK_F_USER_RECOVERY_FAIL_IO)
    return 0;
  log_error ("ublk: --recovery=fail-io: this kernel lacks "
             "USER_RECOVERY_FAIL_IO (its ublk features are 0x%llx); use "
             "--recovery=hold or off", (unsigned long long) ctl.features);
  return -1;
}

/* Daemonize (unless in the foreground), protect the supervisor, run it. */
static int
run_supervised (struct supervisor_config *sc, struct backend *b)
{
  struct progress_state ps;
  int ready_fd = -1, sfd;

  sfd = daemonize_signalfd ();
  if (sfd == -1 || check_control () == -1 || check_kernel (&sc->dev) == -1 ||
      systemd_notify_init (false) == -1)
    return 1;
  if (!sc->foreground) {
    ready_fd = daemonize_start ();
    /* The parent prints the path; nothing of ours may keep its stdout
     * (often a shell's $(...) pipe) open. */
    daemonize_detach_stdio ();
  }
  if (progress_setup (&sc->progress, &ps) == -1) {
    daemonize_ready (&ready_fd, 1, NULL);
    return 1;
  }
  return supervisor_run (sc, b, ready_fd, sfd);
}

int
cmd_add (int argc, char **argv)
{
  struct add_config cfg;
  struct backend b;
  int r = add_parse (argc, argv, &cfg);

  if (r != 0)
    return r == 1 ? 0 : 2;
  r = backend_config (&b, cfg.backend, cfg.params, cfg.nr_params,
                      cfg.readonly);
  if (r < 0) {
    backend_close (&b);
    return r == -1 ? 2 : 1;       /* usage error : run-time */
  }
  {
    struct supervisor_config sc = {
      .dev = cfg.dev, .progress = cfg.progress, .watchdog = cfg.watchdog,
      .recover_id = -1, .foreground = cfg.foreground,
    };
    r = run_supervised (&sc, &b);
  }
  backend_forget (&b);          /* the server child ran its exit callbacks */
  return r;
}

/* `ubdkit recover [OPTIONS] ID`: start a server (and supervisor) for a
 * device whose server died, with the backend recorded when it was added.
 * The options are those of add that a server, not the device, has: an
 * upgrading supervisor passes its own (supervisor.c). */
int
cmd_recover (int argc, char **argv)
{
  enum { O_FG = 256, O_WATCHDOG, O_POLL, O_IOF, O_NO_MLOCK, O_OOM,
         O_LOG /* logging */ };
  static const struct option opts[] = {
    { "foreground", no_argument, NULL, O_FG },
    { "watchdog", required_argument, NULL, O_WATCHDOG },
    { "poll", required_argument, NULL, O_POLL },
    { "io-flusher", required_argument, NULL, O_IOF },
    { "no-mlock", no_argument, NULL, O_NO_MLOCK },
    { "oom-score-adj", required_argument, NULL, O_OOM },
    { "log", required_argument, NULL, O_LOG }, /* logging */
    { NULL, 0, NULL, 0 },
  };
  struct supervisor_config sc = { .progress = progress_defaults };
  char path[64], line[4096], *words[BACKEND_MAX_PARAMS + 1];
  struct ublk_params params;
  struct backend b;
  struct ubctl ctl;
  bool readonly = false;
  uint64_t id, v;
  int n = 0, first = 0, c, r;
  FILE *f;

  optind = 1;
  opterr = 0;
  /* optind > argc: a usage error, parsing stops (getopt would read past
   * argv). */
  while (optind <= argc &&
         (c = getopt_long (argc, argv, "", opts, NULL)) != -1) {
    switch (c) {
    case O_FG: sc.foreground = true; break;
    case O_WATCHDOG:
      if (size_parse_uint (optarg, 0, 86400, &v) == -1)
        return bad_recover ("--watchdog (seconds)", optarg);
      sc.watchdog = v;
      break;
    case O_POLL:
      if (size_parse_uint (optarg, 0, 10000, &v) == -1)
        return bad_recover ("--poll (microseconds, 0 to 10000)", optarg);
      sc.dev.poll_us = v;
      break;
    case O_IOF:
      if (progress_parse_io_flusher (optarg, &sc.progress.io_flusher) == -1)
        return bad_recover ("--io-flusher (on, off or require)", optarg);
      break;
    case O_NO_MLOCK: sc.progress.mlock = false; break;
    case O_OOM:
      if (progress_parse_oom_score_adj (optarg, &sc.progress) == -1)
        return bad_recover ("--oom-score-adj (-1000 to 1000, or off)", optarg);
      break;
    /* Logging: */
    case O_LOG:
      if (logging_option ("recover", optarg) == -1)
        return 2;
      break;
    default:
      optind = argc + 1;        /* a usage error */
    }
  }
  if (optind != argc - 1 ||
      size_parse_uint (argv[optind], 0, UINT32_MAX, &id) == -1) {
    fprintf (stderr, "usage: ubdkit recover [--foreground] [--watchdog SECS] "
             "[--poll USEC] [--io-flusher on|off|require] [--no-mlock] "
             "[--oom-score-adj N|off] [--log stderr|syslog|FILE] ID\n");
    return 2;
  }
  snprintf (path, sizeof path, UBDKIT_RUNDIR "/%u", (unsigned) id);
  f = fopen (path, "r");
  if (!f || !fgets (line, sizeof line, f)) {
    fprintf (stderr, "ubdkit recover: %s: no record of the backend of device "
             "%u\n", path, (unsigned) id);
    if (f)
      fclose (f);
    return 1;
  }
  fclose (f);
  for (char *w = strtok (line, " \n"); w && n <= BACKEND_MAX_PARAMS;
       w = strtok (NULL, " \n"))
    words[n++] = w;
  /* A read-only device's backend may refuse to open for writing: the
   * kernel remembers which it is. */
  if (ubctl_open (&ctl) == 0) {
    if (ubctl_get_params (&ctl, id, &params) == 0)
      readonly = params.basic.attrs & UBLK_ATTR_READ_ONLY;
    ubctl_close (&ctl);
  }
  /* A device served through nbdkit filters has them first in its record,
   * as --filter=NAME words (plugins/nbdkit/filter.c): the chain comes back
   * with the backend, or not at all. */
  while (first < n && strncmp (words[first], "--filter=", 9) == 0) {
#ifdef HAVE_NBDKIT
    filter_chain_add (words[first++] + 9);
#else
    fprintf (stderr, "ubdkit recover: device %u was served through nbdkit "
             "filters, and this ubdkit was built without nbdkit\n",
             (unsigned) id);
    return 1;
#endif
  }
  if (first == n || backend_config (&b, words[first], words + first + 1,
                                    n - first - 1, readonly) == -1)
    return 2;
  sc.recover_id = id;
  r = run_supervised (&sc, &b);
  backend_forget (&b);
  return r;
}
