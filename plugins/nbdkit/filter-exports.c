/* The filter chain's exports: list_exports (NBD_OPT_LIST) and
 * default_export (what "" stands for), called through the chain as
 * nbdkit's server/backend.c does: at the outermost layer first, each
 * filter's callback given the next layer's as its next, down to the
 * bottom.  After each layer's list, a nbdkit_use_default_export is
 * resolved with that layer's default_export.
 *
 * The bottom: a backend that lists names (an nbdkit plugin) answers with
 * its own list_exports, its default export resolved already; one without
 * lists its default export, which is "" as for an nbdkit plugin without
 * default_export, except a plugin's own default_export.
 *
 * These run inside the connection's thread state (filter.c pushed it),
 * from which the next functions, which get no TLS argument, take it.
 */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "log.h"
#include "filter.h"

#define MAX_STRING 4096         /* NBD's limit on names */

static bool
is_bottom (const struct nbdkit_backend *l)
{
  return l->i == l->chain->nf;
}

bool
filter_chain_lists (const struct filterchain *ch)
{
  if (ch->inner.ops->list_exports)
    return true;
  for (size_t i = 0; i < ch->nf; i++)
    if (ch->layers[i].f.list_exports || ch->layers[i].f.default_export)
      return true;
  return false;
}

static const char *
next_default_export (nbdkit_backend *l, int readonly)
{
  return filter_default_export (l, readonly, plughost_conn_get ()->tls);
}

const char *
filter_default_export (struct nbdkit_backend *l, bool readonly, bool tls)
{
  struct backend *in = &l->chain->inner;
  const char *s;

  if (is_bottom (l))
    return in->ops == &plughost_backend_ops
           ? plughost_default_export (in->h, readonly, tls) : "";
  if (l->f.default_export)
    s = l->f.default_export (next_default_export, l + 1, readonly, tls);
  else
    s = filter_default_export (l + 1, readonly, tls);
  /* nbdkit ignores a name too long to send. */
  if (s && strnlen (s, MAX_STRING + 1) > MAX_STRING) {
    log_debug ("nbdkit: filter %s: default_export: ignoring a name longer "
               "than %d bytes", l->f.name, MAX_STRING);
    s = NULL;
  }
  return s;
}

/* The bottom's own list, through its ubdkit list_exports: each name it
 * gives appended to X. */
struct bottom_list {
  struct backend_conn bc;
  struct nbdkit_exports *x;
};

static int
bottom_add (struct backend_conn *bc, const char *name, const char *desc)
{
  struct bottom_list *bl = container_of (bc, struct bottom_list, bc);

  return nbdkit_add_export (bl->x, name, desc) == -1
         ? -(errno ? errno : EINVAL) : 0;
}

static int
bottom_list_exports (struct filterchain *ch, bool readonly, bool tls,
                     struct nbdkit_exports *x)
{
  struct backend *in = &ch->inner;
  struct bottom_list bl = { .x = x };
  int peer = plughost_conn_get ()->peer_fd;

  if (!in->ops->list_exports)
    return nbdkit_use_default_export (x);
  bl.bc.b = bl.bc.asked = in;
  bl.bc.peer_fd = peer == PLUGHOST_NO_PEER ? -1 : peer;
  bl.bc.tls = tls;
  bl.bc.list_add = bottom_add;
  return in->ops->list_exports (in->h, bl.bc.peer_fd, readonly, &bl.bc) < 0
         ? -1 : 0;
}

static int
next_list_exports (nbdkit_backend *l, int readonly, struct nbdkit_exports *x)
{
  return filter_list_exports_at (l, readonly, plughost_conn_get ()->tls, x);
}

int
filter_list_exports_at (struct nbdkit_backend *l, bool readonly, bool tls,
                        struct nbdkit_exports *x)
{
  const char *def;
  int r;

  if (is_bottom (l))
    r = bottom_list_exports (l->chain, readonly, tls, x);
  else if (l->f.list_exports)
    r = l->f.list_exports (next_list_exports, l + 1, readonly, tls, x);
  else
    r = filter_list_exports_at (l + 1, readonly, tls, x);
  if (r == -1)
    return -1;
  if (plughost_exports_take_default (x) &&
      (def = filter_default_export (l, readonly, tls)) != NULL)
    return nbdkit_add_export (x, def, NULL);
  return 0;
}
