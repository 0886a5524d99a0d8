/* The exports of `ubdkit serve`: the command line's BACKEND (named by -e)
 * and every -E 'NAME BACKEND [k=v ...]', each with its own backend,
 * description and read-only flag.  The first is the default export. */
#ifndef UBDKIT_DAEMON_EXPORTS_H
#define UBDKIT_DAEMON_EXPORTS_H

#include <stdbool.h>
#include <stddef.h>

#include "serve.h"

struct export_set {
  struct export *list;          /* what the server publishes */
  struct backend *backends;
  char **words;                 /* storage of the parsed -E specs */
  size_t n;
  size_t cap;                   /* entries allocated in each array */
};

/* Parse and configure every export (no resources yet).  Returns 0, or -1
 * after a one-line usage error. */
int exports_config (struct export_set *s, const struct serve_config *cfg);
/* Open every backend.  Returns 0 or -1 after logging. */
int exports_open (struct export_set *s);
bool exports_need_workers (const struct export_set *s);
/* Flush (where it can) and close every backend; free everything. */
void exports_close (struct export_set *s, bool flush);

#endif
