/* Interned strings, and the table of every nbdkit_* function the ubdkit
 * executable exports to plugins.
 *
 * nbdkit frees a string interned during a connection when the connection
 * ends, and others at unload.  ubdkit's one plugin connection lasts as
 * long as the server (README.md), so all of them live until unload.
 *
 * The table serves two purposes: it makes the static linker keep every
 * exported function (plugins reach them only through the dynamic symbol
 * table, which the linker does not see), and plughost_check_exports turns
 * a build that forgot to export them (nbdkit.syms) into a clear error
 * instead of a cryptic dlopen failure.
 */
#include <config.h>

#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "plughost.h"

struct interned {
  struct interned *next;
  char s[];
};

static pthread_mutex_t intern_lock = PTHREAD_MUTEX_INITIALIZER;
static struct interned *interned;

static const char *
intern (const char *s, size_t n)
{
  struct interned *i = malloc (sizeof *i + n + 1);

  if (!i) {
    nbdkit_error ("malloc: %m");
    return NULL;
  }
  memcpy (i->s, s, n);
  i->s[n] = '\0';
  pthread_mutex_lock (&intern_lock);
  i->next = interned;
  interned = i;
  pthread_mutex_unlock (&intern_lock);
  return i->s;
}

const char *
nbdkit_strndup_intern (const char *str, size_t n)
{
  return intern (str, strnlen (str, n));
}

const char *
nbdkit_strdup_intern (const char *str)
{
  return intern (str, strlen (str));
}

const char *
nbdkit_vprintf_intern (const char *fmt, va_list ap)
{
  char *s;
  const char *r;
  int n = vasprintf (&s, fmt, ap);

  if (n == -1) {
    nbdkit_error ("vasprintf: %m");
    return NULL;
  }
  r = intern (s, n);
  free (s);
  return r;
}

const char *
nbdkit_printf_intern (const char *fmt, ...)
{
  va_list ap;
  const char *r;

  va_start (ap, fmt);
  r = nbdkit_vprintf_intern (fmt, ap);
  va_end (ap);
  return r;
}

void
plughost_intern_free_all (void)
{
  pthread_mutex_lock (&intern_lock);
  while (interned) {
    struct interned *next = interned->next;
    free (interned);
    interned = next;
  }
  pthread_mutex_unlock (&intern_lock);
}

#define SYM(fn) { #fn, (void *) fn }
static const struct {
  const char *name;
  void *fn;
} exported[] = {
  SYM (nbdkit_absolute_path), SYM (nbdkit_add_export),
  SYM (nbdkit_add_extent), SYM (nbdkit_debug), SYM (nbdkit_error),
  SYM (nbdkit_export_name), SYM (nbdkit_exports_count),
  SYM (nbdkit_exports_free), SYM (nbdkit_exports_new),
  SYM (nbdkit_extents_count), SYM (nbdkit_extents_free),
  SYM (nbdkit_extents_new), SYM (nbdkit_get_export), SYM (nbdkit_get_extent),
  SYM (nbdkit_is_tls), SYM (nbdkit_nanosleep), SYM (nbdkit_parse_bool),
  SYM (nbdkit_parse_int), SYM (nbdkit_parse_int16_t),
  SYM (nbdkit_parse_int32_t), SYM (nbdkit_parse_int64_t),
  SYM (nbdkit_parse_int8_t), SYM (nbdkit_parse_size),
  SYM (nbdkit_parse_uint16_t), SYM (nbdkit_parse_uint32_t),
  SYM (nbdkit_parse_uint64_t), SYM (nbdkit_parse_uint8_t),
  SYM (nbdkit_parse_unsigned), SYM (nbdkit_peer_gid), SYM (nbdkit_peer_name),
  SYM (nbdkit_peer_pid), SYM (nbdkit_peer_uid), SYM (nbdkit_printf_intern),
  SYM (nbdkit_read_password), SYM (nbdkit_realpath), SYM (nbdkit_set_error),
  SYM (nbdkit_shutdown), SYM (nbdkit_stdio_safe), SYM (nbdkit_strdup_intern),
  SYM (nbdkit_strndup_intern), SYM (nbdkit_use_default_export),
  SYM (nbdkit_vdebug), SYM (nbdkit_verror), SYM (nbdkit_vprintf_intern),
};

int
plughost_check_exports (void)
{
  for (size_t i = 0; i < sizeof exported / sizeof exported[0]; i++)
    if (dlsym (RTLD_DEFAULT, exported[i].name) != exported[i].fn) {
      log_error ("nbdkit: %s is not exported to plugins (ubdkit must be "
                 "linked with plugins/nbdkit/nbdkit.syms)", exported[i].name);
      return -1;
    }
  return 0;
}
