/* -D PLUGIN.FLAG=N: nbdkit's debug flags (see debugflags.h).
 *
 * As nbdkit does, the flag is an int variable the plugin exports,
 * PLUGIN_debug_FLAG, found with dlsym and set before the plugin's load
 * callback; a '.' in FLAG stands for '_' in the variable's name (so
 * -D file.zero.trim=1 sets file_debug_zero_trim).  A flag naming a
 * plugin that has no such variable is an error; one naming a plugin that
 * is not loaded is not (-E may load others), so nbdkit's own flags
 * (-D nbdkit.FLAG=N, the server's internals) are accepted and ignored.
 *
 * The flags are recorded while the command line is parsed, before any
 * thread: a fixed table, pointing into argv.
 */
#include <config.h>

#include <dlfcn.h>
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "debugflags.h"
#include "log.h"

#define MAX_DEBUG_FLAGS 64

struct debug_flag {
  const char *arg;              /* NAME.FLAG=N as given */
  size_t name_len;              /* NAME */
  const char *flag;             /* FLAG=N */
  size_t flag_len;
  int value;
};

static struct debug_flag flags[MAX_DEBUG_FLAGS];
static size_t nr_flags;

int
plughost_debug_flag_option (const char *arg)
{
  const char *dot = strchr (arg, '.'), *eq = strchr (arg, '=');
  struct debug_flag *f;
  char *end;
  long v;

  if (!dot || !eq || dot == arg || eq < dot + 2 || !eq[1]) {
    fprintf (stderr, "ubdkit: -D '%s': expected PLUGIN.FLAG=N\n", arg);
    return -1;
  }
  errno = 0;
  v = strtol (eq + 1, &end, 0);
  if (*end || errno || v < INT_MIN || v > INT_MAX) {
    fprintf (stderr, "ubdkit: -D '%s': N must be an integer\n", arg);
    return -1;
  }
  if (nr_flags == MAX_DEBUG_FLAGS) {
    fprintf (stderr, "ubdkit: -D '%s': too many debug flags (%d)\n", arg,
             MAX_DEBUG_FLAGS);
    return -1;
  }
  f = &flags[nr_flags++];
  f->arg = arg;
  f->name_len = dot - arg;
  f->flag = dot + 1;
  f->flag_len = eq - (dot + 1);
  f->value = v;
  return 0;
}

int
plughost_debug_flags_apply (void *dl, const char *name)
{
  size_t len = strlen (name);

  for (size_t i = 0; i < nr_flags; i++) {
    struct debug_flag *f = &flags[i];
    char sym[256];
    int *var, n;

    if (f->name_len != len || strncmp (f->arg, name, len) != 0)
      continue;
    n = snprintf (sym, sizeof sym, "%s_debug_%.*s", name, (int) f->flag_len,
                  f->flag);
    if (n < 0 || (size_t) n >= sizeof sym) {
      log_error ("nbdkit: -D %s: the flag's name is too long", f->arg);
      return -1;
    }
    for (char *p = sym + len + 7; *p; p++)
      if (*p == '.')
        *p = '_';
    var = dlsym (dl, sym);
    if (!var) {
      log_error ("nbdkit: -D %s: plugin %s has no debug flag %.*s "
                 "(no symbol %s)", f->arg, name, (int) f->flag_len, f->flag,
                 sym);
      return -1;
    }
    *var = f->value;
    log_debug ("nbdkit: debug flag %s = %d", sym, f->value);
  }
  return 0;
}
