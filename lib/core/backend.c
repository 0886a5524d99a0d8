/* The one layer every request passes through before a backend sees it:
 * backend_check validates range, flags and capabilities once, for both
 * frontends, so each backend callback can be a few lines. */
#include <config.h>

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#include "ubdkit/backend.h"
#include "log.h"
#include "loop.h"
#include "workers.h"

static const struct backend_ops *const builtin[] = {
  &file_backend_ops, &memory_backend_ops, &null_backend_ops,
#ifdef HAVE_LIBNBD
  &remote_backend_ops,          /* weak: NULL outside the daemon */
#endif
#ifdef HAVE_LIBRBD
  &rbd_backend_ops,             /* weak, likewise */
#endif
#ifdef HAVE_NBDKIT
  &plughost_backend_ops,
#endif
};

/* The length of a host's "NAME:" prefix that NAME starts with, or 0. */
static size_t
host_prefix (const struct backend_ops *ops, const char *name)
{
  size_t len = strlen (ops->name);

  return ops->host && strncmp (name, ops->name, len) == 0 &&
         name[len] == ':' ? len + 1 : 0;
}

const struct backend_ops *
backend_lookup (const char *name)
{
  for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
    if (builtin[i] &&
        ((!builtin[i]->host && strcmp (builtin[i]->name, name) == 0) ||
         host_prefix (builtin[i], name)))
      return builtin[i];
  return NULL;
}

void
backend_print_list (void)
{
  for (size_t i = 0; i < sizeof builtin / sizeof builtin[0]; i++)
    if (!builtin[i])
      continue;
    else if (builtin[i]->host)  /* the synopsis starts with "NAME:" */
      printf ("  %s\n%s", builtin[i]->synopsis, builtin[i]->help);
    else
      printf ("  %-8s %s\n%s", builtin[i]->name, builtin[i]->synopsis,
              builtin[i]->help);
}

int
backend_param_error (const char *fmt, ...)
{
  char msg[512];
  va_list ap;

  va_start (ap, fmt);
  vsnprintf (msg, sizeof msg, fmt, ap);
  va_end (ap);
  log_error ("%s", msg);
  return -1;
}

const char *
backend_param_get (const struct backend_param *p, size_t n, const char *key)
{
  const char *v = NULL;

  for (size_t i = 0; i < n; i++)
    if (strcmp (p[i].key, key) == 0)
      v = p[i].value;           /* the last one wins, as in nbdkit */
  return v;
}

int
backend_params_check (const char *backend, const struct backend_param *p,
                      size_t n, const char *const *known)
{
  for (size_t i = 0; i < n; i++) {
    size_t k;
    for (k = 0; known[k]; k++)
      if (strcmp (p[i].key, known[k]) == 0)
        break;
    if (!known[k])
      return backend_param_error ("%s: unknown parameter '%s'", backend,
                                  p[i].key);
  }
  return 0;
}

int
backend_parse_bool (const char *s)
{
  static const char *const yes[] = { "1", "true", "on", "yes", NULL };
  static const char *const no[] = { "0", "false", "off", "no", NULL };

  for (size_t i = 0; yes[i]; i++)
    if (strcasecmp (s, yes[i]) == 0)
      return 1;
  for (size_t i = 0; no[i]; i++)
    if (strcasecmp (s, no[i]) == 0)
      return 0;
  return -1;
}

/* b->args = "name arg ...", for logs and `list`. */
static void
set_args (struct backend *b, const char *name, char **argv, int argc)
{
  size_t len = strlen (name) + 1;
  char *p;

  for (int i = 0; i < argc; i++)
    len += strlen (argv[i]) + 1;
  b->args = p = malloc (len);
  if (!p)
    fatal ("malloc: %m");
  p += sprintf (p, "%s", name);
  for (int i = 0; i < argc; i++)
    p += sprintf (p, " %s", argv[i]);
}

/* A host gets the words as given (see backend.h). */
static int
host_config (struct backend *b, const char *name, char **argv, int argc,
             bool readonly)
{
  struct backend_param params[BACKEND_MAX_PARAMS];

  if (argc + 1 > BACKEND_MAX_PARAMS) {
    log_error ("%s: too many parameters (at most %d)", name,
               BACKEND_MAX_PARAMS - 1);
    return -1;
  }
  params[0] = (struct backend_param) { NULL, name + host_prefix (b->ops, name) };
  for (int i = 0; i < argc; i++)
    params[i + 1] = (struct backend_param) { NULL, argv[i] };
  b->h = b->ops->config (params, argc + 1, readonly);
  if (!b->h)
    return -2;
  b->readonly = readonly;
  set_args (b, name, argv, argc);
  return 0;
}

/* --filter: see backend.h. */
int (*backend_filter_hook) (struct backend *b, const char *name, char **argv,
                            int argc, bool readonly);

int
backend_config (struct backend *b, const char *name, char **argv, int argc,
                bool readonly)
{
  struct backend_param params[BACKEND_MAX_PARAMS];
  int i;

  if (backend_filter_hook) {     /* --filter: the chain over NAME */
    int (*hook) (struct backend *, const char *, char **, int, bool)
      = backend_filter_hook;
    backend_filter_hook = NULL;
    return hook (b, name, argv, argc, readonly);
  }

  memset (b, 0, sizeof *b);
  if (argc > BACKEND_MAX_PARAMS) {
    log_error ("%s: too many parameters (at most %d)", name,
               BACKEND_MAX_PARAMS);
    return -1;
  }
  b->ops = backend_lookup (name);
  if (!b->ops) {
    log_error ("unknown backend '%s' (see 'ubdkit --help')", name);
    return -1;
  }
  if (b->ops->host)
    return host_config (b, name, argv, argc, readonly);
  for (i = 0; i < argc; i++) {
    char *eq = strchr (argv[i], '=');
    if (!eq || eq == argv[i])
      break;
    params[i].key = strndup (argv[i], eq - argv[i]);
    params[i].value = eq + 1;
    if (!params[i].key)
      fatal ("strndup: %m");
  }
  if (i == argc)
    b->h = b->ops->config (params, argc, readonly);
  else
    log_error ("%s: expected key=value, got '%s'", name, argv[i]);
  for (int k = 0; k < i; k++)
    free ((char *) params[k].key);
  if (!b->h)
    return -1;
  b->readonly = readonly;
  set_args (b, name, argv, argc);
  return 0;
}

uint64_t
backend_query_size (const struct backend *b)
{
  /* A connection's size was agreed at connect (an nbdkit plugin answers
   * get_size for its connection there): keep it. */
  if (b->ops->connect)
    return b->size;
  return b->ops->get_size (b->h);
}

/* Ask B's handle for its size, capabilities and block sizes, once: the
 * answers are cached in B for backend_check and the frontends. */
static void
backend_ask (struct backend *b)
{
  b->size = b->ops->get_size (b->h);
  b->caps = b->ops->get_caps (b->h);
  b->readonly = b->readonly || !(b->caps & BACKEND_CAN_WRITE);
  if (b->readonly)
    b->caps &= ~(BACKEND_CAN_WRITE | BACKEND_CAN_TRIM | BACKEND_CAN_ZERO |
                 BACKEND_CAN_FAST_ZERO | BACKEND_CAN_FUA);
  b->min_block = 1;
  b->pref_block = 4096;
  b->max_block = BACKEND_MAX_REQUEST;
  if (b->ops->block_size)
    b->ops->block_size (b->h, &b->min_block, &b->pref_block, &b->max_block);
}

int
backend_open (struct backend *b)
{
  if (b->ops->open && b->ops->open (b->h) == -1)
    return -1;
  if (b->ops->connect)  /* the answers come with each connection */
    b->caps = b->ops->get_caps (b->h) & BACKEND_ONE_CONNECTION;
  else
    backend_ask (b);
  return 0;
}

int
backend_conn_open (struct backend_conn *bc)
{
  struct backend *v = &bc->view;

  /* A copy: ops, readonly and args are the backend's (args is never freed
   * through a view). */
  *v = *bc->b;
  v->nr_conns = 0;
  v->wait_head = v->wait_tail = NULL;
  v->h = bc->b->ops->connect (bc->b->h, bc->export, bc->b->readonly,
                             bc->peer_fd, bc->tls);
  if (!v->h)
    return -EIO;
  backend_ask (v);
  return 0;
}

void
backend_conn_close (struct backend_conn *bc)
{
  bc->b->ops->disconnect (bc->view.h);
  bc->view.h = NULL;
}

int
backend_conn_preconnect (struct backend_conn *bc)
{
  struct backend *b = bc->asked;

  return b->ops->preconnect (b->h, bc->peer_fd, b->readonly) == -1
         ? -EPERM : 0;
}

int
backend_conn_list (struct backend_conn *bc)
{
  struct backend *b = bc->asked;

  return b->ops->list_exports (b->h, bc->peer_fd, b->readonly, bc);
}

void
backend_close (struct backend *b)
{
  if (b->ops && b->h)
    b->ops->close (b->h);
  free (b->args);
  memset (b, 0, sizeof *b);
}

int
backend_flush_at_exit (struct backend *b, const char *name)
{
  if (!b->h || !(b->caps & BACKEND_CAN_FLUSH) || b->readonly ||
      !b->ops->flush || b->ops->flush (b->h) >= 0)
    return 0;
  log_error ("%s: flush at exit failed", name);
  return -1;
}

void
backend_forget (struct backend *b)
{
  if (b->ops && b->h && b->ops->forget)
    b->ops->forget (b->h);
  backend_close (b);
}

static const uint32_t op_caps[] = {
  [BACKEND_OP_READ] = 0,
  [BACKEND_OP_WRITE] = BACKEND_CAN_WRITE,
  [BACKEND_OP_FLUSH] = BACKEND_CAN_FLUSH,
  [BACKEND_OP_TRIM] = BACKEND_CAN_TRIM,
  [BACKEND_OP_ZERO] = BACKEND_CAN_ZERO,
  [BACKEND_OP_CACHE] = BACKEND_CAN_CACHE,
  [BACKEND_OP_EXTENTS] = BACKEND_CAN_EXTENTS,
};

static const uint32_t op_flags[] = {
  [BACKEND_OP_READ] = 0,
  [BACKEND_OP_WRITE] = BACKEND_FLAG_FUA,
  [BACKEND_OP_FLUSH] = 0,
  [BACKEND_OP_TRIM] = BACKEND_FLAG_FUA,
  [BACKEND_OP_ZERO] = BACKEND_FLAG_FUA | BACKEND_FLAG_MAY_TRIM |
                      BACKEND_FLAG_FAST,
  [BACKEND_OP_CACHE] = 0,
  [BACKEND_OP_EXTENTS] = BACKEND_FLAG_REQ_ONE,
};

static bool
is_write_op (enum backend_op op)
{
  return op == BACKEND_OP_WRITE || op == BACKEND_OP_TRIM ||
         op == BACKEND_OP_ZERO;
}

int
backend_check (const struct backend *b, enum backend_op op, uint64_t offset,
               uint64_t count, uint32_t flags)
{
  if ((unsigned) op >= sizeof op_caps / sizeof op_caps[0])
    return -EINVAL;
  if (is_write_op (op) && b->readonly)
    return -EPERM;
  if (flags & ~op_flags[op])
    return -EINVAL;
  if ((flags & BACKEND_FLAG_FUA) && !(b->caps & BACKEND_CAN_FUA))
    return -EINVAL;
  if ((flags & BACKEND_FLAG_FAST) && !(b->caps & BACKEND_CAN_FAST_ZERO))
    return -EINVAL;
  if (op == BACKEND_OP_FLUSH)
    return offset == 0 && count == 0 ? 0 : -EINVAL;
  if (count == 0)
    return -EINVAL;
  if (offset > b->size || count > b->size - offset)
    return is_write_op (op) ? -ENOSPC : -EINVAL;
  if ((op == BACKEND_OP_READ || op == BACKEND_OP_WRITE) &&
      count > b->max_block)
    return -EOVERFLOW;
  if (b->min_block > 1 && op != BACKEND_OP_EXTENTS &&
      ((offset | count) & (b->min_block - 1)))
    return -EINVAL;
  if (op_caps[op] && !(b->caps & op_caps[op]))
    return -EOPNOTSUPP;
  return 0;
}

int
backend_call (const struct backend *b, struct backend_io *io,
              struct backend_extents *ext)
{
  const struct backend_ops *o = b->ops;

  switch (io->op) {
  case BACKEND_OP_READ:
    return o->pread (b->h, io->buf, io->count, io->offset);
  case BACKEND_OP_WRITE:
    return o->pwrite (b->h, io->buf, io->count, io->offset, io->flags);
  case BACKEND_OP_FLUSH:
    return o->flush ? o->flush (b->h) : 0;
  case BACKEND_OP_TRIM:
    return o->trim (b->h, io->count, io->offset, io->flags);
  case BACKEND_OP_ZERO:
    return o->zero (b->h, io->count, io->offset, io->flags);
  case BACKEND_OP_CACHE:
    return o->cache ? o->cache (b->h, io->count, io->offset) : 0;
  case BACKEND_OP_EXTENTS:
    ext = ext ? ext : io->ext;
    if (!o->extents)
      return backend_extents_add (ext, io->offset, io->count, 0) >= 0 ? 0 : -EIO;
    return o->extents (b->h, io->count, io->offset, io->flags, ext);
  }
  return -EINVAL;
}

void
backend_start (const struct backend *b, struct loop *l,
               struct backend_io *io)
{
  int r;

  if (b->ops->submit) {
    r = b->ops->submit (b->h, &l->ring, io);
    if (r == 0)
      return;
    if (r != -ENOSYS) {
      io->done (io, r == BACKEND_SUBMIT_DONE ? 0 : r);
      return;
    }
  }
  if (backend_needs_workers (b)) {
    backend_workers_run (b, l, io);
    return;
  }
  io->done (io, backend_call (b, io, io->ext));
}

bool
backend_cheap_extents (const struct backend *b)
{
  return (b->ops->props & BACKEND_INLINE) && b->ops->extents &&
         (b->caps & BACKEND_CAN_EXTENTS);
}

int
backend_map (const struct backend *b, enum backend_op op, uint32_t count,
             uint64_t offset, struct iovec *iov, unsigned max)
{
  if (!b->ops->map || (op != BACKEND_OP_READ && op != BACKEND_OP_WRITE))
    return 0;
  return b->ops->map (b->h, op, count, offset, iov, max);
}

void
backend_unmap (const struct backend *b, uint32_t count, uint64_t offset,
               const struct iovec *iov, unsigned n)
{
  if (n)
    b->ops->unmap (b->h, count, offset, iov, n);
}

int
backend_extents_add (struct backend_extents *e, uint64_t offset,
                     uint64_t length, uint32_t type)
{
  uint64_t end;

  /* Clip to the range asked about; ignore what lies outside it. */
  if (offset < e->start) {
    if (offset + length <= e->start)
      return 0;
    length -= e->start - offset;
    offset = e->start;
  }
  if (offset >= e->end || length == 0)
    return 0;
  end = offset + length > e->end ? e->end : offset + length;
  if (e->n > 0) {
    struct backend_extent *last = &e->v[e->n - 1];
    if (last->type == type && last->offset + last->length == offset) {
      last->length = end - last->offset;
      return 0;
    }
  }
  if (e->n == e->max)
    return 1;
  e->v[e->n++] = (struct backend_extent) { offset, end - offset, type };
  return 0;
}
