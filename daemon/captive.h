/* The --run command's process group (daemon/captive.c). */
#ifndef UBDKIT_CAPTIVE_H
#define UBDKIT_CAPTIVE_H

#include <spawn.h>
#include <sys/types.h>

/* Before posix_spawn: the command gets a process group of its own. */
void captive_spawn_attr (posix_spawnattr_t *attr, short *flags);

/* After it started as PID: if our terminal was ours to read (we were its
 * foreground group), the command's group gets it, so it still reads the
 * terminal and ^C reaches it. */
void captive_started (pid_t pid);

/* Ending early (a signal, a failure): SIGTERM to the whole group, the
 * shell and whatever it started. */
void captive_kill (pid_t pid);

/* At exit: the terminal back to our group. */
void captive_finish (void);

#endif /* UBDKIT_CAPTIVE_H */
