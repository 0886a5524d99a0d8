/* See progress.h and docs/forward-progress.md. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/prctl.h>
#include <unistd.h>

#include "log.h"
#include "progress.h"

#ifndef PR_SET_IO_FLUSHER
#define PR_SET_IO_FLUSHER 57
#define PR_GET_IO_FLUSHER 58
#endif

bool
progress_thread_is_io_flusher (void)
{
  return prctl (PR_GET_IO_FLUSHER, 0, 0, 0, 0) == 1;
}

const struct progress_opts progress_defaults = {
  .io_flusher = PROGRESS_IO_FLUSHER_ON, .mlock = true,
  .oom_adjust = true, .oom_score_adj = -1000,
};

int
progress_parse_oom_score_adj (const char *s, struct progress_opts *o)
{
  char *end;
  long n;

  if (strcmp (s, "off") == 0) {
    o->oom_adjust = false;
    return 0;
  }
  n = strtol (s, &end, 10);
  if (*s == '\0' || *end || n < -1000 || n > 1000)
    return -1;
  o->oom_adjust = true;
  o->oom_score_adj = n;
  return 0;
}

int
progress_parse_io_flusher (const char *s, enum progress_io_flusher *out)
{
  if (strcmp (s, "on") == 0)
    *out = PROGRESS_IO_FLUSHER_ON;
  else if (strcmp (s, "off") == 0)
    *out = PROGRESS_IO_FLUSHER_OFF;
  else if (strcmp (s, "require") == 0)
    *out = PROGRESS_IO_FLUSHER_REQUIRE;
  else
    return -1;
  return 0;
}

static int
setup_io_flusher (enum progress_io_flusher mode, bool *ok)
{
  if (mode == PROGRESS_IO_FLUSHER_OFF) {
    log_info ("io-flusher: off (as asked): reclaim may recurse into our I/O");
    return 0;
  }
  if (prctl (PR_SET_IO_FLUSHER, 1, 0, 0, 0) == 0) {
    *ok = progress_thread_is_io_flusher ();
    log_info ("io-flusher: set (PF_MEMALLOC_NOIO|PF_LOCAL_THROTTLE)");
    return 0;
  }
  if (mode == PROGRESS_IO_FLUSHER_REQUIRE) {
    log_error ("io-flusher: prctl(PR_SET_IO_FLUSHER): %m%s; refusing to start "
               "(--io-flusher=require)",
               errno == EPERM ? " (needs CAP_SYS_RESOURCE)" : "");
    return -1;
  }
  log_warn ("io-flusher: prctl(PR_SET_IO_FLUSHER): %m%s; continuing without "
            "it: memory reclaim may deadlock on this device",
            errno == EPERM ? " (needs CAP_SYS_RESOURCE)" : "");
  return 0;
}

static void
setup_mlock (bool want, bool *ok)
{
  if (!want) {
    log_info ("mlock: off (as asked): our pages may be swapped out");
    return;
  }
  if (mlockall (MCL_CURRENT | MCL_FUTURE) == 0) {
    *ok = true;
    log_info ("mlock: all current and future memory locked");
  }
  else
    log_warn ("mlock: mlockall: %m%s; continuing with swappable memory",
              errno == ENOMEM || errno == EPERM
              ? " (needs CAP_IPC_LOCK or a larger RLIMIT_MEMLOCK)" : "");
}

static void
setup_oom (bool want, int adj, bool *ok)
{
  char buf[16];
  int fd, n;

  if (!want) {
    log_info ("oom: score adjustment off (as asked)");
    return;
  }
  n = snprintf (buf, sizeof buf, "%d\n", adj);
  fd = open ("/proc/self/oom_score_adj", O_WRONLY | O_CLOEXEC);
  if (fd >= 0 && write (fd, buf, n) == n) {
    *ok = true;
    log_info ("oom: oom_score_adj set to %d", adj);
  }
  else
    log_warn ("oom: cannot set oom_score_adj to %d: %m", adj);
  if (fd >= 0)
    close (fd);
}

int
progress_setup (const struct progress_opts *o, struct progress_state *st)
{
  memset (st, 0, sizeof *st);
  if (setup_io_flusher (o->io_flusher, &st->io_flusher) == -1)
    return -1;
  setup_mlock (o->mlock, &st->mlocked);
  setup_oom (o->oom_adjust, o->oom_score_adj, &st->oom_adjusted);
  return 0;
}
