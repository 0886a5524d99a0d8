#include <config.h>

#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <sys/signalfd.h>
#include <unistd.h>

#include "daemonize.h"
#include "log.h"

/* In a process that went to the background (or descends from one). */
static bool background;

int
daemonize_start (void)
{
  static const int carried[] = { SIGTERM, SIGINT, SIGHUP };
  sigset_t pending;
  int p[2];
  pid_t pid;
  char msg[512];
  ssize_t n, got = 0;

  if (pipe2 (p, O_CLOEXEC) == -1)
    fatal ("pipe: %m");
  /* A stop signal that came while starting (blocked since
   * daemonize_signalfd, e.g. an nbdkit plugin's nbdkit_shutdown in
   * get_ready) is the daemon's to act on, but a fork leaves the child
   * nothing pending: send it again there. */
  if (sigpending (&pending) == -1)
    sigemptyset (&pending);
  pid = fork ();
  if (pid == -1)
    fatal ("fork: %m");
  if (pid > 0) {
    close (p[1]);
    while ((n = read (p[0], msg + got, sizeof msg - 1 - got)) > 0)
      got += n;
    if (got == 0)
      _exit (1);                /* the child died before reporting */
    msg[got] = '\0';
    if (got > 1)
      fputs (msg + 1, stdout);
    fflush (stdout);
    _exit ((unsigned char) msg[0]);
  }
  close (p[0]);
  for (size_t i = 0; i < sizeof carried / sizeof carried[0]; i++)
    if (sigismember (&pending, carried[i]))
      raise (carried[i]);
  setsid ();
  background = true;
  log_background ();
  return p[1];
}

void
daemonize_ready (int *fd, int status, const char *line)
{
  char msg[512];

  if (*fd < 0)
    return;
  msg[0] = status;
  snprintf (msg + 1, sizeof msg - 1, "%s", line ? line : "");
  if (write (*fd, msg, 1 + strlen (msg + 1)) < 0) {
    /* The parent is gone; nothing to tell. */
  }
  close (*fd);
  *fd = -1;
  if (status == 0) {
    daemonize_detach_stdio ();
    daemonize_detach_stderr ();
  }
}

void
daemonize_detach_stdio (void)
{
  int devnull = open ("/dev/null", O_RDWR);

  if (devnull < 0)
    return;
  dup2 (devnull, STDIN_FILENO);
  dup2 (devnull, STDOUT_FILENO);
  close (devnull);
}

void
daemonize_detach_stderr (void)
{
  int devnull;

  /* --log=stderr asked for the caller's stderr, whoever holds it. */
  if (!background || log_get_target () == LOG_TARGET_STDERR)
    return;
  devnull = open ("/dev/null", O_WRONLY | O_CLOEXEC);
  if (devnull < 0)
    return;
  log_stderr_detached ();
  dup2 (devnull, STDERR_FILENO);
  close (devnull);
}

int
daemonize_signalfd (void)
{
  sigset_t mask;
  int sfd;

  signal (SIGPIPE, SIG_IGN);
  sigemptyset (&mask);
  sigaddset (&mask, SIGTERM);
  sigaddset (&mask, SIGINT);
  sigaddset (&mask, SIGHUP);
  sigaddset (&mask, SIGCHLD);
  sigprocmask (SIG_BLOCK, &mask, NULL);
  sfd = signalfd (-1, &mask, SFD_CLOEXEC);
  if (sfd == -1)
    log_error ("signalfd: %m");
  return sfd;
}
