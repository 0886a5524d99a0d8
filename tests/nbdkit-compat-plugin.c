/* A test nbdkit plugin for what an nbdkit user relies on
 * (tests/test-nbdkit-compat.sh).  It has no magic_config_key, so a bare
 * first argument reaches config as script=.  The disk is one 512-byte
 * sector holding the line
 *   "script=SCRIPT debug=N export=NAME\n"
 * padded with spaces: what config got, the value of its -D compat.foo.bar
 * flag (compat_debug_foo_bar) and the export name open saw.
 *
 * shutdown=1: get_ready calls nbdkit_shutdown (the server must exit 0).
 * default=NAME: default_export answers NAME; description=TEXT:
 * export_description answers TEXT.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

/* Set by the server from -D compat.foo.bar=N. */
NBDKIT_DLL_PUBLIC int compat_debug_foo_bar = 0;

static const char *script = "-";
static const char *dflt = "";
static const char *description;
static int shutdown_in_get_ready;

static int
compat_config (const char *key, const char *value)
{
  if (strcmp (key, "script") == 0)
    script = value;
  else if (strcmp (key, "shutdown") == 0)
    shutdown_in_get_ready = nbdkit_parse_bool (value);
  else if (strcmp (key, "default") == 0)
    dflt = value;
  else if (strcmp (key, "description") == 0)
    description = value;
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return shutdown_in_get_ready == -1 ? -1 : 0;
}

static int
compat_get_ready (void)
{
  if (shutdown_in_get_ready)
    nbdkit_shutdown ();
  return 0;
}

static const char *
compat_default_export (int readonly, int is_tls)
{
  return dflt;
}

static void *
compat_open (int readonly)
{
  char *text = malloc (512);
  const char *name = nbdkit_export_name ();
  int n;

  if (!text) {
    nbdkit_error ("malloc: %m");
    return NULL;
  }
  n = snprintf (text, 512, "script=%s debug=%d export=%s\n", script,
                compat_debug_foo_bar, name ? name : "(null)");
  if (n < 0 || n >= 512)
    n = 0;
  memset (text + n, ' ', 512 - n);
  return text;
}

static void
compat_close (void *h)
{
  free (h);
}

static const char *
compat_export_description (void *h)
{
  return description;
}

static int64_t
compat_get_size (void *h)
{
  return 512;
}

static int
compat_pread (void *h, void *buf, uint32_t count, uint64_t offset,
              uint32_t flags)
{
  memcpy (buf, (char *) h + offset, count);
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name = "compat",
  .version = "1.2.3",
  .config = compat_config,
  .config_help = "script=FILE  any text, reported in the disk",
  .get_ready = compat_get_ready,
  .default_export = compat_default_export,
  .open = compat_open,
  .close = compat_close,
  .export_description = compat_export_description,
  .get_size = compat_get_size,
  .pread = compat_pread,
};

NBDKIT_REGISTER_PLUGIN (plugin)
