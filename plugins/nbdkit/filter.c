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
 * closed.  Bare words (no key=) go to the bottom unchanged.  Per
 * connection: filter-conn.c.
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
  /* A backend with submit alone (nbd) has a blocking table for us: the
   * filters call it on workers. */
  if (ch->inner.ops->blocking)
    ch->inner.ops = ch->inner.ops->blocking;
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
  ch->listing = filter_chain_lists (ch);
  if (ch->listing)
    b->ops = &filter_listing_ops;
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

int
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

void
filter_forget (void *hv)
{
  struct filterchain *ch = hv;

  ch->forgotten = true;
}

void
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
