/* See supervisor.h. */
#include <config.h>

#include <errno.h>
#include <poll.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/signalfd.h>
#include <sys/stat.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "daemonize.h"
#include "log.h"
#include "supervisor.h"
#include "ublk.h"

#ifndef SYS_pidfd_open
#define SYS_pidfd_open 434
#endif
#ifndef SYS_pidfd_send_signal
#define SYS_pidfd_send_signal 424
#endif
#ifndef SYS_process_mrelease
#define SYS_process_mrelease 448
#endif

/* What the server child does: serve until stopped, then exit.  Never
 * returns. */
static void __attribute__((noreturn))
server_main (const struct supervisor_config *cfg, struct backend *b,
             struct ubdev_health *health, int ready_fd, int sfd, int32_t id)
{
  static struct backend_conn bc;  /* the device is one connection */
  struct progress_state ps;
  struct ubctl ctl;
  struct ubdev *dev;
  char line[64];
  int r;

  log_set_thread_name ("server");
  /* mlockall is not inherited through fork: lock again. */
  if (progress_setup (&cfg->progress, &ps) == -1 || ubctl_open (&ctl) < 0 ||
      backend_open (b) == -1 ||
      (backend_needs_workers (b) && backend_workers_start (8) == -1) ||
      backend_connect (&bc, b, "") == -1)
    _exit (1);
  r = id >= 0 ? ubdev_recover (&dev, &ctl, id, &cfg->dev, &bc.view,
                                 health)
              : ubdev_start (&dev, &ctl, &cfg->dev, &bc.view, health);
  if (r == -1)
    _exit (1);
  cmd_record_backend (ubdev_id (dev), b->args);
  log_info ("ready: serving %s as /dev/ublkb%u (pid %d); threads %s "
            "IO_FLUSHERs", b->args, ubdev_id (dev), (int) getpid (),
            ubdev_threads_io_flusher (dev) ? "are" : "are not");
  snprintf (line, sizeof line, "/dev/ublkb%u\n", ubdev_id (dev));
  if (cfg->foreground && id < 0) {
    fputs (line, stdout);
    fflush (stdout);
  }
  daemonize_ready (&ready_fd, 0, line);
  cmd_wait_for_end (sfd, ubdev_done_fd (dev));
  cmd_record_backend (ubdev_id (dev), NULL);
  ubdev_stop (dev);
  backend_flush_at_exit (&bc.view, b->args);
  backend_disconnect (&bc);
  backend_workers_stop ();
  /* As nbdkit does at exit: a plugin's cleanup and unload run here. */
  backend_close (b);
  _exit (0);
}

static pid_t
spawn (const struct supervisor_config *cfg, struct backend *b,
       struct ubdev_health *h, int ready_fd, int sfd, int32_t id, int *pidfd)
{
  pid_t pid;

  atomic_store (&h->ready, 0);
  pid = fork ();
  if (pid == -1) {
    log_error ("fork: %m");
    return -1;
  }
  if (pid == 0)
    server_main (cfg, b, h, ready_fd, sfd, id);
  *pidfd = syscall (SYS_pidfd_open, pid, 0);
  if (*pidfd == -1)
    log_warn ("pidfd_open: %m: falling back to polling the pid");
  log_info ("supervisor: server %d started%s", (int) pid,
            id >= 0 ? " to recover the device" : "");
  return pid;
}

/* Kill a hung server and give its memory back now, not when the last
 * reference to it goes: the machine may be short of memory because of it. */
static void
kill_and_release (pid_t pid, int pidfd)
{
  if (pidfd >= 0 && syscall (SYS_pidfd_send_signal, pidfd, SIGKILL, NULL, 0) == 0) {
    if (syscall (SYS_process_mrelease, pidfd, 0) == 0)
      log_info ("supervisor: server %d killed; process_mrelease freed its "
                "memory", (int) pid);
    else
      log_info ("supervisor: server %d killed (process_mrelease: %m)",
                (int) pid);
    return;
  }
  kill (pid, SIGKILL);
  log_info ("supervisor: server %d killed", (int) pid);
}

static const char *
describe_status (int status, char *buf, size_t len)
{
  if (WIFSIGNALED (status))
    snprintf (buf, len, "killed by signal %d", WTERMSIG (status));
  else
    snprintf (buf, len, "exited with status %d", WEXITSTATUS (status));
  return buf;
}

struct watch {
  uint64_t completed;
  time_t since;                 /* when `completed` last changed */
};

/* Is the server hung: requests outstanding, none completed for long? */
static bool
watchdog_expired (const struct supervisor_config *cfg, struct ubdev_health *h,
                  struct watch *w)
{
  uint64_t started = atomic_load (&h->started);
  uint64_t completed = atomic_load (&h->completed);
  time_t now = time (NULL);

  if (completed != w->completed || started == completed) {
    w->completed = completed;
    w->since = now;
    return false;
  }
  return cfg->watchdog && now - w->since >= (time_t) cfg->watchdog;
}

int
supervisor_run (const struct supervisor_config *cfg, struct backend *b,
                int ready_fd, int sfd)
{
  struct ubdev_health *h = mmap (NULL, sizeof *h, PROT_READ | PROT_WRITE,
                                 MAP_SHARED | MAP_ANONYMOUS, -1, 0);
  struct watch w = { 0, time (NULL) };
  int32_t id = cfg->recover_id;
  bool stopping = false, ever_ready = false;
  int pidfd = -1, status, attempts = 0;
  pid_t pid;
  char why[64];

  log_set_thread_name ("supervisor");
  if (h == MAP_FAILED)
    fatal ("mmap: %m");
  pid = spawn (cfg, b, h, ready_fd, sfd, id, &pidfd);
  if (ready_fd >= 0)
    close (ready_fd);           /* the server reports; we only watch */
  while (pid > 0) {
    struct pollfd p[2] = { { .fd = sfd, .events = POLLIN },
                           { .fd = pidfd, .events = POLLIN } };
    struct signalfd_siginfo si;

    poll (p, pidfd >= 0 ? 2 : 1, 1000);
    ever_ready |= atomic_load (&h->ready);
    if ((p[0].revents & POLLIN) && read (sfd, &si, sizeof si) == sizeof si &&
        si.ssi_signo != SIGCHLD && !stopping) {
      log_info ("supervisor: signal %d: stopping server %d", (int) si.ssi_signo,
                (int) pid);
      stopping = true;
      kill (pid, SIGTERM);
    }
    if (!stopping && ever_ready && watchdog_expired (cfg, h, &w)) {
      log_warn ("supervisor: server %d completed no request for %u s",
                (int) pid, cfg->watchdog);
      kill_and_release (pid, pidfd);
    }
    if (waitpid (pid, &status, WNOHANG) != pid)
      continue;
    if (pidfd >= 0)
      close (pidfd);
    pidfd = -1;
    if (stopping || (WIFEXITED (status) && WEXITSTATUS (status) == 0))
      return 0;                 /* the device was deleted */
    log_warn ("supervisor: server %d %s", (int) pid,
              describe_status (status, why, sizeof why));
    if (!atomic_load (&h->ready) && (!ever_ready || ++attempts > 5)) {
      log_error ("supervisor: giving up");
      return 1;
    }
    if (atomic_load (&h->ready))
      attempts = 0;
    id = atomic_load (&h->dev_id);
    pid = spawn (cfg, b, h, -1, sfd, id, &pidfd);
    w = (struct watch) { atomic_load (&h->completed), time (NULL) };
  }
  return 1;
}
