/* A completion on an io_uring owned by a loop or ublk queue thread: every
 * SQE's user_data points at one of these, and the thread calls
 * ev->fn(ev, cqe->res, cqe->flags) when it completes.  Shared by the
 * loops (lib/core/loop.h) and by backends that submit their own I/O. */
#ifndef UBDKIT_EVENT_H
#define UBDKIT_EVENT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct loop_event {
  void (*fn) (struct loop_event *ev, int res, uint32_t cqe_flags);
};

/* Work run later on a loop's thread (deferred, or posted from another
 * thread). */
struct loop_work {
  struct loop_work *next;
  void (*fn) (struct loop_work *w);
  bool queued;
};

#define container_of(ptr, type, member) \
  ((type *) ((char *) (ptr) - offsetof (type, member)))

#endif
