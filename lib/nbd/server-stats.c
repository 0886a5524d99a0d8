/* See server-stats.h.  The blocks are allocated with their loop (server.c) and
 * freed with it; the increments live on the request path
 * (transmission.c) and stay a few relaxed stores each. */
#include <config.h>

#include <inttypes.h>
#include <string.h>

#include "internal.h"
#include "server-stats.h"

_Static_assert (STATS_READ == (int) BACKEND_OP_READ &&
                STATS_BLOCK_STATUS == (int) BACKEND_OP_EXTENTS,
                "stats_op follows enum backend_op");

void
server_stats_export (size_t i, struct stats_sum *sum)
{
  memset (sum, 0, sizeof *sum);
  if (i >= server_nr_exports)
    return;
  for (unsigned l = 0; l < server_nr_loops; l++)
    stats_add (sum, &server_loops[l].stats[i]);
  sum->reconnects = backend_reconnects (server_exports[i].backend);
}

void
server_stats_connections (uint64_t *current, uint64_t *total)
{
  *current = 0;
  for (unsigned l = 0; l < server_nr_loops; l++)
    *current += atomic_load (&server_loops[l].assigned);
  *total = atomic_load_explicit (&server_accepted, memory_order_relaxed);
}

void
server_stats_json (struct stats_buf *b)
{
  uint64_t cur, total;

  server_stats_connections (&cur, &total);
  stats_printf (b, "{\"kind\":\"serve\",\"enabled\":%s,\"connections\":"
                "{\"current\":%" PRIu64 ",\"total\":%" PRIu64 "},"
                "\"exports\":[", stats_enabled () ? "true" : "false",
                cur, total);
  for (size_t i = 0; i < server_nr_exports; i++) {
    struct stats_sum sum;
    server_stats_export (i, &sum);
    stats_printf (b, "%s{\"name\":", i ? "," : "");
    stats_json_string (b, server_exports[i].name);
    stats_printf (b, ",\"backend\":");
    stats_json_string (b, server_exports[i].backend->ops->name);
    stats_printf (b, ",\"counters\":");
    stats_json_counters (b, &sum);
    stats_printf (b, "}");
  }
  stats_printf (b, "]}\n");
}

void
server_stats_text (struct stats_buf *b)
{
  uint64_t cur, total;

  server_stats_connections (&cur, &total);
  if (!stats_enabled ())
    stats_printf (b, "counters disabled (UBDKIT_STATS=off)\n");
  stats_printf (b, "connections: %" PRIu64 " open, %" PRIu64 " in total\n",
                cur, total);
  for (size_t i = 0; i < server_nr_exports; i++) {
    struct stats_sum sum;
    server_stats_export (i, &sum);
    stats_printf (b, "export '%s' (%s):\n", server_exports[i].name,
                  server_exports[i].backend->ops->name);
    stats_text_counters (b, &sum, "  ");
  }
}
