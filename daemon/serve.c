/* `ubdkit serve`: the main thread's life.
 *
 * Order matters: listeners first (so errors reach the terminal), then
 * --daemonize (fork before any thread, and before mlockall, which a child
 * does not inherit), then the forward-progress steps, then the backend
 * (whose reserved memory is then locked as it is mapped), then the loop
 * threads (which inherit the IO_FLUSHER flag), the --run command, and last
 * the drop to -u/-g (privs.c), before the first client is accepted.  The
 * main thread then only accepts connections (checking --allow/--deny)
 * and watches signals and the --run command.
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <arpa/inet.h>
#include <poll.h>
#include <signal.h>
#include <spawn.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "captive.h"              /* nbdkit compat */
#include "control.h"
#include "daemonize.h"
#include "exports.h"
#include "log.h"
#include "privs.h"
#include "serve.h"
#include "single.h"               /* nbdkit compat: -s */
#include "systemd.h"

static int
write_pidfile (const char *path)
{
  FILE *f = fopen (path, "w");

  if (!f || fprintf (f, "%d\n", (int) getpid ()) < 0 || fclose (f) != 0) {
    log_error ("--pidfile %s: %m", path);
    return -1;
  }
  return 0;
}

/* Start the --run command with posix_spawn: it uses vfork, so none of our
 * (locked) memory is copied or made copy-on-write. */
static pid_t
run_captive (const char *cmd, const struct listeners *ls, const char *uri,
             const char *export_name)
{
  char *const argv[] = { (char *) "sh", (char *) "-c", (char *) cmd, NULL };
  posix_spawnattr_t attr;
  sigset_t none;
  short flags = POSIX_SPAWN_SETSIGMASK;
  char port[16];
  pid_t pid;
  int r;

  snprintf (port, sizeof port, "%d", ls->port);
  if (setenv ("uri", uri, 1) == -1 || setenv ("nbd", uri, 1) == -1 ||
      setenv ("exportname", export_name, 1) == -1 ||
      setenv ("unixsocket", ls->unix_path ? ls->unix_path
              : ls->activated_path ? ls->activated_path : "", 1) == -1 ||
      setenv ("port", ls->port > 0 ? port : "", 1) == -1) {
    log_error ("--run: setenv: %m");
    return -1;
  }
  sigemptyset (&none);
  posix_spawnattr_init (&attr);
  posix_spawnattr_setsigmask (&attr, &none);
  captive_spawn_attr (&attr, &flags);   /* nbdkit compat: its own group */
  posix_spawnattr_setflags (&attr, flags);
  r = posix_spawn (&pid, "/bin/sh", NULL, &attr, argv, environ);
  posix_spawnattr_destroy (&attr);
  if (r) {
    log_error ("--run: /bin/sh: %s", strerror (r));
    return -1;
  }
  captive_started (pid);
  return pid;
}

/* --allow/--deny: true if the client on fd may talk to us.  A refused
 * client is closed before it sees a byte, with one (rate-limited) line. */
static bool
access_ok (const struct access_config *ac, int fd,
           const struct sockaddr_storage *ss, socklen_t len,
           unsigned long serial)
{
  const struct access_rule *rule;
  struct access_peer p;
  char who[96];

  if (ac->nr_rules == 0)
    return true;
  access_peer_get (fd, ss, len, &p);
  if (access_check (ac, &p, &rule))
    return true;
  access_peer_describe (&p, who, sizeof who);
  if (rule)
    log_ratelimited ("refused client #%lu (%s): --deny %s", serial, who,
                     rule->spec);
  else
    log_ratelimited ("refused client #%lu (%s): matches no --allow rule",
                     serial, who);
  close (fd);
  return false;
}

static void
accept_one (int lfd, const struct access_config *ac)
{
  struct sockaddr_storage ss;
  socklen_t len = sizeof ss;
  static unsigned long serial;
  char peer[64], host[INET6_ADDRSTRLEN] = "?";
  int fd = accept4 (lfd, (struct sockaddr *) &ss, &len, SOCK_CLOEXEC);
  int one = 1;

  if (fd == -1) {
    if (errno != EAGAIN && errno != EINTR && errno != ECONNABORTED)
      log_ratelimited ("accept: %m");
    return;
  }
  serial++;
  if (!access_ok (ac, fd, &ss, len, serial))
    return;
  if (ss.ss_family == AF_INET || ss.ss_family == AF_INET6) {
    void *a = ss.ss_family == AF_INET
      ? (void *) &((struct sockaddr_in *) &ss)->sin_addr
      : (void *) &((struct sockaddr_in6 *) &ss)->sin6_addr;
    int port = ntohs (ss.ss_family == AF_INET
                      ? ((struct sockaddr_in *) &ss)->sin_port
                      : ((struct sockaddr_in6 *) &ss)->sin6_port);
    setsockopt (fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof one);
    inet_ntop (ss.ss_family, a, host, sizeof host);
    snprintf (peer, sizeof peer, "#%lu %s:%d", serial, host, port);
  }
  else
    snprintf (peer, sizeof peer, "#%lu unix", serial);
  server_add_connection (fd, peer);
}

/* Serve until a signal or the --run command ends it.  Returns the exit
 * status. */
static int
main_loop (const struct listeners *ls, int sfd, pid_t child,
           const struct access_config *ac, bool single)
{
  struct pollfd pfd[17];
  size_t n = ls->n;

  for (size_t i = 0; i < n; i++)
    pfd[i] = (struct pollfd) { .fd = ls->fds[i], .events = POLLIN };
  pfd[n] = (struct pollfd) { .fd = sfd, .events = POLLIN };
  for (;;) {
    struct signalfd_siginfo si;
    int status;

    /* nbdkit compat: -s ends with its client, looked at 10 times a second. */
    if (poll (pfd, n + 1, single ? 100 : -1) == -1) {
      if (errno == EINTR)
        continue;
      log_error ("poll: %m");
      return 1;
    }
    if (single && single_done ())
      return 0;
    for (size_t i = 0; i < n; i++)
      if (pfd[i].revents & POLLIN)
        accept_one (pfd[i].fd, ac);
    if (!(pfd[n].revents & POLLIN) ||
        read (sfd, &si, sizeof si) != sizeof si)
      continue;
    if (si.ssi_signo == SIGCHLD) {
      if (child > 0 && waitpid (child, &status, WNOHANG) == child) {
        if (WIFEXITED (status))
          return WEXITSTATUS (status);
        return 128 + WTERMSIG (status);
      }
      continue;
    }
    /* Logging: SIGHUP with --log=FILE reopens it (logrotate). */
    if (si.ssi_signo == SIGHUP && log_reopen () == 1)
      continue;
    log_info ("signal %d: finishing requests in flight", (int) si.ssi_signo);
    if (child > 0)
      captive_kill (child);   /* nbdkit compat: the whole group */
    return 0;
  }
}

static void
log_exports (const struct export_set *s, const struct listeners *ls)
{
  char uri[8192];

  for (size_t i = 0; i < s->n; i++) {
    const struct backend *b = s->list[i].backend;
    listeners_uri (ls, s->list[i].name, uri, sizeof uri);
    if (b->ops->connect)        /* the size comes with each connection */
      log_info ("serving %s (%sper-connection handles) at %s", b->args,
                b->readonly ? "read-only, " : "", uri);
    else
      log_info ("serving %s (%" PRIu64 " bytes%s) at %s", b->args, b->size,
                b->readonly ? ", read-only" : "", uri);
  }
}

int
serve_run (struct serve_config *cfg)
{
  struct listeners ls;
  struct progress_state ps;
  struct export_set exports;
  char uri[8192];
  int ready_fd = -1, sfd, status, r;
  pid_t child = -1;

  /* nbdkit compat: -s takes the client's socket off fds 0 and 1 before
   * any backend code can write there. */
  if (cfg->single && single_take () == -1)
    return 1;
  /* Bad arguments fail before anything is set up. */
  r = exports_config (&exports, cfg);
  if (r < 0) {
    exports_close (&exports, false);
    return r == -1 ? 2 : 1;       /* usage error : a plugin's config failed */
  }
  sfd = daemonize_signalfd ();
  /* systemd: before --run can inherit NOTIFY_SOCKET (systemd.h). */
  if (sfd == -1 || systemd_notify_init (true) == -1 ||
      listeners_open (&ls, cfg) == -1) {
    exports_close (&exports, false);
    listeners_close (&ls);
    return 1;
  }
  if (cfg->daemonize)
    ready_fd = daemonize_start ();
  if (privs_helper_start (&cfg->access, &ls, cfg->pidfile) == -1) {
    daemonize_ready (&ready_fd, 1, NULL);
    listeners_close (&ls);
    exports_close (&exports, false);
    return 1;
  }
  if (progress_setup (&cfg->progress, &ps) == -1 ||
      exports_open (&exports) == -1 ||
      (exports_need_workers (&exports) &&
       backend_workers_start (cfg->server.workers) == -1) ||
      server_start (&cfg->server, exports.list, exports.n) == -1 ||
      (cfg->single && single_start () == -1) ||   /* nbdkit compat */
      (cfg->control && control_start (cfg->control) == -1) ||
      (cfg->pidfile && write_pidfile (cfg->pidfile) == -1)) {
    daemonize_ready (&ready_fd, 1, NULL);
    control_stop ();
    listeners_close (&ls);
    exports_close (&exports, false);
    privs_helper_finish ();
    return 1;
  }
  if (cfg->pidfile)
    privs_helper_pidfile_written ();
  listeners_uri (&ls, exports.list[0].name, uri, sizeof uri);
  /* The --run command keeps our identity (it is the invoker's own
   * command); privileges are dropped after it starts and before the first
   * client is accepted. */
  if (cfg->run)
    child = run_captive (cfg->run, &ls, uri, exports.list[0].name);
  if (privs_drop (&cfg->access, &ls, ps.mlocked) == -1) {
    if (child > 0)
      captive_kill (child);   /* nbdkit compat: the whole group */
    daemonize_ready (&ready_fd, 1, NULL);
    status = 1;
  }
  else {
    log_exports (&exports, &ls);
    log_info ("ready: loop threads %s IO_FLUSHERs",
              server_threads_io_flusher () ? "are" : "are not");
    daemonize_ready (&ready_fd, 0, NULL);
    /* systemd Type=notify: serving now, listeners bound, backends open,
     * privileges dropped.  MAINPID: --daemonize made us a new process. */
    systemd_notify ("READY=1\nSTATUS=serving %zu export%s at %s\nMAINPID=%d",
                    exports.n, exports.n == 1 ? "" : "s", uri, (int) getpid ());
    status = child == -1 && cfg->run ? 1 : main_loop (&ls, sfd, child,
                                                     &cfg->access,
                                                     cfg->single);
    systemd_notify ("STOPPING=1\nSTATUS=stopping: finishing requests in "
                    "flight");
  }

  captive_finish ();             /* nbdkit compat: the terminal back */
  listeners_close (&ls);
  control_stop ();              /* it reads the server's counters */
  server_stop ();
  backend_workers_stop ();
  exports_close (&exports, true);
  if (cfg->pidfile)
    unlink (cfg->pidfile);
  privs_helper_finish ();
  close (sfd);
  log_debug ("exit status %d", status);
  return status;
}
