/* See logging.h. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "log.h"
#include "logging.h"

int
logging_option (const char *cmd, const char *arg)
{
  const char *why;

  if (log_set_target (arg, &why) == 0)
    return 0;
  if (errno == EINVAL)
    fprintf (stderr, "ubdkit %s: invalid --log: '%s' (%s)\n", cmd, arg, why);
  else
    fprintf (stderr, "ubdkit %s: --log %s: %s: %s\n", cmd, arg, why,
             strerror (errno));
  return -1;
}
