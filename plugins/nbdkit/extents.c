/* The lists nbdkit plugins fill: extents (for block status) and exports
 * (for list_exports), with nbdkit 1.32's rules.
 *
 * Extents must be added in ascending, contiguous order; the first one must
 * cover the start of the range asked about; what falls outside the range is
 * clipped or ignored, and neighbours of the same type merge.  On the data
 * path the list writes straight into the request's preallocated array
 * (plughost_extents_wrap), so a block status request allocates nothing;
 * when that array is full further extents are ignored, as nbdkit ignores
 * them past its own cap: what was added is a valid prefix of the answer.
 *
 * Filters make lists of their own per request (offset, truncate,
 * partition, retry ... copy their next layer's answer through one, and
 * nbdkit_extents_full and _aligned make more): a freed list is kept, with
 * its array, for the thread's next nbdkit_extents_new, so that after the
 * first requests block status through those filters allocates nothing.
 * A thread's kept lists are freed when it exits.
 */
#include <config.h>

#include <assert.h>
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>

#include "plughost.h"

_Static_assert (NBDKIT_EXTENT_HOLE == BACKEND_EXTENT_HOLE &&
                NBDKIT_EXTENT_ZERO == BACKEND_EXTENT_ZERO,
                "extent types are passed through unchanged");

#define MAX_EXTENTS (1024 * 1024)     /* nbdkit's cap for its own lists */
#define MAX_EXPORTS 10000
#define MAX_STRING 4096               /* NBD's limit on names */
#define KEPT_LISTS 4                  /* per thread: lists alive at once */
#define KEPT_MAX 1024                 /* extents: larger arrays are freed */

static __thread struct nbdkit_extents *kept[KEPT_LISTS];
static __thread size_t nr_kept;
static pthread_key_t kept_key;        /* its destructor frees them */
static pthread_once_t kept_once = PTHREAD_ONCE_INIT;

static void
kept_free (void *unused)
{
  (void) unused;
  while (nr_kept > 0) {
    struct nbdkit_extents *x = kept[--nr_kept];
    free (x->own.v);
    free (x);
  }
}

static void
kept_init (void)
{
  if (pthread_key_create (&kept_key, kept_free) != 0)
    kept_key = (pthread_key_t) -1;
}

/* Keep X for this thread's next list; false if it must be freed. */
static bool
keep_list (struct nbdkit_extents *x)
{
  if (nr_kept == KEPT_LISTS || x->own.max > KEPT_MAX)
    return false;
  pthread_once (&kept_once, kept_init);
  if (kept_key == (pthread_key_t) -1)
    return false;
  /* Set (it does not allocate for the first keys) so that the
   * destructor runs at this thread's exit. */
  if (pthread_getspecific (kept_key) == NULL &&
      pthread_setspecific (kept_key, kept) != 0)
    return false;
  kept[nr_kept++] = x;
  return true;
}

void
plughost_extents_wrap (struct nbdkit_extents *x, struct backend_extents *e)
{
  memset (x, 0, sizeof *x);
  x->out = e;
  x->next = -1;
}

struct nbdkit_extents *
nbdkit_extents_new (uint64_t start, uint64_t end)
{
  struct nbdkit_extents *x;

  if (start > INT64_MAX || end > INT64_MAX) {
    nbdkit_error ("nbdkit_extents_new: start (%" PRIu64 ") or end (%" PRIu64
                  ") > INT64_MAX", start, end);
    errno = ERANGE;
    return NULL;
  }
  if (start > end) {
    nbdkit_error ("nbdkit_extents_new: start (%" PRIu64 ") >= end (%" PRIu64
                  ")", start, end);
    errno = ERANGE;
    return NULL;
  }
  if (nr_kept > 0) {
    x = kept[--nr_kept];
    x->own.n = 0;
  }
  else if (!(x = calloc (1, sizeof *x))) {
    nbdkit_error ("nbdkit_extents_new: malloc: %m");
    return NULL;
  }
  x->own.start = start;
  x->own.end = end;
  x->out = &x->own;
  x->next = -1;
  return x;
}

void
nbdkit_extents_free (struct nbdkit_extents *x)
{
  if (x && !keep_list (x)) {
    free (x->own.v);
    free (x);
  }
}

size_t
nbdkit_extents_count (const struct nbdkit_extents *x)
{
  return x->out->n;
}

struct nbdkit_extent
nbdkit_get_extent (const struct nbdkit_extents *x, size_t i)
{
  const struct backend_extent *e;

  assert (i < x->out->n);
  e = &x->out->v[i];
  return (struct nbdkit_extent) { e->offset, e->length, e->type };
}

/* Make room in a list of our own; 0, or -1 when it may not grow. */
static int
grow (struct nbdkit_extents *x)
{
  size_t max = x->own.max ? x->own.max * 2 : 16;
  struct backend_extent *v;

  if (x->out != &x->own || x->own.max >= MAX_EXTENTS)
    return -1;
  v = realloc (x->own.v, max * sizeof *v);
  if (!v)
    return -1;
  x->own.v = v;
  x->own.max = max;
  return 0;
}

int
nbdkit_add_extent (struct nbdkit_extents *x, uint64_t offset,
                   uint64_t length, uint32_t type)
{
  struct backend_extents *e = x->out;

  if (x->next >= 0 && (uint64_t) x->next != offset) {
    nbdkit_error ("nbdkit_add_extent: extents must be added in ascending "
                  "order and must be contiguous");
    errno = ERANGE;
    return -1;
  }
  x->next = offset + length;
  if (length == 0 || offset >= e->end)
    return 0;
  if (e->n == 0 && offset > e->start) {
    nbdkit_error ("nbdkit_add_extent: first extent must not be > start (%"
                  PRIu64 ")", e->start);
    errno = ERANGE;
    return -1;
  }
  /* backend_extents_add clips to [start, end) and merges; when full, the
   * list ignores the rest (see the top of the file). */
  while (backend_extents_add (e, offset, length, type) == 1)
    if (grow (x) == -1)
      return 0;
  return 0;
}

/* Exports. */

struct nbdkit_exports {
  struct nbdkit_export *v;
  size_t n, max;
  bool use_default;
};

struct nbdkit_exports *
nbdkit_exports_new (void)
{
  struct nbdkit_exports *x = calloc (1, sizeof *x);

  if (!x)
    nbdkit_error ("nbdkit_exports_new: malloc: %m");
  return x;
}

void
nbdkit_exports_free (struct nbdkit_exports *x)
{
  if (!x)
    return;
  for (size_t i = 0; i < x->n; i++) {
    free (x->v[i].name);
    free (x->v[i].description);
  }
  free (x->v);
  free (x);
}

size_t
nbdkit_exports_count (const struct nbdkit_exports *x)
{
  return x->n;
}

/* The header declares a const return type, which means nothing to C; the
 * definition must match it. */
#pragma GCC diagnostic push
#pragma GCC diagnostic ignored "-Wignored-qualifiers"
const struct nbdkit_export
nbdkit_get_export (const struct nbdkit_exports *x, size_t i)
{
  assert (i < x->n);
  return x->v[i];
}
#pragma GCC diagnostic pop

int
nbdkit_add_export (struct nbdkit_exports *x, const char *name,
                   const char *description)
{
  struct nbdkit_export e = { NULL, NULL };

  if (x->n == MAX_EXPORTS) {
    nbdkit_error ("nbdkit_add_export: too many exports");
    errno = EINVAL;
    return -1;
  }
  if (strlen (name) > MAX_STRING ||
      (description && strlen (description) > MAX_STRING)) {
    nbdkit_error ("nbdkit_add_export: string too long");
    errno = EINVAL;
    return -1;
  }
  if (x->n == x->max) {
    size_t max = x->max ? x->max * 2 : 8;
    struct nbdkit_export *v = realloc (x->v, max * sizeof *v);
    if (!v) {
      nbdkit_error ("nbdkit_add_export: realloc: %m");
      return -1;
    }
    x->v = v;
    x->max = max;
  }
  e.name = strdup (name);
  if (e.name && description)
    e.description = strdup (description);
  if (!e.name || (description && !e.description)) {
    nbdkit_error ("nbdkit_add_export: strdup: %m");
    free (e.name);
    errno = ENOMEM;
    return -1;
  }
  x->v[x->n++] = e;
  return 0;
}

/* The host adds the default export's name once list_exports returned. */
int
nbdkit_use_default_export (struct nbdkit_exports *x)
{
  x->use_default = true;
  return 0;
}

bool
plughost_exports_take_default (struct nbdkit_exports *x)
{
  bool r = x->use_default;

  x->use_default = false;
  return r;
}
