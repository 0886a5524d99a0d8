/* A test nbdkit plugin (tests/test-nbdkit-peer.sh): what nbdkit_peer_*
 * said in preconnect and in open, as the disk's text.  Each answer is the
 * value, or "-1/ERRNO" after a failure; peer_name gives the address
 * family.  The disk is one 512-byte sector holding the line
 *   "pre PID UID GID FAMILY open PID UID GID FAMILY\n"
 * padded with spaces.
 *
 * mark=PATH: cleanup and unload each append "NAME PID" to PATH (for the
 * ublk server's exit, tests/vm/ublk-nbdkit.sh).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define NBDKIT_API_VERSION 2
#include <nbdkit-plugin.h>

#define THREAD_MODEL NBDKIT_THREAD_MODEL_PARALLEL

struct answers { char text[512]; };

/* One query's answer appended to BUF (LEN bytes). */
static void
put (char *buf, size_t len, int64_t v)
{
  size_t n = strlen (buf);

  if (v == -1)
    snprintf (buf + n, len - n, " -1/%d", errno);
  else
    snprintf (buf + n, len - n, " %" PRId64, v);
}

static void
ask (char *buf, size_t len, const char *when)
{
  struct sockaddr_storage ss;
  socklen_t sslen = sizeof ss;
  size_t n = strlen (buf);

  snprintf (buf + n, len - n, "%s%s", n ? " " : "", when);
  put (buf, len, nbdkit_peer_pid ());
  put (buf, len, nbdkit_peer_uid ());
  put (buf, len, nbdkit_peer_gid ());
  put (buf, len, nbdkit_peer_name ((struct sockaddr *) &ss, &sslen) == -1
       ? -1 : ss.ss_family);
}

/* preconnect's answers, for the open of the same connection: with one
 * client at a time (the test's), the last preconnect is its. */
static char pre[256];

static int
peer_preconnect (int readonly)
{
  pre[0] = '\0';
  ask (pre, sizeof pre, "pre");
  return 0;
}

static void *
peer_open (int readonly)
{
  struct answers *h = malloc (sizeof *h);

  if (!h) {
    nbdkit_error ("malloc: %m");
    return NULL;
  }
  memset (h->text, ' ', sizeof h->text);
  snprintf (h->text, sizeof h->text - 1, "%s", pre);
  ask (h->text, sizeof h->text - 1, "open");
  h->text[strlen (h->text)] = '\n';
  return h;
}

static void
peer_close (void *h)
{
  free (h);
}

static int64_t
peer_get_size (void *h)
{
  return sizeof ((struct answers *) h)->text;
}

static int
peer_pread (void *h, void *buf, uint32_t count, uint64_t offset,
            uint32_t flags)
{
  memcpy (buf, ((struct answers *) h)->text + offset, count);
  return 0;
}

static const char *mark;

static int
peer_config (const char *key, const char *value)
{
  if (strcmp (key, "mark") != 0) {
    nbdkit_error ("unknown parameter '%s'", key);
    return -1;
  }
  mark = nbdkit_absolute_path (value);
  return mark ? 0 : -1;
}

static void
put_mark (const char *what)
{
  FILE *f = mark ? fopen (mark, "a") : NULL;

  if (f) {
    fprintf (f, "%s %d\n", what, (int) getpid ());
    fclose (f);
  }
}

static void peer_cleanup (void) { put_mark ("cleanup"); }
static void peer_unload (void) { put_mark ("unload"); }

static struct nbdkit_plugin plugin = {
  .name = "peer",
  .config = peer_config,
  .cleanup = peer_cleanup,
  .unload = peer_unload,
  .preconnect = peer_preconnect,
  .open = peer_open,
  .close = peer_close,
  .get_size = peer_get_size,
  .pread = peer_pread,
};

NBDKIT_REGISTER_PLUGIN (plugin)
