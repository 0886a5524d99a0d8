/* nbdkit: host an nbdkit plugin (API version 1 or 2) as a ubdkit backend.
 *
 *   ubdkit serve nbdkit:memory size=1G
 *   ubdkit serve nbdkit:/path/to/plugin.so key=value ...
 *
 * The plugin's life follows nbdkit's call order: config stage (before any
 * fork) load, config per argument, config_complete, thread_model,
 * get_ready; open stage (after ubdkit daemonized) after_fork; then per
 * connection, on worker threads: preconnect (backend preconnect, when the
 * client connected), list_exports for NBD_OPT_LIST (backend
 * list_exports), then (backend connect) default_export, open, get_size
 * and every can_* query, asked once and cached in the connection; the
 * data callbacks; close (backend disconnect); at exit cleanup, unload,
 * dlclose.
 *
 * Thread models as nbdkit: SERIALIZE_CONNECTIONS makes the core serve one
 * connection at a time (BACKEND_ONE_CONNECTION); it and
 * SERIALIZE_ALL_REQUESTS serialize every call with the plugin's mutex,
 * SERIALIZE_REQUESTS with the connection's (plughost-io.c).
 *
 * Data callbacks return 0 or -errno; the errno of a plugin failure is
 * nbdkit's: nbdkit_set_error's value (per thread, reset before each call),
 * else errno if the plugin has errno_is_preserved, else EIO.  What nbdkit
 * emulates we emulate: FUA by a flush after the write, write-zeroes by
 * writes of zeros, cache by reads, block status by "all data".
 */
#include <config.h>

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "plughost.h"
/* nbdkit compat: -D flags. */
#include "debugflags.h"

#define MAX_REQUEST BACKEND_MAX_REQUEST   /* ubdkit's largest read or write */

#ifndef NBDKIT_PLUGINDIR
#error "NBDKIT_PLUGINDIR must be defined (pkg-config --variable=plugindir nbdkit)"
#endif



/* Loading and configuration. */

char *
plughost_so_path (const char *dir, const char *name, const char *kind)
{
  char *path;

  if (strchr (name, '/'))
    path = strdup (name);
  else if (asprintf (&path, "%s/nbdkit-%s-%s.so", dir, name, kind) == -1)
    path = NULL;
  if (!path)
    fatal ("malloc: %m");
  return path;
}

static int
check_plugin (struct plughost *h)
{
  const struct nbdkit_plugin *p = &h->p;
  const char *missing = !p->name ? "name" : !p->open ? "open"
    : !p->get_size ? "get_size" : !p->pread && !p->_pread_v1 ? "pread" : NULL;

  if (missing) {
    log_error ("nbdkit: %s: plugin must have a .%s callback", h->filename,
               missing);
    return -1;
  }
  return 0;
}

static int
plughost_load (struct plughost *h, const char *name)
{
  const struct nbdkit_plugin *(*init) (void);
  const struct nbdkit_plugin *p;

  if (!name || !*name) {
    log_error ("nbdkit: no plugin named (nbdkit:NAME or nbdkit:/path.so)");
    return -1;
  }
  if (plughost_check_exports () == -1)
    return -1;
  h->filename = plughost_so_path (NBDKIT_PLUGINDIR, name, "plugin");
  h->dl = dlopen (h->filename, RTLD_NOW | RTLD_GLOBAL);
  if (!h->dl) {
    log_error ("nbdkit: cannot open plugin: %s", dlerror ());
    return -1;
  }
  init = (const struct nbdkit_plugin *(*) (void)) dlsym (h->dl, "plugin_init");
  if (!init) {
    log_error ("nbdkit: %s: not an nbdkit plugin (no plugin_init)",
               h->filename);
    return -1;
  }
  p = init ();
  if (!p) {
    log_error ("nbdkit: %s: plugin registration function failed",
               h->filename);
    return -1;
  }
  if (p->_api_version < 1 || p->_api_version > 2) {
    log_error ("nbdkit: %s: plugin API version %d is not supported (1 or 2)",
               h->filename, p->_api_version);
    return -1;
  }
  /* An older plugin has a shorter struct: the fields it lacks stay NULL. */
  memcpy (&h->p, p, p->_struct_size < sizeof h->p ? p->_struct_size
                                                   : sizeof h->p);
  if (check_plugin (h) == -1)
    return -1;
  plughost_set_plugin_name (h->p.name);
  /* nbdkit compat: -D NAME.FLAG=N, set before load as nbdkit sets it. */
  if (plughost_debug_flags_apply (h->dl, h->p.name) == -1)
    return -1;
  if (h->p.load)
    h->p.load ();
  h->loaded = true;
  return 0;
}

bool
plughost_is_config_key (const char *s, size_t n)
{
  if (n == 0 || !((*s | 0x20) >= 'a' && (*s | 0x20) <= 'z'))
    return false;
  for (size_t i = 1; i < n; i++)
    if (!strchr ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "0123456789_-.", s[i]))
      return false;
  return true;
}

/* Plugins may keep the key and value pointers they get (eval does): in
 * nbdkit they point into argv.  Ours point into a copy of the argument
 * kept until unload. */
static int
config_one (struct plughost *h, const char *arg, size_t index)
{
  char *copy = strdup (arg), *eq;
  int r;

  if (!copy)
    fatal ("strdup: %m");
  h->words[h->nr_words++] = copy;
  if (!h->p.config) {
    log_error ("nbdkit: %s: this plugin does not need command line "
               "configuration (got '%s')", h->p.name, arg);
    return -1;
  }
  eq = strchr (copy, '=');
  if (eq && plughost_is_config_key (copy, eq - copy)) {
    *eq = '\0';
    r = h->p.config (copy, eq + 1);
  }
  else if (h->p.magic_config_key)
    r = h->p.config (h->p.magic_config_key, copy);
  /* nbdkit compat: without a magic config key, a bare first argument is
   * script=ARG (nbdkit's rule for script languages and old plugins). */
  else if (index == 0)
    r = h->p.config ("script", copy);
  else {
    log_error ("nbdkit: %s: expected key=value, got '%s'", h->p.name, arg);
    return -1;
  }
  if (r == -1)
    log_error ("nbdkit: %s: the plugin rejected '%s'", h->p.name, arg);
  return r == -1 ? -1 : 0;
}

static int
plughost_thread_model (struct plughost *h)
{
  int model = h->p._thread_model;

  if (h->p.thread_model) {
    int r = h->p.thread_model ();
    if (r == -1) {
      log_error ("nbdkit: %s: thread_model failed", h->p.name);
      return -1;
    }
    if (r < model)
      model = r;
  }
  h->model = model;
  log_debug ("nbdkit: %s: thread model %d", h->p.name, model);
  return 0;
}

static int
plughost_configure (struct plughost *h, const struct backend_param *p,
                    size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (config_one (h, p[i].value, i) == -1)
      return -1;
  if (h->p.config_complete && h->p.config_complete () == -1) {
    log_error ("nbdkit: %s: configuration failed (config_complete)",
               h->p.name);
    return -1;
  }
  plughost_set_configured ();
  if (plughost_thread_model (h) == -1)
    return -1;
  if (h->p.get_ready && h->p.get_ready () == -1) {
    log_error ("nbdkit: %s: get_ready failed", h->p.name);
    return -1;
  }
  h->ready = true;
  return 0;
}

static void plughost_close (void *hv);

/* params[0] is the plugin (the text after "nbdkit:"), the rest the
 * arguments as given (backend.h: hosts get raw words). */
static void *
plughost_config (const struct backend_param *params, size_t n, bool readonly)
{
  struct plughost *h = calloc (1, sizeof *h);

  if (!h)
    fatal ("calloc: %m");
  h->readonly = readonly;
  h->words = calloc (n, sizeof *h->words);
  if (!h->words)
    fatal ("calloc: %m");
  pthread_mutex_init (&h->lock, NULL);
  if (plughost_load (h, n > 0 ? params[0].value : NULL) == -1 ||
      plughost_configure (h, params + 1, n - 1) == -1) {
    plughost_close (h);
    return NULL;
  }
  return h;
}

/* nbdkit compat: a plugin loaded alone, for info.c. */
struct plughost *
plughost_load_alone (const char *name)
{
  struct plughost *h = calloc (1, sizeof *h);

  if (!h)
    fatal ("calloc: %m");
  pthread_mutex_init (&h->lock, NULL);
  if (plughost_load (h, name) == -1) {
    plughost_close (h);
    return NULL;
  }
  return h;
}

void
plughost_unload_alone (struct plughost *h)
{
  plughost_close (h);
}

/* The plugin's exit callbacks belong to the process that served with it,
 * as nbdkit's parent leaves them to the child it forks into the
 * background. */
static void
plughost_forget (void *hv)
{
  struct plughost *h = hv;

  h->ready = h->loaded = false;
}

static void
plughost_close (void *hv)
{
  struct plughost *h = hv;

  if (h->ready && h->p.cleanup)
    h->p.cleanup ();
  if (h->loaded && h->p.unload)
    h->p.unload ();
  plughost_set_plugin_name ("nbdkit");
  plughost_set_export_name (NULL);
  plughost_intern_free_all ();
#ifndef __SANITIZE_ADDRESS__
  /* Under ASan the plugin stays mapped: memory its globals still hold at
   * unload (a plugin's business, as in nbdkit) would otherwise be reported
   * as our leak, with no symbols.  nbdkit skips dlclose under valgrind for
   * the same reason. */
  if (h->dl)
    dlclose (h->dl);
#endif
  for (size_t i = 0; i < h->nr_words; i++)
    free (h->words[i]);
  free (h->words);
  pthread_mutex_destroy (&h->lock);
  free (h->filename);
  free (h);
}


/* The open stage: after ubdkit forked, before it serves. */

static int
plughost_open (void *hv)
{
  struct plughost *h = hv;

  if (h->p.after_fork && h->p.after_fork () == -1) {
    log_error ("nbdkit: %s: after_fork failed", h->p.name);
    return -1;
  }
  return 0;
}

/* Per connection, on a worker thread. */

/* A query's raw answer, or DFLT when the plugin has no such callback;
 * a failure (-1) is logged. */
static int
ask_raw (struct plugconn *c, const char *what, int (*fn) (void *), int dflt)
{
  int r;

  if (!fn)
    return dflt;
  r = fn (c->handle);
  if (r == -1)
    log_error ("nbdkit: %s: %s failed", c->p->name, what);
  return r;
}

/* A can_* query: the answer normalized to 0/1, or -1 if it failed. */
static int
ask (struct plugconn *c, const char *what, int (*fn) (void *), int dflt)
{
  int r = ask_raw (c, what, fn, dflt);

  return r == -1 ? -1 : r != 0;
}

/* The same for the tri-state answers (NBDKIT_FUA_*, NBDKIT_CACHE_*). */
static int
ask3 (struct plugconn *c, const char *what, int (*fn) (void *), int dflt)
{
  int r = ask_raw (c, what, fn, dflt);

  return r < 0 ? -1 : r > 2 ? 2 : r;
}

/* nbdkit's defaults: a capability the plugin does not ask about follows
 * from the callbacks it has; zero and FUA are emulated when it lacks them
 * (zero with writes, FUA with flush). */
static int
query_write_caps (struct plugconn *c, uint32_t *caps)
{
  const struct nbdkit_plugin *p = c->p;
  int trim, zero, fast, fua;

  trim = ask (c, "can_trim", p->can_trim, p->trim || p->_trim_v1);
  zero = ask (c, "can_zero", p->can_zero, p->zero || p->_zero_v1);
  if (trim == -1 || zero == -1)
    return -1;
  c->zero_mode = zero ? NBDKIT_ZERO_NATIVE : NBDKIT_ZERO_EMULATE;
  /* Without a native zero, a fast zero fails at once: that is fast. */
  fast = ask (c, "can_fast_zero", p->can_fast_zero,
              !p->zero || c->zero_mode != NBDKIT_ZERO_NATIVE);
  fua = ask3 (c, "can_fua", p->can_fua,
              p->flush || p->_flush_v1 ? NBDKIT_FUA_EMULATE : NBDKIT_FUA_NONE);
  if (fast == -1 || fua == -1)
    return -1;
  if (fua == NBDKIT_FUA_NATIVE && p->_api_version == 1)
    fua = NBDKIT_FUA_EMULATE;   /* v1 callbacks take no flags */
  c->fua_mode = fua;
  *caps |= BACKEND_CAN_WRITE | BACKEND_CAN_ZERO |
           (trim ? BACKEND_CAN_TRIM : 0) | (fast ? BACKEND_CAN_FAST_ZERO : 0) |
           (fua != NBDKIT_FUA_NONE ? BACKEND_CAN_FUA : 0);
  return 0;
}

static int
query_caps (struct plugconn *c, bool readonly)
{
  const struct nbdkit_plugin *p = c->p;
  uint32_t caps = BACKEND_CAN_EXTENTS;  /* emulated when the plugin can't */
  int write, flush, rot, mc, ext, cache;

  write = readonly ? 0 : ask (c, "can_write", p->can_write,
                              p->pwrite || p->_pwrite_v1);
  flush = ask (c, "can_flush", p->can_flush, p->flush || p->_flush_v1);
  rot = ask (c, "is_rotational", p->is_rotational, 0);
  if (write == -1 || flush == -1 || rot == -1 ||
      (write && query_write_caps (c, &caps) == -1))
    return -1;
  mc = ask (c, "can_multi_conn", p->can_multi_conn, 0);
  ext = ask (c, "can_extents", p->can_extents, p->extents != NULL);
  cache = ask3 (c, "can_cache", p->can_cache,
                p->cache ? NBDKIT_CACHE_NATIVE : NBDKIT_CACHE_NONE);
  if (mc == -1 || ext == -1 || cache == -1)
    return -1;
  c->can_extents = ext && p->extents;
  c->cache_mode = cache;
  c->caps = caps | (flush ? BACKEND_CAN_FLUSH : 0) |
            (rot ? BACKEND_IS_ROTATIONAL : 0) |
            (mc ? BACKEND_CAN_MULTI_CONN : 0) |
            (cache != NBDKIT_CACHE_NONE ? BACKEND_CAN_CACHE : 0);
  return 0;
}

static bool is_pow2 (uint32_t x) { return x && !(x & (x - 1)); }

/* The plugin's block size constraints, checked as nbdkit checks them;
 * ubdkit's own limit caps the maximum. */
static int
query_block_size (struct plugconn *c)
{
  uint32_t min = 0, pref = 0, max = 0;

  c->min_block = 1;
  c->pref_block = 4096;
  c->max_block = MAX_REQUEST;
  if (!c->p->block_size)
    return 0;
  if (c->p->block_size (c->handle, &min, &pref, &max) == -1) {
    log_error ("nbdkit: %s: block_size failed", c->p->name);
    return -1;
  }
  if (min == 0 && pref == 0 && max == 0)
    return 0;
  if (!is_pow2 (min) || min > 65536 || !is_pow2 (pref) || pref < 512 ||
      pref > MAX_REQUEST || pref < min ||
      (max != UINT32_MAX && (max < pref || max % min))) {
    log_error ("nbdkit: %s: block_size: invalid minimum %" PRIu32
               ", preferred %" PRIu32 " or maximum %" PRIu32, c->p->name,
               min, pref, max);
    return -1;
  }
  c->min_block = min;
  c->pref_block = pref;
  c->max_block = max < MAX_REQUEST ? max / min * min : MAX_REQUEST / min * min;
  return 0;
}

/* The name the export "" stands for: the plugin's default_export's
 * answer ("" without one); NULL when the plugin does not permit it. */
static const char *
default_export (const struct nbdkit_plugin *p, bool readonly, bool tls)
{
  return p->default_export ? p->default_export (readonly, tls) : "";
}

/* Before open (preconnect ran when the client connected), the export name
 * "" resolved through the plugin's default_export. */
static int
open_handle (struct plugconn *c, const char *export, bool readonly)
{
  const struct nbdkit_plugin *p = c->p;

  if (!*export) {
    export = default_export (p, readonly, c->tls);
    if (!export) {
      log_error ("nbdkit: %s: the default export (\"\") is not permitted",
                 p->name);
      return -1;
    }
  }
  /* nbdkit compat: the name goes back to the client (NBD_INFO_NAME),
   * within NBD's limit on strings, as nbdkit checks it. */
  if (strlen (export) > 4096) {
    log_error ("nbdkit: %s: default_export: the name is longer than 4096 "
               "bytes", p->name);
    return -1;
  }
  c->export_name = strdup (export);
  if (!c->export_name) {
    log_error ("nbdkit: strdup: %m");
    return -1;
  }
  plughost_set_export_name (c->export_name);
  c->handle = p->open (readonly);
  if (!c->handle) {
    log_error ("nbdkit: %s: open failed", p->name);
    return -1;
  }
  return 0;
}

/* nbdkit compat: the export's description (NBD_INFO_DESCRIPTION), asked
 * once here on the worker, so the handshake reads it without calling the
 * plugin from the loop.  Its string may be the plugin's or an
 * nbdkit_strdup_intern one freed at unload: a copy is kept. */
static int
ask_description (struct plugconn *c)
{
  const char *d;

  if (c->p->_api_version < 2 || !c->p->export_description)
    return 0;
  d = c->p->export_description (c->handle);
  if (d && !(c->description = strndup (d, 4096))) {
    log_error ("nbdkit: strdup: %m");
    return -1;
  }
  return 0;
}

static const char *
plughost_conn_name (void *cv)
{
  return ((struct plugconn *) cv)->export_name;
}

static const char *
plughost_conn_description (void *cv)
{
  return ((struct plugconn *) cv)->description;
}

/* open and the queries, under the thread model's lock. */
static int
connect_locked (struct plugconn *c, const char *export, bool readonly)
{
  if (open_handle (c, export, readonly) == -1)
    return -1;
  c->size = c->p->get_size (c->handle);
  if (c->size < 0) {
    log_error ("nbdkit: %s: get_size %s", c->p->name,
               c->size == -1 ? "failed" : "returned a negative size");
    return -1;
  }
  if (query_caps (c, readonly) == -1 || query_block_size (c) == -1 ||
      ask_description (c) == -1)
    return -1;
  log_debug ("nbdkit: %s: connection to \"%s\": size %" PRId64
             ", caps 0x%" PRIx32, c->p->name, c->export_name, c->size,
             c->caps);
  return 0;
}

static void
plughost_disconnect (void *cv)
{
  struct plugconn *c = cv;

  plughost_enter (c, false);
  if (c->handle && c->p->close)
    c->p->close (c->handle);
  plughost_leave (c, 0);
  pthread_mutex_destroy (&c->lock);
  free (c->export_name);
  free (c->description);          /* nbdkit compat */
  free (c);
}

/* The connection's own state is allocated here, at connect (never on the
 * I/O path), as the plugin's open allocates its own. */
static void *
plughost_connect (void *hv, const char *export, bool readonly, int peer_fd,
                  bool tls)
{
  struct plughost *h = hv;
  struct plugconn *c = calloc (1, sizeof *c);
  int r;

  if (!c) {
    log_error ("nbdkit: calloc: %m");
    return NULL;
  }
  c->conn = true;
  c->ph = h;
  c->p = &h->p;
  c->peer_fd = peer_fd;
  c->tls = tls;
  pthread_mutex_init (&c->lock, NULL);
  plughost_enter (c, false);
  r = connect_locked (c, export, readonly || h->readonly);
  plughost_leave (c, 0);
  if (r == -1) {
    plughost_disconnect (c);    /* close runs only if open succeeded */
    return NULL;
  }
  return c;
}

/* Calls for a connection before it has a handle (preconnect,
 * list_exports, default_export): the plugin's lock if its thread model
 * serializes more than requests, and the client's socket and TLS for
 * nbdkit_peer_* and nbdkit_is_tls. */
void
plughost_early_enter (pthread_mutex_t *lock, int model, int peer_fd,
                      bool tls)
{
  if (model <= NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
    pthread_mutex_lock (lock);
  plughost_conn_push (&(struct plughost_thread_conn) {
                        NULL, peer_fd, tls, false });
}

void
plughost_early_leave (pthread_mutex_t *lock, int model)
{
  plughost_conn_pop ();
  if (model <= NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
    pthread_mutex_unlock (lock);
}

#define early_enter(h, fd, tls) \
  plughost_early_enter (&(h)->lock, (h)->model, fd, tls)
#define early_leave(h) plughost_early_leave (&(h)->lock, (h)->model)

static int
plughost_preconnect (void *hv, int peer_fd, bool readonly)
{
  struct plughost *h = hv;
  int r = 0;

  if (!h->p.preconnect)
    return 0;
  early_enter (h, peer_fd, false);   /* before the handshake: no TLS */
  r = h->p.preconnect (readonly || h->readonly);
  early_leave (h);
  if (r == -1)
    log_error ("nbdkit: %s: preconnect refused the connection", h->p.name);
  return r == -1 ? -1 : 0;
}

/* nbdkit's listing: the plugin's list_exports, where
 * nbdkit_use_default_export (and a plugin without list_exports) stands
 * for the name default_export gives (none if it gives NULL). */
static int
list_locked (struct plughost *h, bool readonly, bool tls,
             struct nbdkit_exports *x)
{
  const char *dflt;

  if (h->p.list_exports) {
    if (h->p.list_exports (readonly, tls, x) == -1)
      return -1;
  }
  else
    nbdkit_use_default_export (x);
  if (plughost_exports_take_default (x) &&
      (dflt = default_export (&h->p, readonly, tls)) != NULL)
    return nbdkit_add_export (x, dflt, NULL);
  return 0;
}

static int
plughost_list_exports (void *hv, int peer_fd, bool readonly,
                       struct backend_conn *bc)
{
  struct plughost *h = hv;
  struct nbdkit_exports *x = nbdkit_exports_new ();
  int r;

  if (!x)
    return -EIO;
  early_enter (h, peer_fd, bc->tls);
  r = list_locked (h, readonly || h->readonly, bc->tls, x);
  early_leave (h);
  if (r == -1) {
    log_error ("nbdkit: %s: list_exports failed", h->p.name);
    r = -EIO;
  }
  for (size_t i = 0; r == 0 && i < nbdkit_exports_count (x); i++) {
    struct nbdkit_export e = nbdkit_get_export (x, i);
    r = bc->list_add (bc, e.name, e.description);
  }
  nbdkit_exports_free (x);
  return r;
}

/* For the filter chain's bottom (filter-exports.c): called from a
 * filter's default_export, inside the chain's own connection state. */
const char *
plughost_default_export (void *hv, bool readonly, bool tls)
{
  struct plughost *h = hv;
  const struct plughost_thread_conn *t = plughost_conn_get ();
  const char *s;

  early_enter (h, t->peer_fd, tls);
  s = default_export (&h->p, readonly || h->readonly, tls);
  early_leave (h);
  return s;
}

/* The backend's own handle answers only BACKEND_ONE_CONNECTION; a
 * connection's, what its plugin handle said. */
static uint64_t
plughost_get_size (void *hv)
{
  return *(bool *) hv ? (uint64_t) ((struct plugconn *) hv)->size : 0;
}

static uint32_t
plughost_get_caps (void *hv)
{
  if (*(bool *) hv)
    return ((struct plugconn *) hv)->caps;
  return ((struct plughost *) hv)->model == NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS
         ? BACKEND_ONE_CONNECTION : 0;
}

static void
plughost_block_size (void *hv, uint32_t *min, uint32_t *pref, uint32_t *max)
{
  struct plugconn *c = hv;

  *min = c->min_block;
  *pref = c->pref_block;
  *max = c->max_block;
}

const struct backend_ops plughost_backend_ops = {
  .name = "nbdkit",
  .synopsis = "nbdkit:PLUGIN [KEY=VALUE ...]  an nbdkit plugin",
  .help = "           PLUGIN is a name (nbdkit:memory loads\n"
          "           " NBDKIT_PLUGINDIR "/nbdkit-memory-plugin.so)\n"
          "           or a path; arguments go to the plugin's config.\n",
  .host = true,
  .config = plughost_config,
  .open = plughost_open,
  .close = plughost_close,
  .forget = plughost_forget,
  .connect = plughost_connect,
  .disconnect = plughost_disconnect,
  .preconnect = plughost_preconnect,
  .list_exports = plughost_list_exports,
  .get_size = plughost_get_size,
  .get_caps = plughost_get_caps,
  .block_size = plughost_block_size,
  .pread = plughost_io_pread,
  .pwrite = plughost_io_pwrite,
  .flush = plughost_io_flush,
  .trim = plughost_io_trim,
  .zero = plughost_io_zero,
  .cache = plughost_io_cache,
  .extents = plughost_io_extents,
  /* nbdkit compat: */
  .conn_name = plughost_conn_name,
  .conn_description = plughost_conn_description,
};
