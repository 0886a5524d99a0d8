/* A ublk device served by this process.
 *
 * ubdev_start creates the device (ADD_DEV, reading back the flags the
 * kernel kept), sets its parameters from the backend, starts one thread
 * and one io_uring per hardware queue, each holding one request slot per
 * tag from its own request pool, and then starts the device (START_DEV),
 * which returns once every tag has been fetched.  The caller's thread is
 * the control thread and is never a queue thread.
 *
 * ubdev_stop stops the device (STOP_DEV: in-flight requests are served,
 * then the kernel aborts the fetches), joins the queue threads, releases
 * the character device and deletes the device.  If someone else stops the
 * device (`ubdkit del`), the queues end by themselves and the fd returned
 * by ubdev_done_fd becomes readable.
 */
#ifndef UBDKIT_UBDEV_H
#define UBDKIT_UBDEV_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include "ubdkit/backend.h"
#include "ubctl.h"

/* Zero copy (UBLK_F_AUTO_BUF_REG): off, where kernel and backend offer it,
 * or required. */
enum ubdev_zero_copy { UBDEV_ZC_AUTO, UBDEV_ZC_OFF, UBDEV_ZC_ON };

struct ubdev_options {
  int32_t id;                   /* -1: the kernel picks */
  unsigned queues, depth;
  uint32_t max_io;              /* bytes per request (and per tag buffer) */
  bool recovery;                /* create with user recovery (+reissue) */
  bool fail_io;                 /* ... failing I/O while no server runs */
  unsigned poll_us;             /* queue threads' longest adaptive poll */
  enum ubdev_zero_copy zero_copy;
  /* Threads serving each queue, tag t by thread t % threads; above 1
   * needs UBLK_F_PER_IO_DAEMON (each tag its own daemon task). */
  unsigned threads;
  bool batch;                   /* the batch protocol (UBLK_F_BATCH_IO) */
};

struct ubdev;

/* Progress counters a supervisor reads to tell a hung server from an idle
 * one; they live in memory shared with it (or are just ours). */
struct ubdev_health {
  _Atomic uint64_t started, completed;  /* requests taken / committed */
  _Atomic uint32_t dev_id;
  _Atomic int ready;                    /* the device is serving */
};

/* Returns 0 and the device, or -1 after logging (and cleaning up).
 * HEALTH may be NULL. */
int ubdev_start (struct ubdev **out, struct ubctl *ctl,
                 const struct ubdev_options *o, struct backend *b,
                 struct ubdev_health *health);
/* Re-attach to device ID whose server died (user recovery): its queues,
 * depth and flags are read from the kernel, START_USER_RECOVERY, queues
 * fetch every tag, END_USER_RECOVERY.  Requests the kernel held (or
 * re-issues) are then served by us. */
int ubdev_recover (struct ubdev **out, struct ubctl *ctl, uint32_t id,
                   const struct ubdev_options *o, struct backend *b,
                   struct ubdev_health *health);
uint32_t ubdev_id (const struct ubdev *d);
uint64_t ubdev_flags (const struct ubdev *d);
/* Readable once every queue has ended. */
int ubdev_done_fd (const struct ubdev *d);
/* Are all queue threads IO_FLUSHERs? */
bool ubdev_threads_io_flusher (const struct ubdev *d);
/* The device's counters (lib/core/stats.h), summed over its queue
 * threads, into SUM (reconnects left 0).  Any thread, while D lives. */
struct stats_sum;
void ubdev_stats (const struct ubdev *d, struct stats_sum *sum);
/* UPDATE_SIZE to BYTES (a multiple of the logical block size), with the
 * backend view's size, against which requests are checked, following.
 * Control thread only.  Returns 0 or -errno (-EOPNOTSUPP: the device was
 * created without UBLK_F_UPDATE_SIZE). */
int ubdev_resize (struct ubdev *d, uint64_t bytes);
/* Hand the device over to a later server without failing a request:
 * QUIESCE_DEV (TIMEOUT_MS for every queue to have an idle tag; 0: for
 * ever), then every request in flight is completed, the queues end and
 * the character device is released: the device stays, quiesced, for
 * ubdev_recover.  Frees D on success (0).  On failure (-errno;
 * -EOPNOTSUPP: created without UBLK_F_QUIESCE; -ETIMEDOUT: requests still
 * in flight after TIMEOUT_MS) frees nothing, and the caller should hand
 * over by exiting: the kernel may be holding new requests back already. */
int ubdev_quiesce (struct ubdev *d, unsigned timeout_ms);
/* Stop (unless already stopped), join, delete, free. */
void ubdev_stop (struct ubdev *d);

#endif
