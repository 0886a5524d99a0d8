/* Request counters: cheap enough to stay on.
 *
 * Each counter block has exactly one writer, the thread that owns it (an
 * NBD event loop for one export, a ublk queue thread), and sits on its own
 * cache lines, so writers never share a line.  A writer bumps a counter
 * with a relaxed load and store (no locked read-modify-write: no other
 * thread writes it); readers (the control socket's thread) load each
 * counter relaxed and sum the blocks.  A snapshot is therefore not atomic
 * across counters: in_flight, computed as requests - completed, can be off
 * by the requests that started or ended while it was taken.
 *
 * Nothing here allocates on the I/O path.  UBDKIT_STATS=off in the
 * environment turns the bumps into a (predicted) branch, for measuring
 * what they cost (bench/stats-cost.sh); building with -DUBDKIT_NO_STATS
 * removes them.
 */
#ifndef UBDKIT_STATS_H
#define UBDKIT_STATS_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* Request types, in the order of enum backend_op, then one for requests
 * whose type the server does not know (NBD only). */
enum stats_op {
  STATS_READ, STATS_WRITE, STATS_FLUSH, STATS_TRIM, STATS_ZERO, STATS_CACHE,
  STATS_BLOCK_STATUS, STATS_OTHER, STATS_NR_OPS
};

#define STATS_LINE 64

struct stats_block {
  _Atomic uint64_t requests[STATS_NR_OPS];
  _Atomic uint64_t bytes[STATS_NR_OPS];   /* as asked, errors included */
  _Atomic uint64_t errors[STATS_NR_OPS];
  _Atomic uint64_t completed;             /* requests answered */
  _Atomic uint64_t pool_waits;            /* see docs/observability.md */
} __attribute__ ((aligned (STATS_LINE)));

/* A reader's sum of blocks. */
struct stats_sum {
  uint64_t requests[STATS_NR_OPS], bytes[STATS_NR_OPS], errors[STATS_NR_OPS];
  uint64_t completed, pool_waits, reconnects;
};

extern bool stats_off;

/* Read UBDKIT_STATS once, at start-up, before any writer thread runs. */
void stats_init (void);

static inline void
stats_bump (_Atomic uint64_t *c, uint64_t n)
{
#ifndef UBDKIT_NO_STATS
  if (__builtin_expect (stats_off, 0))
    return;
  atomic_store_explicit (c, atomic_load_explicit (c, memory_order_relaxed)
                         + n, memory_order_relaxed);
#else
  (void) c; (void) n;
#endif
}

static inline void
stats_request (struct stats_block *s, unsigned op, uint64_t bytes)
{
  if (op >= STATS_NR_OPS)
    op = STATS_OTHER;
  stats_bump (&s->requests[op], 1);
  stats_bump (&s->bytes[op], bytes);
}

static inline void
stats_error (struct stats_block *s, unsigned op)
{
  stats_bump (&s->errors[op < STATS_NR_OPS ? op : STATS_OTHER], 1);
}

/* Are the counters being kept? */
static inline bool
stats_enabled (void)
{
#ifndef UBDKIT_NO_STATS
  return !stats_off;
#else
  return false;
#endif
}

/* Add block S (written by another thread) into SUM. */
void stats_add (struct stats_sum *sum, const struct stats_block *s);
/* Requests started and not yet answered (0 if a racing snapshot says
 * less). */
uint64_t stats_in_flight (const struct stats_sum *sum);

/* Output for the control sockets: text appended to a caller's buffer,
 * truncated (and marked so) when it is full.  The caller owns the
 * buffer. */
struct stats_buf {
  char *p;
  size_t len, used;
  bool truncated;
};
void stats_printf (struct stats_buf *b, const char *fmt, ...)
  __attribute__ ((format (printf, 2, 3)));
/* A JSON string (quoted, escaped). */
void stats_json_string (struct stats_buf *b, const char *s);
/* One counters object: {"requests":{...},"bytes":{...},...}. */
void stats_json_counters (struct stats_buf *b, const struct stats_sum *sum);
/* The same as indented lines of text, for people. */
void stats_text_counters (struct stats_buf *b, const struct stats_sum *sum,
                          const char *indent);
/* One line for `ubdkit list`. */
void stats_line_counters (struct stats_buf *b, const struct stats_sum *sum);

#endif
