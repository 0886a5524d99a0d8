/* The nbdkit filter host (--filter): contracts between its files.
 *
 * filter.c loads the filters and runs the chain's life (config chain,
 * config_complete, thread model, get_ready, after_fork, cleanup, unload)
 * of the ubdkit backend that serves the outermost filter, whose
 * per-connection side (and tables) is filter-conn.c; filter-next.c is the
 * per-connection object model: one context per layer (nbdkit_next),
 * opened outer-first by each filter's next_open, and the next_ops every
 * filter calls, down to the bottom layer, which is any
 * ubdkit backend (an nbdkit plugin through plughost, or a native one);
 * filter-exports.c is the chain's list_exports and default_export.
 *
 * Every filter call for a connection runs inside that connection's
 * thread state (plughost_conn_push: its socket, TLS, export name), so
 * nbdkit_is_tls, nbdkit_peer_* and nbdkit_export_name answer there as in
 * plugin calls, and nbdkit_next_context_open (retry's reopen) gives the
 * bottom the same socket and TLS.
 */
#ifndef UBDKIT_FILTER_H
#define UBDKIT_FILTER_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#include "plughost.h"

struct filterchain;

/* One layer, what nbdkit_backend points to: a filter (i < nf) or the
 * bottom backend (i == nf). */
struct nbdkit_backend {
  struct filterchain *chain;
  size_t i;
  void *dl;
  char *filename;
  struct nbdkit_filter f;       /* the filter's struct (zero for the bottom) */
  bool loaded, ready;
};

struct filterchain {
  bool conn;                    /* false: tells it from a filterconn */
  size_t nf;                    /* filters; layers[nf] is the bottom */
  struct nbdkit_backend *layers;
  const char *bottom_name;      /* the BACKEND word, kept by the caller */
  char **keep;                  /* config strings filters may keep */
  size_t nr_keep;
  char **words;                 /* the arguments that reached the bottom */
  size_t nr_words;
  struct backend inner;         /* the bottom, once configured */
  bool readonly, inner_configured, inner_opened, forgotten;
  /* A layer has list_exports or default_export, or the bottom lists
   * names: the chain answers NBD_OPT_LIST and names "" itself. */
  bool listing;
  int model;                    /* NBDKIT_THREAD_MODEL_*, over the chain */
  pthread_mutex_t lock;         /* SERIALIZE_CONNECTIONS, _ALL_REQUESTS */
};

enum filter_can {
  FCAN_WRITE, FCAN_FLUSH, FCAN_ROTATIONAL, FCAN_TRIM, FCAN_ZERO,
  FCAN_FAST_ZERO, FCAN_EXTENTS, FCAN_FUA, FCAN_MULTI_CONN, FCAN_CACHE,
  FCAN_NR
};

/* One layer's context for one connection: the nbdkit_next and
 * nbdkit_context filters get.  The next_ops table comes first, as
 * nbdkit-filter.h requires. */
struct nbdkit_context {
  struct nbdkit_next_ops ops;
  struct nbdkit_backend *b;
  struct nbdkit_context *next;  /* a filter's inner context */
  void *handle;                 /* the filter's */
  bool readonly, prepared;
  int can[FCAN_NR];             /* cached answers; FCAN_UNASKED */
  int64_t size;                 /* cached; -1 */
  /* The bottom: the ubdkit backend's view for this context. */
  struct backend_conn bc;
  const struct backend *view;
  char *export;
};
#define FCAN_UNASKED (-2)

/* What a connection (or ublk device) holds: the outermost context and
 * the answers the ubdkit core caches. */
struct filterconn {
  bool conn;                    /* true */
  struct filterchain *ch;
  struct nbdkit_context *top;
  pthread_mutex_t lock;         /* SERIALIZE_REQUESTS */
  int peer_fd;                  /* the client's socket; -1: none (ublk) */
  bool tls;
  char *name;                   /* the outermost layer's export name */
  char *bottom_name;            /* what reached the bottom (export_name) */
  char *description;            /* the outermost export_description */
  int64_t size;
  uint32_t caps;
  uint32_t min_block, pref_block, max_block;
};

/* Open layer B's context (and, through the filters' next_open, those
 * below it); NULL after logging.  Prepare inner-first, finalize and
 * close outer-first. */
struct nbdkit_context *filter_ctx_open (struct nbdkit_backend *b,
                                        bool readonly, const char *export);
int filter_ctx_prepare (struct nbdkit_context *c);
int filter_ctx_finalize (struct nbdkit_context *c);
void filter_ctx_close (struct nbdkit_context *c);

/* The next_ops of a context, callable as nbdkit_next. */
int64_t filter_next_get_size (struct nbdkit_context *c);
int filter_next_can (struct nbdkit_context *c, enum filter_can which);
int filter_next_block_size (struct nbdkit_context *c, uint32_t *min,
                            uint32_t *pref, uint32_t *max);
const char *filter_next_export_description (struct nbdkit_context *c);

/* nbdkit's backend_default_export at layer L: the name "" stands for
 * there (kept by the layer that gave it), NULL if "" is not permitted.
 * Inside the connection's thread state. */
const char *filter_default_export (struct nbdkit_backend *l, bool readonly,
                                   bool tls);
/* nbdkit's backend_list_exports at layer L into X (0, or -1 after
 * nbdkit_error), nbdkit_use_default_export resolved at each layer. */
int filter_list_exports_at (struct nbdkit_backend *l, bool readonly,
                            bool tls, struct nbdkit_exports *x);
/* Does the chain CH list exports itself (see filterchain.listing)? */
bool filter_chain_lists (const struct filterchain *ch);

/* The chain's life (filter.c), for its tables (filter-conn.c). */
int filter_open (void *hv);
void filter_forget (void *hv);
void filter_close (void *hv);
/* The table of a chain that lists its exports (filterchain.listing). */
extern const struct backend_ops filter_listing_ops;

/* The filter-only exported functions, checked like plughost's. */
int filter_check_exports (void);

#endif /* UBDKIT_FILTER_H */
