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
#include "srvctl.h"
#include "supervisor.h"
#include "systemd.h"
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

/* The backend's size changed (an rbd image resized): the device follows,
 * where the kernel can update a ublk device's size (UPDATE_SIZE), in
 * whole logical blocks.  A shrink too: what was beyond is gone from the
 * backend, and reads there would fail. */
static void
follow_size (int size_fd, struct ubdev *dev, struct backend *view)
{
  uint64_t v, have, lbs = view->min_block > 512 ? 4096 : 512, cur;
  int r;

  if (read (size_fd, &v, sizeof v) != sizeof v)
    return;
  have = backend_query_size (view);
  have -= have % lbs;
  cur = __atomic_load_n (&view->size, __ATOMIC_ACQUIRE);
  if (have == cur || have == 0)
    return;
  if (!(ubdev_flags (dev) & UBLK_F_UPDATE_SIZE)) {
    log_warn ("ublk: the backend is now %" PRIu64 " bytes, the device %"
              PRIu64 ": this kernel cannot change a ublk device's size "
              "(no UPDATE_SIZE); delete and add it again", have, cur);
    return;
  }
  if (have < cur)
    log_warn ("ublk: the backend shrank from %" PRIu64 " to %" PRIu64
              " bytes: so does the device", cur, have);
  r = ubdev_resize (dev, have);
  if (r < 0)
    log_error ("ublk: UPDATE_SIZE to %" PRIu64 " bytes: %s", have,
               strerror (-r));
}

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
  int r, ctl_fd, size_fd;

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
  /* systemd Type=notify: the supervisor is the main process, we are its
   * child (the unit needs NotifyAccess=all).  Again after a recovery. */
  systemd_notify ("READY=1\nMAINPID=%d\nSTATUS=serving %s as /dev/ublkb%u",
                  (int) getppid (), b->args, ubdev_id (dev));
  ctl_fd = srvctl_listen (ubdev_id (dev));
  size_fd = b->ops->size_fd ? b->ops->size_fd (b->h) : -1;
  while ((r = cmd_wait_for_end (sfd, ubdev_done_fd (dev), ctl_fd,
                                size_fd)) > 0) {
    if (r == 2) {
      follow_size (size_fd, dev, &bc.view);
      continue;
    }
    switch (srvctl_handle (ctl_fd, dev, &bc.view)) {
    case SRVCTL_CONTINUE:
      continue;
    case SRVCTL_EXIT_NOW:
      /* As a crash would, for the kernel: the requests in flight are
       * re-issued to the next server.  The socket stays for it. */
      _exit (SERVER_EXIT_UPGRADE);
    case SRVCTL_QUIESCED:
      close (ctl_fd);
      backend_flush_at_exit (&bc.view, b->args);
      backend_disconnect (&bc);
      backend_workers_stop ();
      backend_close (b);
      _exit (SERVER_EXIT_UPGRADE);
    }
  }
  srvctl_close (ctl_fd, ubdev_id (dev));
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

/* The binary this supervisor was started from, as a path: after an
 * upgrade replaced the file, /proc/self/exe names it "PATH (deleted)",
 * and PATH is the new binary. */
static char self_path[4096];

static void
remember_self (void)
{
  ssize_t n = readlink ("/proc/self/exe", self_path, sizeof self_path - 1);
  const char *del = " (deleted)";
  size_t dl = strlen (del);

  if (n <= 0) {
    self_path[0] = '\0';
    return;
  }
  self_path[n] = '\0';
  if ((size_t) n > dl && strcmp (self_path + n - dl, del) == 0)
    self_path[n - dl] = '\0';
}

static const char *
io_flusher_word (enum progress_io_flusher m)
{
  return m == PROGRESS_IO_FLUSHER_OFF ? "off"
    : m == PROGRESS_IO_FLUSHER_REQUIRE ? "require" : "on";
}

/* The server handed device ID over for an upgrade: become `ubdkit recover
 * --foreground ID` of the binary now on disk, with our options, in this
 * process (the same pid, still detached).  Returns only if exec failed. */
static void
exec_upgrade (const struct supervisor_config *cfg, uint32_t id)
{
  char watchdog[16], poll_us[16], oom[16], devid[16];
  const char *argv[22];
  int n = 0;

  snprintf (watchdog, sizeof watchdog, "%u", cfg->watchdog);
  snprintf (poll_us, sizeof poll_us, "%u", cfg->dev.poll_us);
  snprintf (oom, sizeof oom, "%d", cfg->progress.oom_score_adj);
  snprintf (devid, sizeof devid, "%u", id);
  argv[n++] = self_path;
  argv[n++] = "recover";
  argv[n++] = "--foreground";
  argv[n++] = "--watchdog"; argv[n++] = watchdog;
  argv[n++] = "--poll"; argv[n++] = poll_us;
  argv[n++] = "--io-flusher";
  argv[n++] = io_flusher_word (cfg->progress.io_flusher);
  if (!cfg->progress.mlock)
    argv[n++] = "--no-mlock";
  argv[n++] = "--oom-score-adj";
  argv[n++] = cfg->progress.oom_adjust ? oom : "off";
  argv[n++] = "--log"; argv[n++] = log_target_spec (); /* logging */
  argv[n++] = devid;
  argv[n] = NULL;
  log_info ("supervisor: upgrade: exec %s recover %u", self_path, id);
  if (self_path[0])
    execv (self_path, (char **) argv);
  log_error ("supervisor: upgrade: exec %s: %m: recovering with the running "
             "binary instead", self_path[0] ? self_path : "(unknown path)");
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
  remember_self ();
  if (h == MAP_FAILED)
    fatal ("mmap: %m");
  pid = spawn (cfg, b, h, ready_fd, sfd, id, &pidfd);
  if (ready_fd >= 0) {
    close (ready_fd);           /* the server reports; we only watch */
    /* Logging: the server holds the caller's stderr until it reports; we
     * need it no longer (our own lines go to the --log target). */
    daemonize_detach_stderr ();
  }
  while (pid > 0) {
    struct pollfd p[2] = { { .fd = sfd, .events = POLLIN },
                           { .fd = pidfd, .events = POLLIN } };
    struct signalfd_siginfo si;

    poll (p, pidfd >= 0 ? 2 : 1, 1000);
    ever_ready |= atomic_load (&h->ready);
    if ((p[0].revents & POLLIN) && read (sfd, &si, sizeof si) == sizeof si &&
        si.ssi_signo != SIGCHLD && !stopping) {
      /* Logging: SIGHUP with --log=FILE reopens it, here and in the
       * server. */
      if (si.ssi_signo == SIGHUP && log_reopen () == 1) {
        kill (pid, SIGHUP);
        continue;
      }
      log_info ("supervisor: signal %d: stopping server %d", (int) si.ssi_signo,
                (int) pid);
      stopping = true;
      systemd_notify ("STOPPING=1\nSTATUS=stopping /dev/ublkb%d",
                      (int) atomic_load (&h->dev_id));
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
    if (WIFEXITED (status) && WEXITSTATUS (status) == SERVER_EXIT_UPGRADE) {
      id = atomic_load (&h->dev_id);
      exec_upgrade (cfg, id);
      pid = spawn (cfg, b, h, -1, sfd, id, &pidfd);
      attempts = 0;
      continue;
    }
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
