/* The nbdkit plugin host: contracts between its files.
 *
 * plughost.c is the ubdkit backend that loads and drives one nbdkit plugin;
 * public.c and extents.c are the nbdkit_* functions the ubdkit executable
 * exports to that plugin (listed in nbdkit.syms, nothing else is exported).
 * Internal names use the prefix plughost_: the nbdkit_ prefix is reserved
 * for the functions plugins call.
 */
#ifndef UBDKIT_PLUGHOST_H
#define UBDKIT_PLUGHOST_H

#include <pthread.h>
#include <stdbool.h>
#include <stdint.h>

#define NBDKIT_API_VERSION 2
#define HAVE_VFPRINTF_PERCENT_M 1 /* glibc: lets the headers printf-check */
#include <nbdkit-plugin.h>
#include <nbdkit-filter.h>

#include "ubdkit/backend.h"

/* One hosted plugin: the backend handle.  Both handle types start with
 * `conn`, so get_size and get_caps can tell which one they got. */
struct plughost {
  bool conn;                    /* false */
  void *dl;
  char *filename;
  struct nbdkit_plugin p;       /* the plugin's struct, zero-extended */
  char **words;                 /* config arguments, kept until unload */
  size_t nr_words;
  bool loaded, ready, readonly;
  int model;                    /* NBDKIT_THREAD_MODEL_* */
  pthread_mutex_t lock;         /* SERIALIZE_CONNECTIONS, _ALL_REQUESTS */
};

/* One client connection (or ublk device): the per-connection handle,
 * with the plugin's answers asked once at connect and cached. */
struct plugconn {
  bool conn;                    /* true */
  struct plughost *ph;
  const struct nbdkit_plugin *p;  /* &ph->p */
  pthread_mutex_t lock;         /* SERIALIZE_REQUESTS */
  char *export_name;            /* what nbdkit_export_name returns */
  char *description;            /* nbdkit compat: export_description's */
  int peer_fd;                  /* what nbdkit_peer_* ask; -1: none */
  bool tls;                     /* what nbdkit_is_tls says */
  void *handle;                 /* the plugin's, NULL until open succeeded */
  int64_t size;
  uint32_t caps;                /* BACKEND_CAN_* */
  bool can_extents;             /* the plugin's own answer */
  int zero_mode, fua_mode, cache_mode;  /* NBDKIT_ZERO_* ... */
  uint32_t min_block, pref_block, max_block;
};

/* An extents list as plugins see it.  On the data path it writes straight
 * into the request's preallocated struct backend_extents (out points to
 * it); one made by nbdkit_extents_new owns a growable array (out == &own). */
struct nbdkit_extents {
  struct backend_extents *out;
  struct backend_extents own;
  int64_t next;                 /* where the next extent must start; -1 */
};

/* Wrap the request's extents array E for a plugin's extents callback. */
void plughost_extents_wrap (struct nbdkit_extents *x,
                            struct backend_extents *e);

/* The per-thread error of nbdkit_set_error: reset before each plugin
 * call, read after a failure. */
void plughost_error_reset (void);
int plughost_error_get (void);

/* State the public functions report; set by plughost.c. */
void plughost_set_plugin_name (const char *name);  /* kept, not copied */
void plughost_set_configured (void);               /* after config_complete */

/* The connection the calling thread runs a call for, as nbdkit_export_name,
 * nbdkit_is_tls and nbdkit_peer_* see it.  Pushed around each call for a
 * connection (a filter's, then the plugin's under it) and popped after;
 * outside, peer_fd is PLUGHOST_NO_PEER ("no connection in this thread").
 * The strings are kept, not copied. */
#define PLUGHOST_NO_PEER (-2)
struct plughost_thread_conn {
  const char *export_name;      /* NULL: none yet, as before open */
  int peer_fd;                  /* the client's socket; -1: none (ublk) */
  bool tls;                     /* the client negotiated TLS */
  bool in_request;              /* a data-path call: errors rate limited */
};
void plughost_conn_push (const struct plughost_thread_conn *s);
void plughost_conn_pop (void);
/* Calls for a client before it has a connection (preconnect before the
 * handshake, list_exports, default_export), for the plugin host and the
 * filter chain: LOCK if MODEL serializes more than requests, and the
 * client's socket and TLS for nbdkit_peer_* and nbdkit_is_tls. */
void plughost_early_enter (pthread_mutex_t *lock, int model, int peer_fd,
                           bool tls);
void plughost_early_leave (pthread_mutex_t *lock, int model);
const struct plughost_thread_conn *plughost_conn_get (void);
/* Set the current connection's export name (open learned it). */
void plughost_set_export_name (const char *name);
/* Did the list_exports that filled X call nbdkit_use_default_export?  The
 * answer is taken: the caller adds the default export's name itself. */
bool plughost_exports_take_default (struct nbdkit_exports *x);
/* The export "" stands for, for a hosted plugin H (a struct plughost):
 * its default_export's answer ("" without one), NULL if not permitted. */
const char *plughost_default_export (void *h, bool readonly, bool tls);

/* Check that the executable exports every nbdkit_* function to plugins
 * (and links them in: the table references each one).  Returns 0, or -1
 * after logging the first missing one. */
int plughost_check_exports (void);
/* The file of an nbdkit KIND ("plugin", "filter") NAME: a short name
 * (memory → DIR/nbdkit-memory-plugin.so) or, with a '/' in it, a path.
 * Allocated; never NULL. */
char *plughost_so_path (const char *dir, const char *name, const char *kind);
/* nbdkit's rule for "key=value": the key (S, N bytes) is a letter followed
 * by letters, digits, '_', '-' or '.'; anything else is a bare value (a
 * path with an '=' in it) for the magic config key. */
bool plughost_is_config_key (const char *s, size_t n);

/* Free the strings of nbdkit_*_intern: at unload, after the plugin's last
 * callback. */
void plughost_intern_free_all (void);

/* Around every call for connection H: the thread model's lock, and the
 * connection's export name and socket for nbdkit_export_name and peer_*; DATA marks a data-path
 * callback (errors rate limited).  leave returns R. */
void plughost_enter (struct plugconn *h, bool data);
int plughost_leave (struct plugconn *h, int r);

/* nbdkit compat: the informational modes (info.c) load a plugin alone,
 * without config: loaded, or NULL after logging; unload_alone runs its
 * unload. */
struct plughost *plughost_load_alone (const char *name);
void plughost_unload_alone (struct plughost *h);

/* The data-path callbacks of the backend (plughost-io.c): 0 or -errno. */
int plughost_io_pread (void *h, void *buf, uint32_t count, uint64_t offset);
int plughost_io_pwrite (void *h, const void *buf, uint32_t count,
                        uint64_t offset, uint32_t flags);
int plughost_io_flush (void *h);
int plughost_io_trim (void *h, uint32_t count, uint64_t offset,
                      uint32_t flags);
int plughost_io_zero (void *h, uint32_t count, uint64_t offset,
                      uint32_t flags);
int plughost_io_cache (void *h, uint32_t count, uint64_t offset);
int plughost_io_extents (void *h, uint32_t count, uint64_t offset,
                         uint32_t flags, struct backend_extents *e);

#endif /* UBDKIT_PLUGHOST_H */
