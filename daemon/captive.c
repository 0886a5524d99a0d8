/* The --run command's process group.
 *
 * /bin/sh -c CMD runs CMD's commands as its children: a SIGTERM to the
 * shell alone, when ubdkit is told to stop, leaves them running with
 * nobody serving them.  As nbdkit ends its captive command, ubdkit ends
 * all of it: the command runs in a process group of its own, and the
 * signal goes to the group.
 *
 * A group of its own is not the terminal's foreground group, where
 * reading the terminal stops a process (SIGTTIN): so when ubdkit holds
 * the terminal (an interactive `--run nbdsh`), it hands it to the
 * command's group, and takes it back at exit.
 */
#include <config.h>

#include <signal.h>
#include <stdbool.h>
#include <unistd.h>

#include "captive.h"

static bool gave_terminal;
static pid_t our_group;

void
captive_spawn_attr (posix_spawnattr_t *attr, short *flags)
{
  posix_spawnattr_setpgroup (attr, 0);
  *flags |= POSIX_SPAWN_SETPGROUP;
}

void
captive_started (pid_t pid)
{
  our_group = getpgrp ();
  if (isatty (STDIN_FILENO) && tcgetpgrp (STDIN_FILENO) == our_group &&
      tcsetpgrp (STDIN_FILENO, pid) == 0)
    gave_terminal = true;
}

void
captive_kill (pid_t pid)
{
  if (kill (-pid, SIGTERM) == -1)
    kill (pid, SIGTERM);
}

void
captive_finish (void)
{
  sigset_t ttou, old;

  if (!gave_terminal)
    return;
  /* A background group changing the terminal's group gets SIGTTOU:
   * blocked for the call. */
  sigemptyset (&ttou);
  sigaddset (&ttou, SIGTTOU);
  sigprocmask (SIG_BLOCK, &ttou, &old);
  tcsetpgrp (STDIN_FILENO, our_group);
  sigprocmask (SIG_SETMASK, &old, NULL);
  gave_terminal = false;
}
