/* A test nbdkit plugin (tests/test-workers-stall.sh): a disk of zeroes,
 * 1 MiB, whose reads return at once, except a read of the sector at
 * offset stall=N (default 0), which takes stall-ms=MS (default 5000) the
 * first time.  It stands for a backend that was fast and then hangs in
 * one call.
 */
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

static uint64_t stall_at;
static unsigned stall_ms = 5000;
static atomic_bool stalled;

static int
stall_config (const char *key, const char *value)
{
  if (strcmp (key, "stall") == 0)
    stall_at = strtoull (value, NULL, 0);
  else if (strcmp (key, "stall-ms") == 0)
    stall_ms = strtoul (value, NULL, 0);
  else {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  return 0;
}

static void *
stall_open (int readonly)
{
  return NBDKIT_HANDLE_NOT_NEEDED;
}

static int64_t
stall_get_size (void *h)
{
  return 1024 * 1024;
}

static int
stall_pread (void *h, void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  memset (buf, 0, count);
  if (offset <= stall_at && stall_at < offset + count &&
      !atomic_exchange (&stalled, true)) {
    struct timespec ts = { stall_ms / 1000, (stall_ms % 1000) * 1000000L };

    nanosleep (&ts, NULL);
  }
  return 0;
}

static struct nbdkit_plugin plugin = {
  .name = "stall",
  .version = "1.0",
  .config = stall_config,
  .open = stall_open,
  .get_size = stall_get_size,
  .pread = stall_pread,
};

NBDKIT_REGISTER_PLUGIN (plugin)
