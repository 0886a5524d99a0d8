/* nbdkit's informational modes for a hosted plugin (info.h).
 *
 * The plugin is loaded alone (plugin_init, -D flags, load), asked, then
 * unloaded: no config, no connection, as nbdkit does for --dump-plugin,
 * PLUGIN --help and --version.  --dump-plugin's lines are nbdkit's, in
 * its order, so scripts that read them (grep ^has_extents=) read ours;
 * the plugin's own dump_plugin lines follow.
 */
#include <config.h>

#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "info.h"
#include "plughost.h"

static const char *
thread_model_name (int m)
{
  switch (m) {
  case NBDKIT_THREAD_MODEL_SERIALIZE_CONNECTIONS:
    return "serialize_connections";
  case NBDKIT_THREAD_MODEL_SERIALIZE_ALL_REQUESTS:
    return "serialize_all_requests";
  case NBDKIT_THREAD_MODEL_SERIALIZE_REQUESTS: return "serialize_requests";
  case NBDKIT_THREAD_MODEL_PARALLEL: return "parallel";
  default: return "unknown";
  }
}

static void
dump_fields (struct plughost *h)
{
  const struct nbdkit_plugin *p = &h->p;
  int model = p->_thread_model;

  printf ("path=%s\n", h->filename);
  printf ("name=%s\n", p->name);
  if (p->version)
    printf ("version=%s\n", p->version);
  printf ("api_version=%d\n", p->_api_version);
  printf ("struct_size=%" PRIu64 "\n", p->_struct_size);
  printf ("max_thread_model=%s\n", thread_model_name (model));
  if (p->thread_model) {
    int r = p->thread_model ();
    if (r != -1 && r < model)
      model = r;
  }
  printf ("thread_model=%s\n", thread_model_name (model));
  printf ("errno_is_preserved=%d\n", !!p->errno_is_preserved);
  if (p->magic_config_key)
    printf ("magic_config_key=%s\n", p->magic_config_key);
#define HAS(field, v1) \
  if (p->field || (v1)) printf ("has_%s=1\n", #field)
  HAS (longname, 0);
  HAS (description, 0);
  HAS (load, 0);
  HAS (unload, 0);
  HAS (dump_plugin, 0);
  HAS (config, 0);
  HAS (config_complete, 0);
  HAS (config_help, 0);
  HAS (thread_model, 0);
  HAS (get_ready, 0);
  HAS (after_fork, 0);
  HAS (cleanup, 0);
  HAS (preconnect, 0);
  HAS (list_exports, 0);
  HAS (default_export, 0);
  HAS (open, 0);
  HAS (close, 0);
  HAS (export_description, 0);
  HAS (get_size, 0);
  HAS (block_size, 0);
  HAS (can_write, 0);
  HAS (can_flush, 0);
  HAS (is_rotational, 0);
  HAS (can_trim, 0);
  HAS (can_zero, 0);
  HAS (can_fast_zero, 0);
  HAS (can_extents, 0);
  HAS (can_fua, 0);
  HAS (can_multi_conn, 0);
  HAS (can_cache, 0);
  HAS (pread, p->_pread_v1);
  HAS (pwrite, p->_pwrite_v1);
  HAS (flush, p->_flush_v1);
  HAS (trim, p->_trim_v1);
  HAS (zero, p->_zero_v1);
  HAS (extents, 0);
  HAS (cache, 0);
#undef HAS
  /* The plugin's own lines (it prints them on stdout): after ours. */
  fflush (stdout);
  if (p->dump_plugin)
    p->dump_plugin ();
  fflush (stdout);
}

/* TEXT, ending in a newline. */
static void
put_text (const char *text)
{
  size_t n = strlen (text);

  printf ("%s%s", text, n && text[n - 1] == '\n' ? "" : "\n");
}

static void
print_help (struct plughost *h)
{
  printf ("plugin: %s", h->p.name);
  if (h->p.longname)
    printf (" (%s)", h->p.longname);
  printf ("\n(%s)\n", h->filename);
  if (h->p.description)
    put_text (h->p.description);
  if (h->p.config_help)
    put_text (h->p.config_help);
}

static void
print_version (struct plughost *h)
{
  printf ("%s", h->p.name);
  if (h->p.version)
    printf (" %s", h->p.version);
  printf ("\n");
}

static int
with_plugin (const char *name, void (*fn) (struct plughost *))
{
  struct plughost *h = plughost_load_alone (name);

  if (!h)
    return -1;
  fn (h);
  fflush (stdout);
  plughost_unload_alone (h);
  return 0;
}

int
plughost_dump_plugin (const char *name)
{
  return with_plugin (name, dump_fields);
}

int
plughost_print_help (const char *name)
{
  return with_plugin (name, print_help);
}

int
plughost_print_version (const char *name)
{
  return with_plugin (name, print_version);
}
