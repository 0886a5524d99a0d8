/* Forward progress under memory pressure: the start-up steps that let the
 * daemon serve the kernel while the kernel is short of memory.  Run
 * progress_setup in main() before any thread exists: the IO_FLUSHER flag
 * is per thread and only inherited by threads created after it is set.
 * Each step logs one line saying what it did. */
#ifndef UBDKIT_PROGRESS_H
#define UBDKIT_PROGRESS_H

#include <stdbool.h>

enum progress_io_flusher {
  PROGRESS_IO_FLUSHER_ON,       /* try; warn and go on if refused */
  PROGRESS_IO_FLUSHER_OFF,      /* do not try (comparison runs) */
  PROGRESS_IO_FLUSHER_REQUIRE,  /* refuse to start without it */
};

struct progress_opts {
  enum progress_io_flusher io_flusher;
  bool mlock;                   /* mlockall(MCL_CURRENT|MCL_FUTURE) */
  bool oom_adjust;              /* write oom_score_adj */
  int oom_score_adj;            /* default -1000 */
};

/* What the steps achieved, for logs and `ubdkit list`. */
struct progress_state {
  bool io_flusher, mlocked, oom_adjusted;
};

/* Returns 0, or -1 after logging when a required step failed. */
int progress_setup (const struct progress_opts *o, struct progress_state *st);
/* PR_GET_IO_FLUSHER for the calling thread. */
bool progress_thread_is_io_flusher (void);
/* The defaults: IO_FLUSHER on, memory locked, oom_score_adj -1000. */
extern const struct progress_opts progress_defaults;
/* Parse --oom-score-adj: -1000..1000, or "off".  Returns 0, or -1. */
int progress_parse_oom_score_adj (const char *s, struct progress_opts *o);
/* Parse "on", "off", "require"; -1 if none. */
int progress_parse_io_flusher (const char *s, enum progress_io_flusher *out);

#endif
