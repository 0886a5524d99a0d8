/* A test nbdkit filter (tests/test-nbdkit-filter-exports.sh): what a
 * filter is told of TLS.  The disk is one 512-byte sector holding
 *   "open PARAM CALL pread CALL\n"
 * padded with spaces: open's is_tls argument and what nbdkit_is_tls()
 * answered in open and in pread (1, 0, or -1 for an error).  The list of
 * exports is the next layer's, with one more: "list PARAM", list_exports'
 * is_tls argument; "" stands for "default PARAM", default_export's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <nbdkit-filter.h>

/* A plugin's function (nbdkit-plugin.h), which nbdkit exports to filters
 * too; its answer inside a filter call is the connection's. */
extern int nbdkit_is_tls (void);

struct handle { char text[512]; };

static void *
tls_open (nbdkit_next_open *next, nbdkit_context *nxdata, int readonly,
          const char *exportname, int is_tls)
{
  struct handle *h;

  if (next (nxdata, readonly, exportname) == -1)
    return NULL;
  h = malloc (sizeof *h);
  if (!h) {
    nbdkit_error ("malloc: %m");
    return NULL;
  }
  snprintf (h->text, sizeof h->text, "open %d %d", is_tls, nbdkit_is_tls ());
  return h;
}

static void
tls_close (void *handle)
{
  free (handle);
}

static int64_t
tls_get_size (nbdkit_next *next, void *handle)
{
  return 512;
}

static int
tls_can_write (nbdkit_next *next, void *handle)
{
  return 0;
}

static int
tls_pread (nbdkit_next *next, void *handle, void *buf, uint32_t count,
           uint64_t offset, uint32_t flags, int *err)
{
  struct handle *h = handle;
  char sector[512];
  int n;

  n = snprintf (sector, sizeof sector, "%s pread %d\n", h->text,
                nbdkit_is_tls ());
  memset (sector + n, ' ', sizeof sector - n);
  memcpy (buf, sector + offset, count);
  return 0;
}

static int
tls_list_exports (nbdkit_next_list_exports *next, nbdkit_backend *nxdata,
                  int readonly, int is_tls, struct nbdkit_exports *exports)
{
  char name[32];

  if (next (nxdata, readonly, exports) == -1)
    return -1;
  snprintf (name, sizeof name, "list %d", is_tls);
  return nbdkit_add_export (exports, name, NULL);
}

static const char *
tls_default_export (nbdkit_next_default_export *next, nbdkit_backend *nxdata,
                    int readonly, int is_tls)
{
  return is_tls ? "default 1" : "default 0";
}

static struct nbdkit_filter filter = {
  .name = "tls",
  .longname = "ubdkit test filter: what filters are told of TLS",
  .open = tls_open,
  .close = tls_close,
  .get_size = tls_get_size,
  .can_write = tls_can_write,
  .pread = tls_pread,
  .list_exports = tls_list_exports,
  .default_export = tls_default_export,
};

NBDKIT_REGISTER_FILTER (filter)
