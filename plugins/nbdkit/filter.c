/* nbdkit filters over any ubdkit backend:
 *
 *   ubdkit serve --filter=cow --filter=offset file file=disk.img offset=1M
 *
 * The first --filter is the outermost layer, as in nbdkit.  A name with a
 * '/' is a path; a short name is FILTERDIR/nbdkit-NAME-filter.so.  The
 * chain is a ubdkit backend of its own (filter_backend_ops) that the
 * option parser puts in place of the BACKEND word: backend_config calls
 * filter_config through backend_filter_hook (ubdkit/backend.h).
 *
 * The life of the chain follows nbdkit's server/filters.c: filters are
 * loaded innermost first (load); each key=value goes to the outermost
 * filter's .config, which consumes it or passes it on with next, down to
 * the bottom; config_complete runs outer to inner the same way, and when
 * it reaches the bottom the bottom backend is configured with the
 * arguments that reached it (an nbdkit plugin thus does its own config,
 * config_complete, thread_model and get_ready there, before the filters'
 * get_ready: ubdkit's backends configure in one step); the thread model
 * is the minimum over the chain; get_ready and after_fork run inner
 * first; cleanup outer first; unload inner first, after the bottom
 * closed.  Bare words (no key=) go to the bottom unchanged.
 *
 * Per connection (on a worker thread): the filters' open outer-first,
 * each opening its next layer with next_open, then prepare inner-first;
 * size, block sizes and capabilities asked once through the outermost
 * context; finalize and close outer-first at disconnect.  Requests go to
 * the outermost filter under the chain's thread model lock
 * (filter-next.c carries them down).
 */
#include <config.h>

#include <dlfcn.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "filter.h"

#ifndef NBDKIT_FILTERDIR
#error "NBDKIT_FILTERDIR must be defined (pkg-config --variable=filterdir nbdkit)"
#endif

#define N(c) ((nbdkit_next *) (c))
#define MAX_FILTERS 64

/* The --filter names given, outermost first (kept, not copied). */
static const char *filter_names[MAX_FILTERS];
static size_t nr_filter_names;

/* nbdkit's check of a filter: its API version and the exact version
 * string of the nbdkit it was built for, against the headers ubdkit was
 * built with; a name of letters, digits and '-'. */
static int
check_filter (struct nbdkit_backend *l, const struct nbdkit_filter *f)
{
  if (f->_api_version != NBDKIT_FILTER_API_VERSION) {
    log_error ("nbdkit: %s: filter is incompatible with this version of "
               "nbdkit (_api_version = %d, need %d)", l->filename,
               f->_api_version, NBDKIT_FILTER_API_VERSION);
    return -1;
  }
  if (!f->_version || strcmp (f->_version, NBDKIT_VERSION_STRING) != 0) {
    log_error ("nbdkit: %s: filter is incompatible with this version of "
               "nbdkit (_version = %s, need %s)", l->filename,
               f->_version ? f->_version : "(null)", NBDKIT_VERSION_STRING);
    return -1;
  }
  if (!f->name || !*f->name) {
    log_error ("nbdkit: %s: filter must have a .name field", l->filename);
    return -1;
  }
  for (const char *p = f->name; *p; p++)
    if (!strchr ("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
                 "0123456789-", *p)) {
      log_error ("nbdkit: %s: filter.name ('%s') field must contain only "
                 "ASCII alphanumeric characters or dashes", l->filename,
                 f->name);
      return -1;
    }
  return 0;
}

static int
load_filter (struct nbdkit_backend *l, const char *name)
{
  struct nbdkit_filter *(*init) (void);
  struct nbdkit_filter *f;

  l->filename = plughost_so_path (NBDKIT_FILTERDIR, name, "filter");
  l->dl = dlopen (l->filename, RTLD_NOW | RTLD_GLOBAL);
  if (!l->dl) {
    log_error ("nbdkit: cannot open filter: %s", dlerror ());
    return -1;
  }
  init = (struct nbdkit_filter *(*) (void)) dlsym (l->dl, "filter_init");
  if (!init) {
    log_error ("nbdkit: %s: not an nbdkit filter (no filter_init)",
               l->filename);
    return -1;
  }
  f = init ();
  if (!f) {
    log_error ("nbdkit: %s: filter registration function failed",
               l->filename);
    return -1;
  }
  if (check_filter (l, f) == -1)
    return -1;
  /* API version 6 has no struct size: the struct is the header's. */
  l->f = *f;
  if (l->f.load)
    l->f.load ();
  l->loaded = true;
  return 0;
}

/* The config chain. */

static int layer_config (struct nbdkit_backend *l, const char *key,
                         const char *value);

static int
keep (struct filterchain *ch, char *s)
{
  char **k = realloc (ch->keep, (ch->nr_keep + 1) * sizeof *k);

  if (!k || !s)
    fatal ("malloc: %m");
  ch->keep = k;
  ch->keep[ch->nr_keep++] = s;
  return 0;
}

static void
bottom_word (struct filterchain *ch, char *word)
{
  char **w = realloc (ch->words, (ch->nr_words + 1) * sizeof *w);

  if (!w || !word)
    fatal ("malloc: %m");
  ch->words = w;
  ch->words[ch->nr_words++] = word;
}

/* A filter's next: the next layer's config, or an argument for the
 * bottom. */
static int
next_config (nbdkit_backend *l, const char *key, const char *value)
{
  char *w;

  if (l->i < l->chain->nf)
    return layer_config (l, key, value);
  if (asprintf (&w, "%s=%s", key, value) == -1)
    w = NULL;
  bottom_word (l->chain, w);
  return 0;
}

static int
layer_config (struct nbdkit_backend *l, const char *key, const char *value)
{
  /* The filter said why (nbdkit_error); the chain logs the argument
   * once, not each layer it went through. */
  if (!l->f.config)
    return next_config (l + 1, key, value);
  return l->f.config (next_config, l + 1, key, value) == -1 ? -1 : 0;
}

static int
next_config_complete (nbdkit_backend *l)
{
  struct filterchain *ch = l->chain;
  int r;

  if (l->i < ch->nf) {
    if (!l->f.config_complete)
      return next_config_complete (l + 1);
    if (l->f.config_complete (next_config_complete, l + 1) == -1) {
      log_error ("nbdkit: filter %s: configuration failed "
                 "(config_complete)", l->f.name);
      return -1;
    }
    return 0;
  }
  /* The bottom: configure the backend with what reached it. */
  if (ch->inner_configured)
    return 0;
  r = backend_config (&ch->inner, ch->bottom_name, ch->words,
                      (int) ch->nr_words, ch->readonly);
  if (r < 0) {
    backend_close (&ch->inner);
    return r;
  }
  ch->inner_configured = true;
  if (ch->inner.ops->submit && !ch->inner.ops->pread) {
    log_error ("%s: this backend cannot be under a filter (it has no "
               "synchronous data path)", ch->bottom_name);
    return -1;
  }
  return 0;
}

static int
chain_thread_model (struct filterchain *ch)
{
  int model = NBDKIT_THREAD_MODEL_PARALLEL;

  if (ch->inner.ops == &plughost_backend_ops)
    model = ((struct plughost *) ch->inner.h)->model;
  for (size_t i = ch->nf; i-- > 0;) {
    struct nbdkit_backend *l = &ch->layers[i];
    if (l->f.thread_model) {
      int r = l->f.thread_model ();
      if (r == -1) {
        log_error ("nbdkit: filter %s: thread_model failed", l->f.name);
        return -1;
      }
      if (r < model)
        model = r;
    }
  }
  ch->model = model;
  log_debug ("nbdkit: filters: thread model %d", model);
  return 0;
}

static void filter_close (void *hv);

static void *
chain_new (const char *name, bool readonly)
{
  struct filterchain *ch = calloc (1, sizeof *ch);

  if (!ch)
    fatal ("calloc: %m");
  ch->nf = nr_filter_names;
  ch->layers = calloc (ch->nf + 1, sizeof *ch->layers);
  if (!ch->layers)
    fatal ("calloc: %m");
  for (size_t i = 0; i <= ch->nf; i++) {
    ch->layers[i].chain = ch;
    ch->layers[i].i = i;
  }
  ch->bottom_name = name;
  ch->readonly = readonly;
  pthread_mutex_init (&ch->lock, NULL);
  return ch;
}

/* Returns 0, -1 (a usage error) or -2 (a filter or plugin failed). */
static int
chain_configure (struct filterchain *ch, char **argv, int argc)
{
  int r;

  if (filter_check_exports () == -1)
    return -2;
  for (size_t i = ch->nf; i-- > 0;)
    if (load_filter (&ch->layers[i], filter_names[i]) == -1)
      return -2;
  for (int i = 0; i < argc; i++) {
    char *copy = strdup (argv[i]), *eq;
    keep (ch, copy);
    eq = strchr (copy, '=');
    if (eq && plughost_is_config_key (copy, eq - copy)) {
      *eq = '\0';
      if (layer_config (&ch->layers[0], copy, eq + 1) == -1) {
        log_error ("nbdkit: filters: the filter chain rejected '%s'",
                   argv[i]);
        return -2;
      }
    }
    else
      bottom_word (ch, strdup (argv[i]));
  }
  r = next_config_complete (&ch->layers[0]);
  if (r < 0)
    return r == -1 && !ch->inner_configured ? -1 : -2;
  if (chain_thread_model (ch) == -1)
    return -2;
  for (size_t i = ch->nf; i-- > 0;) {
    struct nbdkit_backend *l = &ch->layers[i];
    if (l->f.get_ready && l->f.get_ready (ch->model) == -1) {
      log_error ("nbdkit: filter %s: get_ready failed", l->f.name);
      return -2;
    }
    l->ready = true;
  }
  return 0;
}

/* The hook of backend_config: the chain, with NAME as its bottom. */
static int
filter_config (struct backend *b, const char *name, char **argv, int argc,
               bool readonly)
{
  struct filterchain *ch = chain_new (name, readonly);
  size_t len = 1;
  char *p;
  int r;

  memset (b, 0, sizeof *b);
  b->ops = &filter_backend_ops;
  b->h = ch;
  b->readonly = readonly;
  r = chain_configure (ch, argv, argc);
  if (r < 0)
    return r;
  /* "--filter=A --filter=B name arg ..." for logs and `list`. */
  for (size_t i = 0; i < ch->nf; i++)
    len += strlen (filter_names[i]) + 10;
  len += strlen (name) + 1;
  for (int i = 0; i < argc; i++)
    len += strlen (argv[i]) + 1;
  b->args = p = malloc (len);
  if (!p)
    fatal ("malloc: %m");
  *p = '\0';
  for (size_t i = 0; i < ch->nf; i++)
    p += sprintf (p, "--filter=%s ", filter_names[i]);
  p += sprintf (p, "%s", name);
  for (int i = 0; i < argc; i++)
    p += sprintf (p, " %s", argv[i]);
  return 0;
}

void
filter_chain_add (const char *name)
{
  if (nr_filter_names == MAX_FILTERS)
    fatal ("--filter: at most %d filters", MAX_FILTERS);
  filter_names[nr_filter_names++] = name;
  backend_filter_hook = filter_config;
}

/* The backend. */

static int
filter_open (void *hv)
{
  struct filterchain *ch = hv;

  if (backend_open (&ch->inner) == -1)
    return -1;
  ch->inner_opened = true;
  for (size_t i = ch->nf; i-- > 0;) {
    struct nbdkit_backend *l = &ch->layers[i];
    if (l->f.after_fork && l->f.after_fork (l + 1) == -1) {
      log_error ("nbdkit: filter %s: after_fork failed", l->f.name);
      return -1;
    }
  }
  return 0;
}

static void
filter_forget (void *hv)
{
  struct filterchain *ch = hv;

  ch->forgotten = true;
}

static void
filter_close (void *hv)
{
  struct filterchain *ch = hv;

  if (!ch->forgotten)
    for (size_t i = 0; i < ch->nf; i++) {
      struct nbdkit_backend *l = &ch->layers[i];
      if (l->ready && l->f.cleanup)
        l->f.cleanup (l + 1);
    }
  if (ch->inner_configured) {
    if (ch->forgotten)
      backend_forget (&ch->inner);
    else
      backend_close (&ch->inner);
  }
  for (size_t i = ch->nf; i-- > 0;) {
    struct nbdkit_backend *l = &ch->layers[i];
    if (l->loaded && !ch->forgotten && l->f.unload)
      l->f.unload ();
#ifndef __SANITIZE_ADDRESS__
    if (l->dl)
      dlclose (l->dl);          /* as plughost: kept mapped under ASan */
#endif
    free (l->filename);
  }
  for (size_t i = 0; i < ch->nr_keep; i++)
    free (ch->keep[i]);
  for (size_t i = 0; i < ch->nr_words; i++)
    free (ch->words[i]);
  free (ch->keep);
  free (ch->words);
  free (ch->layers);
  pthread_mutex_destroy (&ch->lock);
  free (ch);
}

static pthread_mutex_t *
lock_of (struct filterconn *fc)
{
  if (fc->ch->model <= NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS)
    return &fc->ch->lock;
  if (fc->ch->model == NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS)
    return &fc->lock;
  return NULL;
}

static void
enter (struct filterconn *fc)
{
  pthread_mutex_t *m = lock_of (fc);

  if (m)
    pthread_mutex_lock (m);
}

static int
leave (struct filterconn *fc, int r, int err)
{
  pthread_mutex_t *m = lock_of (fc);

  if (m)
    pthread_mutex_unlock (m);
  return r == -1 ? -(err > 0 ? err : EIO) : 0;
}

static int
preconnect_chain (struct filterchain *ch, nbdkit_backend *l, int readonly);

static int
next_preconnect (nbdkit_backend *l, int readonly)
{
  return preconnect_chain (l->chain, l, readonly);
}

static int
preconnect_chain (struct filterchain *ch, nbdkit_backend *l, int readonly)
{
  if (l->i == ch->nf) {
    struct backend *in = &ch->inner;
    return in->ops->preconnect
           ? in->ops->preconnect (in->h, -1, readonly) : 0;
  }
  if (l->f.preconnect)
    return l->f.preconnect (next_preconnect, l + 1, readonly);
  return next_preconnect (l + 1, readonly);
}

static int
filter_preconnect (void *hv, int peer_fd, bool readonly)
{
  struct filterchain *ch = hv;

  (void) peer_fd;
  if (preconnect_chain (ch, &ch->layers[0], readonly || ch->readonly) == -1) {
    log_error ("nbdkit: filters: preconnect refused the client");
    return -1;
  }
  return 0;
}

/* The capabilities the client sees, from the outermost context, as
 * nbdkit's handshake turns the can_* answers into NBD flags. */
static int
ask_caps (struct filterconn *fc)
{
  static const struct { enum filter_can w; uint32_t bit; int min; } map[] = {
    { FCAN_WRITE, BACKEND_CAN_WRITE, 1 },
    { FCAN_FLUSH, BACKEND_CAN_FLUSH, 1 },
    { FCAN_TRIM, BACKEND_CAN_TRIM, 1 },
    { FCAN_ZERO, BACKEND_CAN_ZERO, NBDKIT_ZERO_EMULATE },
    { FCAN_FAST_ZERO, BACKEND_CAN_FAST_ZERO, 1 },
    { FCAN_FUA, BACKEND_CAN_FUA, NBDKIT_FUA_EMULATE },
    { FCAN_MULTI_CONN, BACKEND_CAN_MULTI_CONN, 1 },
    { FCAN_CACHE, BACKEND_CAN_CACHE, NBDKIT_CACHE_EMULATE },
    { FCAN_ROTATIONAL, BACKEND_IS_ROTATIONAL, 1 },
  };

  /* Block status always works, as in nbdkit: a chain without extents
   * answers "all data" (filter-next.c). */
  fc->caps = BACKEND_CAN_EXTENTS;
  for (size_t i = 0; i < sizeof map / sizeof map[0]; i++) {
    int r = filter_next_can (fc->top, map[i].w);
    if (r == -1) {
      log_error ("nbdkit: filters: a can_* query failed");
      return -1;
    }
    if (r >= map[i].min)
      fc->caps |= map[i].bit;
  }
  /* As nbdkit's handshake: connections one at a time are no multi-conn. */
  if (fc->ch->model <= NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS)
    fc->caps &= ~BACKEND_CAN_MULTI_CONN;
  return 0;
}

static void filter_disconnect (void *cv);

static void *
filter_connect (void *hv, const char *export, bool readonly, int peer_fd,
                bool tls)
{
  struct filterchain *ch = hv;
  struct filterconn *fc = calloc (1, sizeof *fc);
  uint32_t min = 0, pref = 0, max = 0;

  (void) peer_fd; (void) tls;
  if (!fc)
    return NULL;
  fc->conn = true;
  fc->ch = ch;
  pthread_mutex_init (&fc->lock, NULL);
  enter (fc);
  fc->top = filter_ctx_open (&ch->layers[0], readonly || ch->readonly,
                             export);
  if (!fc->top || filter_ctx_prepare (fc->top) == -1)
    goto fail;
  fc->size = filter_next_get_size (fc->top);
  if (fc->size < 0) {
    log_error ("nbdkit: filters: get_size failed");
    goto fail;
  }
  if (ask_caps (fc) == -1 ||
      filter_next_block_size (fc->top, &min, &pref, &max) == -1)
    goto fail;
  fc->min_block = min ? min : 1;
  fc->pref_block = pref ? pref : 4096;
  fc->max_block = max && max < BACKEND_MAX_REQUEST ? max : BACKEND_MAX_REQUEST;
  leave (fc, 0, 0);
  return fc;

 fail:
  leave (fc, 0, 0);
  filter_disconnect (fc);
  return NULL;
}

static void
filter_disconnect (void *cv)
{
  struct filterconn *fc = cv;

  if (fc->top) {
    enter (fc);
    filter_ctx_finalize (fc->top);
    filter_ctx_close (fc->top);
    leave (fc, 0, 0);
  }
  pthread_mutex_destroy (&fc->lock);
  free (fc);
}

static uint64_t
filter_get_size (void *hv)
{
  return *(bool *) hv ? (uint64_t) ((struct filterconn *) hv)->size : 0;
}

static uint32_t
filter_get_caps (void *hv)
{
  if (*(bool *) hv)
    return ((struct filterconn *) hv)->caps;
  return ((struct filterchain *) hv)->model
         == NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS
         ? BACKEND_ONE_CONNECTION : 0;
}

static void
filter_block_size (void *hv, uint32_t *min, uint32_t *pref, uint32_t *max)
{
  struct filterconn *fc = hv;

  *min = fc->min_block;
  *pref = fc->pref_block;
  *max = fc->max_block;
}

static uint32_t
nbd_flags (uint32_t flags)
{
  return ((flags & BACKEND_FLAG_FUA) ? NBDKIT_FLAG_FUA : 0) |
         ((flags & BACKEND_FLAG_MAY_TRIM) ? NBDKIT_FLAG_MAY_TRIM : 0) |
         ((flags & BACKEND_FLAG_FAST) ? NBDKIT_FLAG_FAST_ZERO : 0) |
         ((flags & BACKEND_FLAG_REQ_ONE) ? NBDKIT_FLAG_REQ_ONE : 0);
}

#define TOP(fc) (N ((fc)->top))

static int
filter_io_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->pread (TOP (fc), buf, count, offset, 0, &err);
  return leave (fc, r, err);
}

static int
filter_io_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
                  uint32_t flags)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->pwrite (TOP (fc), buf, count, offset, nbd_flags (flags),
                        &err);
  return leave (fc, r, err);
}

static int
filter_io_flush (void *h)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->flush (TOP (fc), 0, &err);
  return leave (fc, r, err);
}

static int
filter_io_trim (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->trim (TOP (fc), count, offset, nbd_flags (flags), &err);
  return leave (fc, r, err);
}

static int
filter_io_zero (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->zero (TOP (fc), count, offset, nbd_flags (flags), &err);
  return leave (fc, r, err);
}

static int
filter_io_cache (void *h, uint32_t count, uint64_t offset)
{
  struct filterconn *fc = h;
  int err = 0, r;

  enter (fc);
  r = TOP (fc)->cache (TOP (fc), count, offset, 0, &err);
  return leave (fc, r, err);
}

static int
filter_io_extents (void *h, uint32_t count, uint64_t offset, uint32_t flags,
                   struct backend_extents *e)
{
  struct filterconn *fc = h;
  struct nbdkit_extents x;
  int err = 0, r;

  plughost_extents_wrap (&x, e);
  enter (fc);
  r = TOP (fc)->extents (TOP (fc), count, offset, nbd_flags (flags), &x,
                         &err);
  if (r == 0 && e->n == 0) {
    nbdkit_error ("extents: filter must return at least one extent");
    r = -1;
    err = EINVAL;
  }
  return leave (fc, r, err);
}

const struct backend_ops filter_backend_ops = {
  .name = "filter",
  .synopsis = "--filter=NAME BACKEND ...  an nbdkit filter chain",
  .config = NULL,               /* only through backend_filter_hook */
  .open = filter_open,
  .close = filter_close,
  .forget = filter_forget,
  .connect = filter_connect,
  .disconnect = filter_disconnect,
  .preconnect = filter_preconnect,
  .get_size = filter_get_size,
  .get_caps = filter_get_caps,
  .block_size = filter_block_size,
  .pread = filter_io_pread,
  .pwrite = filter_io_pwrite,
  .flush = filter_io_flush,
  .trim = filter_io_trim,
  .zero = filter_io_zero,
  .cache = filter_io_cache,
  .extents = filter_io_extents,
};
