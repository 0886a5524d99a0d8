/* NBD server counters: per loop thread, one stats_block per export
 * (lib/core/stats.h), written only by that loop; connections counted by
 * the accepting thread.  The readers here run on any thread (the
 * --control socket's) between server_start and server_stop.
 */
#ifndef UBDKIT_NBD_SERVER_STATS_H
#define UBDKIT_NBD_SERVER_STATS_H

#include <stddef.h>
#include <stdint.h>

#include "stats.h"

/* Sum export I's counters over every loop, with its backend's reconnects
 * (0 past the last export). */
void server_stats_export (size_t i, struct stats_sum *sum);
/* Connections: open now, and accepted since the start. */
void server_stats_connections (uint64_t *current, uint64_t *total);
/* The whole server's counters as one JSON object ("stats" request of
 * docs/observability.md) or as text, into B. */
void server_stats_json (struct stats_buf *b);
void server_stats_text (struct stats_buf *b);

#endif
