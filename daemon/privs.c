/* See privs.h and docs/access-control.md.
 *
 * Why a helper process: after the drop the server may no longer write to
 * the directory holding its Unix socket or pidfile (often root's, such as
 * /run), so it could not remove them at exit.  The helper is forked
 * before the backend is opened and memory locked, holds nothing but a
 * pipe, and when the pipe reaches EOF (the server exited, however it
 * died) removes those files with the original identity. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <grp.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <unistd.h>

#include "daemonize.h"
#include "log.h"
#include "privs.h"

static int helper_fd = -1;
static pid_t helper_pid = -1;

static int
resolve_one (const char *arg, bool user, unsigned *id, gid_t *pw_gid)
{
  char *end;
  unsigned long n = strtoul (arg, &end, 10);

  if (*arg >= '0' && *arg <= '9' && *end == '\0' && n < 0xffffffffUL) {
    *id = n;
    if (user && pw_gid) {
      struct passwd *pw = getpwuid (n);
      *pw_gid = pw ? pw->pw_gid : (gid_t) n;
    }
    return 0;
  }
  if (user) {
    struct passwd *pw = getpwnam (arg);
    if (pw) {
      *id = pw->pw_uid;
      *pw_gid = pw->pw_gid;
      return 0;
    }
  }
  else {
    struct group *gr = getgrnam (arg);
    if (gr) {
      *id = gr->gr_gid;
      return 0;
    }
  }
  fprintf (stderr, "ubdkit serve: %s: no such %s: '%s'\n",
           user ? "-u" : "-g", user ? "user" : "group", arg);
  return -1;
}

int
privs_resolve (struct access_config *c)
{
  unsigned id;
  gid_t pw_gid = -1;

  if (c->user) {
    if (resolve_one (c->user, true, &id, &pw_gid) == -1)
      return -1;
    c->uid = id;
    c->gid = pw_gid;            /* unless -g says otherwise */
  }
  if (c->group) {
    if (resolve_one (c->group, false, &id, NULL) == -1)
      return -1;
    c->gid = id;
  }
  return 0;
}

static void
helper_run (int fd, char *sock, char *tmpdir, const char *pidfile)
{
  char c;
  bool pid_ours = false;
  ssize_t n;

  log_set_thread_name ("cleanup");
  /* Keep no pipe of our parent's open: a shell reading the server's
   * stdout (or --daemonize's parent) must not wait for us. */
  daemonize_detach_stdio ();
  daemonize_detach_stderr ();   /* when in the background */
  for (int i = 3; i < 1024; i++)
    if (i != fd)
      close (i);
  while ((n = read (fd, &c, 1)) != 0) {
    if (n == 1 && c == 'p')
      pid_ours = true;
    else if (n == -1 && errno != EINTR)
      break;
  }
  if (sock && unlink (sock) == -1 && errno != ENOENT)
    log_warn ("unlink %s: %m", sock);
  if (tmpdir)
    rmdir (tmpdir);
  if (pid_ours && pidfile)
    unlink (pidfile);
  _exit (0);
}

int
privs_helper_start (const struct access_config *c, const struct listeners *ls,
                    const char *pidfile)
{
  int p[2];

  if (!c->user && !c->group)
    return 0;
  if (!ls->unix_path && !pidfile)
    return 0;                   /* nothing to remove */
  if (pipe2 (p, O_CLOEXEC) == -1) {
    log_error ("pipe: %m");
    return -1;
  }
  helper_pid = fork ();
  if (helper_pid == -1) {
    log_error ("fork: %m");
    close (p[0]);
    close (p[1]);
    return -1;
  }
  if (helper_pid == 0)
    helper_run (p[0], ls->unix_path, ls->tmpdir, pidfile);
  close (p[0]);
  helper_fd = p[1];
  return 0;
}

void
privs_helper_pidfile_written (void)
{
  if (helper_fd >= 0 && write (helper_fd, "p", 1) != 1)
    log_warn ("cleanup helper: %m");
}

void
privs_helper_finish (void)
{
  if (helper_fd < 0)
    return;
  close (helper_fd);
  helper_fd = -1;
  while (waitpid (helper_pid, NULL, 0) == -1 && errno == EINTR)
    ;
}

int
privs_drop (const struct access_config *c, struct listeners *ls,
            bool memlocked)
{
  uid_t uid = c->user ? c->uid : getuid ();
  gid_t gid = c->user || c->group ? c->gid : getgid ();
  struct rlimit unlimited = { RLIM_INFINITY, RLIM_INFINITY };

  if (!c->user && !c->group)
    return 0;
  /* mlockall(MCL_FUTURE) locks every later mapping, brk included; once
   * CAP_IPC_LOCK is gone the kernel holds those to RLIMIT_MEMLOCK, which
   * the memory already locked exceeds: lift it while we still may. */
  if (memlocked && setrlimit (RLIMIT_MEMLOCK, &unlimited) == -1)
    log_warn ("setrlimit(RLIMIT_MEMLOCK): %m: allocations may fail once "
              "privileges are dropped");
  /* The -U - directory is ours: give it to the new user, so the server
   * can still remove the socket and the directory itself at exit. */
  if (ls->tmpdir && chown (ls->tmpdir, uid, gid) == -1) {
    log_error ("chown %s: %m", ls->tmpdir);
    return -1;
  }
  /* Groups first: after setuid we could no longer change them. */
  if (setgroups (1, &gid) == -1 || setgid (gid) == -1) {
    log_error ("-g: setting group %u: %m", (unsigned) gid);
    return -1;
  }
  if (c->user && setuid (uid) == -1) {
    log_error ("-u: setting user %u: %m", (unsigned) uid);
    return -1;
  }
  if (getuid () != uid || geteuid () != uid || getgid () != gid ||
      getegid () != gid) {
    log_error ("privileges: still uid %u/%u gid %u/%u after the drop",
               (unsigned) getuid (), (unsigned) geteuid (),
               (unsigned) getgid (), (unsigned) getegid ());
    return -1;
  }
  if (uid != 0 && (setuid (0) == 0 || seteuid (0) == 0)) {
    log_error ("privileges: could become root again after the drop");
    return -1;
  }
  log_info ("running as uid %u gid %u", (unsigned) uid, (unsigned) gid);
  return 0;
}
