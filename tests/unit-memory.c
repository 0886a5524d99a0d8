/* The memory backend's direct access (map/unmap), which the NBD server
 * uses to send reads from and receive writes into the backend's storage,
 * in both layouts.
 *
 * Thin (reserve below size): mapped ranges read and write the right bytes,
 * holes and scattered ranges are refused (the caller copies), a pinned
 * chunk survives trim and zero (it is cleared in place, never handed to
 * another offset), and the reservation is accounted exactly (ENOSPC when it
 * is used up).
 *
 * Flat (the default): a range maps to one iovec however many chunks it
 * spans, holes are refused for reads and reported by extents, and the
 * bytes a trimmed chunk still holds in storage never show again: not
 * through a read, not around a later partial write, not through a write
 * mapping before its payload lands. */
#include <config.h>

#include <errno.h>
#include <string.h>
#include <sys/uio.h>

#include "ubdkit/backend.h"
#include "unit.h"

#define K 4096

static const struct backend_ops *o = &memory_backend_ops;

static void *
disk (const char *size, const char *reserve)
{
  struct backend_param p[] = { { "size", size }, { "reserve", reserve } };
  void *h = o->config (p, 2, false);

  if (!h || o->open (h) == -1) {
    fprintf (stderr, "cannot open memory size=%s reserve=%s\n", size, reserve);
    exit (1);
  }
  return h;
}

static bool
is_hole (void *h, uint32_t count, uint64_t offset)
{
  struct backend_extent v[4];
  struct backend_extents e = { .v = v, .max = 4, .start = offset,
                               .end = offset + count };

  CHECK (o->extents (h, count, offset, 0, &e) == 0 && e.n == 1);
  return e.n == 1 && v[0].length == count &&
    v[0].type == (BACKEND_EXTENT_HOLE | BACKEND_EXTENT_ZERO);
}

static bool
all_zero (const unsigned char *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i])
      return false;
  return true;
}

static void
flat (void)
{
  struct iovec iov[2];
  unsigned char buf[4 * K], pat[4 * K];
  void *h = disk ("64K", "64K");         /* reserve = size: flat */

  memset (pat, 0xa5, sizeof pat);
  CHECK (is_hole (h, 16 * K, 0));
  CHECK (o->map (h, BACKEND_OP_READ, K, 0, iov, 2) == 0);

  /* Three chunks in one iovec, even with room for only one. */
  CHECK (o->pwrite (h, pat, 3 * K, 4 * K, 0) == 0);
  CHECK (!is_hole (h, 3 * K, 4 * K) && is_hole (h, 4 * K, 0));
  CHECK (o->map (h, BACKEND_OP_READ, 2 * K + 10, 4 * K + 5, iov, 1) == 1);
  CHECK (iov[0].iov_len == 2 * K + 10 &&
         memcmp (iov[0].iov_base, pat, 2 * K + 10) == 0);
  o->unmap (h, 2 * K + 10, 4 * K + 5, iov, 1);
  /* A read over data and a hole is refused. */
  CHECK (o->map (h, BACKEND_OP_READ, 2 * K, 6 * K, iov, 2) == 0);

  /* Trim: a hole again, and its old bytes never come back. */
  CHECK (o->trim (h, K, 4 * K, 0) == 0);
  CHECK (is_hole (h, K, 4 * K) && !is_hole (h, 2 * K, 5 * K));
  CHECK (o->pread (h, buf, K, 4 * K) == 0 && all_zero (buf, K));
  CHECK (o->pwrite (h, pat, 100, 4 * K + 10, 0) == 0);
  CHECK (o->pread (h, buf, K, 4 * K) == 0);
  CHECK (all_zero (buf, 10) && memcmp (buf + 10, pat, 100) == 0 &&
         all_zero (buf + 110, K - 110));

  /* A write mapping into a trimmed chunk: zeros until the payload lands,
   * then zeros around it. */
  CHECK (o->trim (h, K, 5 * K, 0) == 0);
  CHECK (o->map (h, BACKEND_OP_WRITE, 200, 5 * K + 300, iov, 2) == 1);
  CHECK (o->pread (h, buf, K, 5 * K) == 0 && all_zero (buf, K));
  memcpy (iov[0].iov_base, pat, 200);
  o->unmap (h, 200, 5 * K + 300, iov, 1);
  CHECK (o->pread (h, buf, K, 5 * K) == 0);
  CHECK (all_zero (buf, 300) && memcmp (buf + 300, pat, 200) == 0 &&
         all_zero (buf + 500, K - 500));

  /* Zero without leave to trim clears in place: data, not a hole. */
  CHECK (o->zero (h, K, 6 * K, 0) == 0);
  CHECK (!is_hole (h, K, 6 * K));
  CHECK (o->pread (h, buf, K, 6 * K) == 0 && all_zero (buf, K));
  /* A partial zero with leave to trim also clears in place. */
  CHECK (o->zero (h, 100, 5 * K + 350, BACKEND_FLAG_MAY_TRIM) == 0);
  CHECK (o->pread (h, buf, K, 5 * K) == 0);
  CHECK (memcmp (buf + 300, pat, 50) == 0 && all_zero (buf + 350, 100) &&
         memcmp (buf + 450, pat, 50) == 0);

  /* The last, partial chunk of an odd-sized disk. */
  o->close (h);
  h = disk ("10000", "10000");
  CHECK (o->pwrite (h, pat, 10000, 0, 0) == 0);
  CHECK (o->map (h, BACKEND_OP_READ, 10000, 0, iov, 1) == 1 &&
         memcmp (iov[0].iov_base, pat, 10000) == 0);
  CHECK (o->trim (h, K, K, 0) == 0);
  CHECK (is_hole (h, K, K) && !is_hole (h, 1808, 2 * K));
  CHECK (o->pread (h, buf, K, K) == 0 && all_zero (buf, K));
  CHECK (o->pread (h, buf, 1808, 2 * K) == 0 && memcmp (buf, pat, 1808) == 0);
  o->close (h);
}

int
main (void)
{
  struct iovec iov[4];
  unsigned char buf[4 * K], pat[4 * K];
  void *h = disk ("64K", "12K");         /* 16 chunks, 3 of storage */
  int n;

  for (size_t i = 0; i < sizeof pat; i++)
    pat[i] = i * 7 + 1;

  /* A READ of a hole is refused: the caller copies (zeros). */
  CHECK (o->map (h, BACKEND_OP_READ, K, 0, iov, 4) == 0);

  /* A WRITE mapping allocates zeroed storage; bytes put there are read. */
  n = o->map (h, BACKEND_OP_WRITE, 100, 4 * K + 10, iov, 4);
  CHECK (n == 1 && iov[0].iov_len == 100);
  memcpy (iov[0].iov_base, pat, 100);
  o->unmap (h, 100, 4 * K + 10, iov, n);
  CHECK (o->pread (h, buf, K, 4 * K) == 0);
  CHECK (buf[0] == 0 && buf[9] == 0 && memcmp (buf + 10, pat, 100) == 0 &&
         buf[110] == 0 && buf[K - 1] == 0);

  /* A READ mapping points at the data written through pwrite. */
  CHECK (o->pwrite (h, pat, 2 * K, 8 * K, 0) == 0);
  n = o->map (h, BACKEND_OP_READ, 2 * K, 8 * K, iov, 4);
  CHECK (n >= 1 && n <= 2);
  CHECK (memcmp (iov[0].iov_base, pat, iov[0].iov_len) == 0);
  /* Storage is used up (3 chunks): another write fails, mapped or not. */
  CHECK (o->map (h, BACKEND_OP_WRITE, K, 12 * K, iov + 2, 2) == -ENOSPC);
  CHECK (o->pwrite (h, pat, K, 12 * K, 0) == -ENOSPC);

  /* Trim of the pinned chunks must not free them: the next write still
   * finds no storage, and the mapped bytes are cleared in place. */
  CHECK (o->trim (h, 2 * K, 8 * K, 0) == 0);
  CHECK (o->pwrite (h, pat, K, 12 * K, 0) == -ENOSPC);
  CHECK (((unsigned char *) iov[0].iov_base)[0] == 0);
  o->unmap (h, 2 * K, 8 * K, iov, n);
  /* Unpinned: trim frees them, writes elsewhere succeed. */
  CHECK (o->trim (h, 2 * K, 8 * K, 0) == 0);
  CHECK (o->pwrite (h, pat, 2 * K, 12 * K, 0) == 0);
  CHECK (o->pread (h, buf, 2 * K, 12 * K) == 0 && memcmp (buf, pat, 2 * K) == 0);
  CHECK (o->pread (h, buf, 2 * K, 8 * K) == 0 && buf[0] == 0 && buf[2 * K - 1] == 0);

  /* Too scattered for the iovecs given: refused, and nothing stays pinned
   * (the trim below frees everything, so 3 chunks can be written again). */
  CHECK (o->zero (h, 16 * K, 0, BACKEND_FLAG_MAY_TRIM) == 0);
  CHECK (o->pwrite (h, pat, K, 0, 0) == 0);
  CHECK (o->pwrite (h, pat, K, 2 * K, 0) == 0);
  CHECK (o->map (h, BACKEND_OP_READ, 3 * K, 0, iov, 1) == 0);  /* hole between */
  CHECK (o->map (h, BACKEND_OP_WRITE, 3 * K, 0, iov, 1) == 0 ||
         iov[0].iov_len == 3 * K);
  CHECK (o->zero (h, 16 * K, 0, BACKEND_FLAG_MAY_TRIM) == 0);
  CHECK (o->pwrite (h, pat, 3 * K, 4 * K, 0) == 0);

  /* Pins count: a chunk mapped twice (by ranges that straddle chunks) stays
   * after one unmap, and is freed by trim only after both. */
  {
    struct iovec a[2], b[2];
    int na, nb;
    CHECK (o->zero (h, 16 * K, 0, BACKEND_FLAG_MAY_TRIM) == 0);
    CHECK (o->pwrite (h, pat, 2 * K, 0, 0) == 0);         /* chunks 0, 1 */
    na = o->map (h, BACKEND_OP_READ, K, K / 2, a, 2);     /* chunks 0-1 */
    nb = o->map (h, BACKEND_OP_READ, 100, K + 7, b, 2);   /* chunk 1 */
    CHECK (na >= 1 && nb == 1);
    o->unmap (h, K, K / 2, a, na);
    CHECK (o->trim (h, 2 * K, 0, 0) == 0);   /* chunk 0 freed, 1 pinned */
    CHECK (o->pwrite (h, pat, 2 * K, 8 * K, 0) == 0);     /* 2 chunks left */
    CHECK (o->pwrite (h, pat, K, 12 * K, 0) == -ENOSPC);
    o->unmap (h, 100, K + 7, b, nb);
    CHECK (o->trim (h, 2 * K, 0, 0) == 0);   /* now chunk 1 too */
    CHECK (o->pwrite (h, pat, K, 12 * K, 0) == 0);
  }

  o->close (h);
  flat ();
  UNIT_EXIT ();
}
