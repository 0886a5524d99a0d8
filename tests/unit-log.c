/* lib/core/log.c's syslog target: the datagram format (PRI from facility
 * daemon and the level, "ubdkit[PID]: THREAD: message"), %m, long lines
 * cut to one datagram, and that a full socket never blocks the logger:
 * lines are dropped and counted, and the count is logged once lines go
 * through again. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include "log.h"
#include "unit.h"

static int
next (int s, char *buf, size_t len)
{
  ssize_t n = recv (s, buf, len - 1, MSG_DONTWAIT);

  buf[n > 0 ? n : 0] = '\0';
  return n;
}

int
main (void)
{
  char dir[] = "/tmp/unit-log.XXXXXX", path[64], want[128], buf[4096];
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  const char *why;
  int s, small = 4096, n, lines, lost;

  if (!mkdtemp (dir))
    return 99;
  snprintf (path, sizeof path, "%s/log", dir);
  snprintf (sa.sun_path, sizeof sa.sun_path, "%s", path);
  s = socket (AF_UNIX, SOCK_DGRAM, 0);
  if (s < 0 || bind (s, (struct sockaddr *) &sa, sizeof sa) == -1)
    return 99;
  setsockopt (s, SOL_SOCKET, SO_RCVBUF, &small, sizeof small);
  setenv ("UBDKIT_SYSLOG_SOCKET", path, 1);
  CHECK (log_set_target ("syslog", &why) == 0);
  CHECK (log_get_target () == LOG_TARGET_SYSLOG);
  CHECK (strcmp (log_target_spec (), "syslog") == 0);
  CHECK (log_set_target ("stderr", &why) == -1);   /* given twice */
  log_stderr_detached ();       /* keep the test's stderr quiet */
  log_set_thread_name ("unit");

  log_error ("e %d", 1);
  snprintf (want, sizeof want, "<27>ubdkit[%d]: unit: e 1", (int) getpid ());
  CHECK (next (s, buf, sizeof buf) > 0 && strcmp (buf, want) == 0);
  log_warn ("w");
  CHECK (next (s, buf, sizeof buf) > 0 && strstr (buf, "<28>ubdkit[") == buf);
  log_info ("i");
  CHECK (next (s, buf, sizeof buf) > 0 && strstr (buf, "<30>ubdkit[") == buf);
  log_more_verbose ();
  log_debug ("d");
  CHECK (next (s, buf, sizeof buf) > 0 && strstr (buf, "<31>ubdkit[") == buf);
  errno = ENOENT;
  log_info ("x: %m");
  CHECK (next (s, buf, sizeof buf) > 0 &&
         strstr (buf, ": unit: x: No such file or directory"));
  CHECK (errno == ENOENT);      /* logging keeps errno */
  memset (want, 'a', 100);
  want[100] = '\0';
  log_info ("%s%s%s%s%s%s%s%s%s%s%s%s", want, want, want, want, want, want,
            want, want, want, want, want, want);
  n = next (s, buf, sizeof buf);
  CHECK (n > 1000 && n < 1200 && buf[n - 1] == 'a');

  /* Nobody reads: the logger must neither block nor lose count. */
  for (int i = 0; i < 2000; i++)
    log_info ("flood line %d with some text to fill the buffer faster", i);
  lines = 0;
  while (next (s, buf, sizeof buf) > 0)
    lines++;
  CHECK (lines > 0 && lines < 2000);
  log_info ("after");
  CHECK (next (s, buf, sizeof buf) > 0 && strstr (buf, ": unit: after"));
  CHECK (next (s, buf, sizeof buf) > 0 &&
         sscanf (strstr (buf, ": unit: ") + 8, "%d earlier lines were lost",
                 &lost) == 1 && strstr (buf, "<28>") == buf);
  CHECK (lines + lost == 2000);
  fprintf (stderr, "flood of 2000 lines on a full socket: %d sent, %d lost "
           "and counted\n", lines, lost);

  close (s);
  unlink (path);
  rmdir (dir);
  UNIT_EXIT ();
}
