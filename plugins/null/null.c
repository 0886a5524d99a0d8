/* null: reads return zeros, writes are discarded.  For benchmarks of the
 * frontends alone. */
#include <config.h>

#include <stdlib.h>
#include <string.h>

#include "ubdkit/backend.h"
#include "log.h"
#include "size.h"

struct null_disk {
  uint64_t size;
};

static void *
null_config (const struct backend_param *p, size_t n, bool readonly)
{
  static const char *const known[] = { "size", NULL };
  const char *s = backend_param_get (p, n, "size"), *why;
  struct null_disk *d;
  uint64_t size;

  if (backend_params_check ("null", p, n, known) == -1)
    return NULL;
  if (!s) {
    backend_param_error ("null: size=SIZE is required");
    return NULL;
  }
  if (size_parse (s, &size, &why) == -1) {
    backend_param_error ("null: size=%s: %s", s, why);
    return NULL;
  }
  d = malloc (sizeof *d);
  if (!d)
    fatal ("malloc: %m");
  d->size = size;
  return d;
}

static void null_close (void *h) { free (h); }
static uint64_t null_get_size (void *h) { return ((struct null_disk *) h)->size; }

static uint32_t
null_get_caps (void *h)
{
  return BACKEND_CAN_WRITE | BACKEND_CAN_FLUSH | BACKEND_CAN_FUA |
         BACKEND_CAN_TRIM | BACKEND_CAN_ZERO | BACKEND_CAN_FAST_ZERO |
         BACKEND_CAN_CACHE | BACKEND_CAN_EXTENTS | BACKEND_CAN_MULTI_CONN;
}

static int
null_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  memset (buf, 0, count);
  return 0;
}

static int
null_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  return 0;
}

static int
null_trim (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  return 0;
}

static int
null_extents (void *h, uint32_t count, uint64_t offset, uint32_t flags,
              struct backend_extents *e)
{
  backend_extents_add (e, offset, count,
                       BACKEND_EXTENT_HOLE | BACKEND_EXTENT_ZERO);
  return 0;
}

const struct backend_ops null_backend_ops = {
  .name = "null",
  .synopsis = "size=SIZE: reads return zeros, writes are discarded",
  .help = "           size=SIZE   device size (required), e.g. 1G\n",
  .props = BACKEND_INLINE,
  .config = null_config,
  .close = null_close,
  .get_size = null_get_size,
  .get_caps = null_get_caps,
  .pread = null_pread,
  .pwrite = null_pwrite,
  .trim = null_trim,
  .zero = null_trim,
  .extents = null_extents,
};
