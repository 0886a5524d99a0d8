/* See stats.h.  Everything here but stats_init runs on a reader's thread
 * (a control socket), never on the I/O path. */
#include <config.h>

#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "stats.h"

bool stats_off;

static const char *const op_names[STATS_NR_OPS] = {
  "read", "write", "flush", "trim", "zero", "cache", "block_status", "other",
};

void
stats_init (void)
{
  const char *e = getenv ("UBDKIT_STATS");

  stats_off = e && (strcmp (e, "off") == 0 || strcmp (e, "0") == 0);
}

void
stats_add (struct stats_sum *sum, const struct stats_block *s)
{
  for (unsigned i = 0; i < STATS_NR_OPS; i++) {
    sum->requests[i] += atomic_load_explicit (&s->requests[i],
                                              memory_order_relaxed);
    sum->bytes[i] += atomic_load_explicit (&s->bytes[i],
                                           memory_order_relaxed);
    sum->errors[i] += atomic_load_explicit (&s->errors[i],
                                            memory_order_relaxed);
  }
  sum->completed += atomic_load_explicit (&s->completed,
                                          memory_order_relaxed);
  sum->pool_waits += atomic_load_explicit (&s->pool_waits,
                                           memory_order_relaxed);
}

uint64_t
stats_in_flight (const struct stats_sum *sum)
{
  uint64_t n = 0;

  for (unsigned i = 0; i < STATS_NR_OPS; i++)
    n += sum->requests[i];
  return n > sum->completed ? n - sum->completed : 0;
}

void
stats_printf (struct stats_buf *b, const char *fmt, ...)
{
  va_list ap;
  int n;

  if (b->truncated)
    return;
  va_start (ap, fmt);
  n = vsnprintf (b->p + b->used, b->len - b->used, fmt, ap);
  va_end (ap);
  if (n < 0 || (size_t) n >= b->len - b->used) {
    b->truncated = true;
    b->p[b->used] = '\0';       /* whole items or none */
    return;
  }
  b->used += n;
}

void
stats_json_string (struct stats_buf *b, const char *s)
{
  stats_printf (b, "\"");
  for (; *s; s++) {
    unsigned char c = *s;
    if (c == '"' || c == '\\')
      stats_printf (b, "\\%c", c);
    else if (c < 0x20 || c == 0x7f)
      stats_printf (b, "\\u%04x", c);
    else
      stats_printf (b, "%c", c);
  }
  stats_printf (b, "\"");
}

static void
json_ops (struct stats_buf *b, const char *key, const uint64_t *v)
{
  stats_printf (b, "\"%s\":{", key);
  for (unsigned i = 0; i < STATS_NR_OPS; i++)
    stats_printf (b, "%s\"%s\":%" PRIu64, i ? "," : "", op_names[i], v[i]);
  stats_printf (b, "}");
}

void
stats_json_counters (struct stats_buf *b, const struct stats_sum *sum)
{
  stats_printf (b, "{");
  json_ops (b, "requests", sum->requests);
  stats_printf (b, ",");
  json_ops (b, "bytes", sum->bytes);
  stats_printf (b, ",");
  json_ops (b, "errors", sum->errors);
  stats_printf (b, ",\"in_flight\":%" PRIu64 ",\"pool_waits\":%" PRIu64
                ",\"reconnects\":%" PRIu64 "}", stats_in_flight (sum),
                sum->pool_waits, sum->reconnects);
}

void
stats_text_counters (struct stats_buf *b, const struct stats_sum *sum,
                     const char *indent)
{
  stats_printf (b, "%s%-13s %12s %16s %8s\n", indent, "type", "requests",
                "bytes", "errors");
  for (unsigned i = 0; i < STATS_NR_OPS; i++)
    stats_printf (b, "%s%-13s %12" PRIu64 " %16" PRIu64 " %8" PRIu64 "\n",
                  indent, op_names[i], sum->requests[i], sum->bytes[i],
                  sum->errors[i]);
  stats_printf (b, "%sin flight %" PRIu64 ", pool waits %" PRIu64
                ", reconnects %" PRIu64 "\n", indent, stats_in_flight (sum),
                sum->pool_waits, sum->reconnects);
}

void
stats_line_counters (struct stats_buf *b, const struct stats_sum *sum)
{
  uint64_t errors = 0;

  for (unsigned i = 0; i < STATS_NR_OPS; i++)
    errors += sum->errors[i];
  stats_printf (b, "reads %" PRIu64 " (%" PRIu64 " bytes) writes %" PRIu64
                " (%" PRIu64 " bytes) flushes %" PRIu64 " trims %" PRIu64
                " errors %" PRIu64 " in flight %" PRIu64 " pool waits %"
                PRIu64, sum->requests[STATS_READ], sum->bytes[STATS_READ],
                sum->requests[STATS_WRITE], sum->bytes[STATS_WRITE],
                sum->requests[STATS_FLUSH], sum->requests[STATS_TRIM], errors,
                stats_in_flight (sum), sum->pool_waits);
}
