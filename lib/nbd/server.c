/* NBD server set-up: one nbd_loop per thread, each with its request pool
 * and a fixed table of connections, all allocated before serving. */
#include <config.h>

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "internal.h"
#include "log.h"

const struct export *server_exports;
size_t server_nr_exports;

struct nbd_loop *server_loops;
unsigned server_nr_loops;
_Atomic uint64_t server_accepted;

const struct export *
server_find_export (const char *name, size_t len)
{
  if (len == 0)
    return &server_exports[0];  /* the default export */
  for (size_t i = 0; i < server_nr_exports; i++)
    if (strlen (server_exports[i].name) == len &&
        memcmp (server_exports[i].name, name, len) == 0)
      return &server_exports[i];
  /* A default export whose backend lists names of its own (an nbdkit
   * plugin) takes any name, as nbdkit gives any to its plugin's open. */
  if (server_exports[0].backend->ops->list_exports && len <= NBDP_MAX_NAME)
    return &server_exports[0];
  return NULL;
}

static void
take_connection (struct nbd_loop *nl, int fd, const char *peer)
{
  struct conn *c = nl->free_conns;

  if (nl->stopping || !c) {
    close (fd);
    atomic_fetch_sub (&nl->assigned, 1);
    return;
  }
  nl->free_conns = c->next_free;
  nl->active++;
  conn_init (c, nl, fd, peer);
  log_debug ("%s: connected", peer);
  conn_start (c);
}

/* Peer names travel with the fd through the hand-off queue in fixed
 * strings, so nothing is allocated here. */
static void
on_wake (struct loop *l)
{
  struct nbd_loop *nl = l->data;
  struct handoff batch[16];
  unsigned n;

  do {
    pthread_mutex_lock (&nl->handoff_lock);
    n = nl->nr_handoff < 16 ? nl->nr_handoff : 16;
    memcpy (batch, nl->handoff, n * sizeof *batch);
    memmove (nl->handoff, nl->handoff + n,
             (nl->nr_handoff - n) * sizeof *batch);
    nl->nr_handoff -= n;
    pthread_mutex_unlock (&nl->handoff_lock);
    for (unsigned i = 0; i < n; i++)
      take_connection (nl, batch[i].fd, batch[i].peer);
  } while (n == 16);

  if (atomic_load (&l->stop) && !nl->stopping) {
    nl->stopping = true;
    for (unsigned i = 0; i < nl->nr_conns; i++) {
      struct conn *c = &nl->conns[i];
      if (!c->in_use)
        continue;
      conn_stop_reading (c);
      /* Wake a pending recv; replies to requests in flight still go out. */
      if (c->recv_busy)
        shutdown (c->fd, c->phase == PHASE_HANDSHAKE ? SHUT_RDWR : SHUT_RD);
      conn_maybe_close (c);
    }
    if (nl->active == 0)
      l->done = true;
  }
}

/* Once a second: close connections that have not finished negotiating. */
static void arm_tick (struct nbd_loop *nl);

static void
tick (struct loop_event *ev, int res, uint32_t flags)
{
  struct nbd_loop *nl = container_of (ev, struct nbd_loop, tick_ev);
  time_t now = time (NULL);

  for (unsigned i = 0; i < nl->nr_conns; i++) {
    struct conn *c = &nl->conns[i];
    /* A connection waiting for the backend is not the client's delay. */
    if (c->in_use && !c->dead && c->phase == PHASE_HANDSHAKE &&
        !c->hs_paused && now - c->started >= (time_t) nl->handshake_timeout) {
      if (c->tls && !c->tls_up)
        log_ratelimited ("%s: TLS handshake failed: not done within %u s "
                         "(--handshake-timeout)", c->peer,
                         nl->handshake_timeout);
      else
        log_ratelimited ("%s: no export chosen within %u s "
                         "(--handshake-timeout): closing", c->peer,
                         nl->handshake_timeout);
      conn_fail (c);
    }
  }
  if (!nl->loop.done)
    arm_tick (nl);
}

static void
arm_tick (struct nbd_loop *nl)
{
  struct io_uring_sqe *sqe = loop_sqe (&nl->loop, &nl->tick_ev);

  nl->tick = (struct __kernel_timespec) { .tv_sec = 1 };
  io_uring_prep_timeout (sqe, &nl->tick, 0, 0);
}

static int
on_start (struct loop *l)
{
  arm_tick (l->data);
  return 0;
}

static int
nbd_loop_init (struct nbd_loop *nl, unsigned id, const struct server_options *o)
{
  unsigned per_loop = (o->max_connections + server_nr_loops - 1) /
                      server_nr_loops;
  char name[16];

  memset (nl, 0, sizeof *nl);
  /* Counters (stats.h): a block per export, each on its own lines. */
  nl->stats = aligned_alloc (STATS_LINE,
                             server_nr_exports * sizeof *nl->stats);
  if (!nl->stats) {
    log_error ("cannot allocate counters: %m");
    return -1;
  }
  memset (nl->stats, 0, server_nr_exports * sizeof *nl->stats);
  if (request_pool_init (&nl->pool, o->depth, sizeof (struct req),
                         o->buf_size) == -1)
    return -1;
  nl->nr_conns = per_loop;
  nl->conns = calloc (per_loop, sizeof *nl->conns);
  nl->handoff = calloc (per_loop, sizeof *nl->handoff);
  if (!nl->conns || !nl->handoff) {
    log_error ("cannot allocate %u connections: %m", per_loop);
    return -1;
  }
  for (unsigned i = per_loop; i-- > 0; ) {
    nl->conns[i].next_free = nl->free_conns;
    nl->free_conns = &nl->conns[i];
  }
  pthread_mutex_init (&nl->handoff_lock, NULL);
  atomic_init (&nl->assigned, 0);
  nl->loop.data = nl;
  /* In flight at most: a recv and a send per connection, an operation per
   * slot (a remote backend may add polls), the tick and the wake-up. */
  nl->loop.cq_entries = 2 * per_loop + o->depth + 64;
  nl->loop.poll_max_ns = o->poll_us * UINT64_C (1000);
  nl->loop.on_wake = on_wake;
  nl->loop.on_start = on_start;
  nl->tick_ev.fn = tick;
  nl->fair_share = o->depth / 2 ? o->depth / 2 : 1;
  nl->handshake_timeout = o->handshake_timeout;
  snprintf (name, sizeof name, "loop%u", id);
  /* Room for a recv and a send per connection and an I/O per slot. */
  return loop_start (&nl->loop, id, name, 2 * o->depth + 64 < 4096
                     ? 2 * o->depth + 64 : 4096);
}

int
server_start (const struct server_options *o, const struct export *exports,
              size_t nr_exports)
{
  server_exports = exports;
  server_nr_exports = nr_exports;
  if (tls_setup (&o->tls) == -1)
    return -1;
  server_nr_loops = o->threads;
  server_loops = calloc (server_nr_loops, sizeof *server_loops);
  if (!server_loops) {
    log_error ("calloc: %m");
    return -1;
  }
  for (unsigned i = 0; i < server_nr_loops; i++)
    if (nbd_loop_init (&server_loops[i], i, o) == -1)
      return -1;
  log_info ("serving with %u loop threads, %u request slots of %zu KiB each, "
            "up to %u connections", server_nr_loops, o->depth,
            o->buf_size / 1024,
            o->max_connections);
  return 0;
}

int
server_add_connection (int fd, const char *peer)
{
  struct nbd_loop *best = NULL;
  unsigned best_n = 0;

  for (unsigned i = 0; i < server_nr_loops; i++) {
    unsigned n = atomic_load (&server_loops[i].assigned);
    if (n < server_loops[i].nr_conns && (!best || n < best_n)) {
      best = &server_loops[i];
      best_n = n;
    }
  }
  if (!best) {
    log_ratelimited ("refusing connection from %s: --max-connections reached",
                     peer);
    close (fd);
    return -1;
  }
  atomic_fetch_add (&best->assigned, 1);
  /* Only this thread writes it (see stats.h). */
  atomic_store_explicit (&server_accepted, 1 +
                         atomic_load_explicit (&server_accepted,
                                               memory_order_relaxed),
                         memory_order_relaxed);
  pthread_mutex_lock (&best->handoff_lock);
  best->handoff[best->nr_handoff].fd = fd;
  snprintf (best->handoff[best->nr_handoff].peer,
            sizeof best->handoff[0].peer, "%s", peer);
  best->nr_handoff++;
  pthread_mutex_unlock (&best->handoff_lock);
  loop_wake (&best->loop);
  return 0;
}

void
server_stop (void)
{
  for (unsigned i = 0; i < server_nr_loops; i++)
    loop_stop (&server_loops[i].loop);
  for (unsigned i = 0; i < server_nr_loops; i++) {
    loop_join (&server_loops[i].loop);
    request_pool_free (&server_loops[i].pool);
    free (server_loops[i].conns);
    free (server_loops[i].handoff);
    free (server_loops[i].stats);
    pthread_mutex_destroy (&server_loops[i].handoff_lock);
  }
  free (server_loops);
  server_loops = NULL;
  server_nr_loops = 0;
  tls_cleanup ();
}

bool
server_threads_io_flusher (void)
{
  for (unsigned i = 0; i < server_nr_loops; i++)
    if (!server_loops[i].loop.io_flusher)
      return false;
  return true;
}
