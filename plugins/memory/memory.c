/* memory: a sparse RAM disk whose storage is reserved at start.
 *
 * The disk is a directory of 4 KiB chunks; an entry's low 32 bits are 0 for
 * a hole (reads as zeros) or 1 + the index of a chunk in the reservation,
 * its high 32 bits the chunk's pins (below).  All chunk
 * storage is one anonymous mapping made and prefaulted when the backend is
 * opened (reserve=SIZE, by default the whole disk), so the I/O path never
 * asks the kernel for memory: a write takes a chunk from a free stack, and
 * trim/zero give whole chunks back to it.  When the reservation is used up a
 * write fails with ENOSPC, like a thin-provisioned disk that is full.
 *
 * Concurrency: the backend runs inline on every loop thread.  Reads and
 * in-place writes share a read lock (overlapping requests race only on
 * data, as on real disks); filling a hole publishes a fresh chunk with a
 * compare-and-swap; trim and zero, which free chunks, take the write lock so
 * a chunk is never reused while someone still copies from it.
 *
 * Direct access (map): the NBD server sends reads straight from the chunks
 * and receives writes straight into them, one copy instead of two.  A
 * mapped chunk is pinned (a count in its directory entry) until unmapped;
 * trim and zero clear a pinned chunk in place instead of freeing it, so it
 * can never be handed to another offset while a socket still reads or
 * fills it.  The count shares the entry's word, and so its cache line: a
 * random 4 KiB map then misses the cache once, not twice (entry, then a
 * separate pin array), and unmap finds the entry by the range it was given.
 */
#include <config.h>

#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/uio.h>

#include "ubdkit/backend.h"
#include "log.h"
#include "resident.h"
#include "size.h"

#define CHUNK_SHIFT 12
#define CHUNK_SIZE (1u << CHUNK_SHIFT)
#define PIN_ONE (UINT64_C (1) << 32)
#define ENTRY(v) ((uint32_t) (v))
#define PINS(v) ((uint32_t) ((v) >> 32))

struct memory_disk {
  uint64_t size;
  uint64_t nr_chunks;           /* directory entries */
  uint64_t *dir;                /* entry | pins << 32 */
  unsigned char *store;         /* reserved chunks */
  uint32_t nr_store;
  uint32_t *free;               /* free stack of store indexes */
  uint32_t nr_free;
  pthread_spinlock_t free_lock;
  pthread_rwlock_t lock;
};

static int
parse_sizes (const struct backend_param *p, size_t n, uint64_t *size,
             uint64_t *reserve)
{
  const char *s = backend_param_get (p, n, "size");
  const char *r = backend_param_get (p, n, "reserve");
  const char *why;

  if (!s) {
    return backend_param_error ("memory: size=SIZE is required");
  }
  if (size_parse (s, size, &why) == -1) {
    return backend_param_error ("memory: size=%s: %s", s, why);
  }
  *reserve = *size;
  if (r && size_parse (r, reserve, &why) == -1) {
    return backend_param_error ("memory: reserve=%s: %s", r, why);
  }
  if (*reserve > *size)
    *reserve = *size;
  if ((*reserve + CHUNK_SIZE - 1) >> CHUNK_SHIFT >= UINT32_MAX ||
      (*size + CHUNK_SIZE - 1) >> CHUNK_SHIFT > (UINT64_C (1) << 36)) {
    return backend_param_error ("memory: size too large");
  }
  return 0;
}

static void *
memory_config (const struct backend_param *p, size_t n, bool readonly)
{
  static const char *const known[] = { "size", "reserve", NULL };
  struct memory_disk *d;
  uint64_t size, reserve;

  if (backend_params_check ("memory", p, n, known) == -1 ||
      parse_sizes (p, n, &size, &reserve) == -1)
    return NULL;
  d = calloc (1, sizeof *d);
  if (!d)
    fatal ("calloc: %m");
  d->size = size;
  d->nr_chunks = (size + CHUNK_SIZE - 1) >> CHUNK_SHIFT;
  d->nr_store = (reserve + CHUNK_SIZE - 1) >> CHUNK_SHIFT;
  pthread_spin_init (&d->free_lock, PTHREAD_PROCESS_PRIVATE);
  pthread_rwlock_init (&d->lock, NULL);
  return d;
}

static int
memory_open (void *h)
{
  struct memory_disk *d = h;

  d->dir = resident_map ((d->nr_chunks ? d->nr_chunks : 1) * sizeof *d->dir);
  d->free = resident_map ((d->nr_store ? d->nr_store : 1) * sizeof *d->free);
  d->store = resident_map (d->nr_store ? (size_t) d->nr_store * CHUNK_SIZE : 1);
  if (!d->dir || !d->free || !d->store) {
    log_error ("memory: cannot reserve %" PRIu64 " bytes: %m "
               "(reserve=SIZE reserves less)",
               (uint64_t) d->nr_store * CHUNK_SIZE);
    return -1;
  }
  for (uint32_t i = 0; i < d->nr_store; i++)
    d->free[i] = d->nr_store - 1 - i;
  d->nr_free = d->nr_store;
  log_info ("memory: %" PRIu64 " bytes, %" PRIu64 " reserved at start",
            d->size, (uint64_t) d->nr_store * CHUNK_SIZE);
  return 0;
}

static void
memory_close (void *h)
{
  struct memory_disk *d = h;

  if (d->dir)
    munmap (d->dir, (d->nr_chunks ? d->nr_chunks : 1) * sizeof *d->dir);
  if (d->free)
    munmap (d->free, (d->nr_store ? d->nr_store : 1) * sizeof *d->free);
  if (d->store)
    munmap (d->store, d->nr_store ? (size_t) d->nr_store * CHUNK_SIZE : 1);
  pthread_rwlock_destroy (&d->lock);
  pthread_spin_destroy (&d->free_lock);
  free (d);
}

static uint64_t memory_get_size (void *h) { return ((struct memory_disk *) h)->size; }

static uint32_t
memory_get_caps (void *h)
{
  return BACKEND_CAN_WRITE | BACKEND_CAN_FLUSH | BACKEND_CAN_FUA |
         BACKEND_CAN_TRIM | BACKEND_CAN_ZERO | BACKEND_CAN_FAST_ZERO |
         BACKEND_CAN_CACHE | BACKEND_CAN_EXTENTS | BACKEND_CAN_MULTI_CONN;
}

static inline unsigned char *
chunk_ptr (struct memory_disk *d, uint32_t entry)
{
  return d->store + (size_t) (entry - 1) * CHUNK_SIZE;
}

/* Walk [offset, offset+count) chunk by chunk. */
#define FOR_EACH_PIECE(offset, count, idx, off, len)                      \
  for (uint64_t _pos = (offset), _end = (offset) + (count);               \
       _pos < _end && ((idx) = _pos >> CHUNK_SHIFT,                       \
                       (off) = _pos & (CHUNK_SIZE - 1),                   \
                       (len) = CHUNK_SIZE - (off) < _end - _pos           \
                               ? CHUNK_SIZE - (off) : _end - _pos, 1);    \
       _pos += (len))

static int
memory_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  struct memory_disk *d = h;
  unsigned char *out = buf;
  uint64_t idx;
  uint32_t off, len;

  pthread_rwlock_rdlock (&d->lock);
  FOR_EACH_PIECE (offset, count, idx, off, len) {
    uint32_t e = ENTRY (__atomic_load_n (&d->dir[idx], __ATOMIC_ACQUIRE));
    if (e)
      memcpy (out, chunk_ptr (d, e) + off, len);
    else
      memset (out, 0, len);
    out += len;
  }
  pthread_rwlock_unlock (&d->lock);
  return 0;
}

/* Fill hole IDX with a fresh chunk, zeroed but for the bytes we write.
 * Returns the entry now in the directory, or 0 if the reservation is full. */
static uint32_t
fill_hole (struct memory_disk *d, uint64_t idx, uint32_t off, uint32_t len,
           const unsigned char *src)
{
  uint32_t e;
  uint64_t expected = 0;        /* a hole has no pins */
  unsigned char *c;

  pthread_spin_lock (&d->free_lock);
  e = d->nr_free ? d->free[--d->nr_free] + 1 : 0;
  pthread_spin_unlock (&d->free_lock);
  if (!e)
    return 0;
  c = chunk_ptr (d, e);
  if (!src)
    memset (c, 0, CHUNK_SIZE);
  else {
    memset (c, 0, off);
    memcpy (c + off, src, len);
    memset (c + off + len, 0, CHUNK_SIZE - off - len);
  }
  if (__atomic_compare_exchange_n (&d->dir[idx], &expected, e, false,
                                   __ATOMIC_RELEASE, __ATOMIC_ACQUIRE))
    return e;
  /* Someone filled it first: give ours back and write into theirs. */
  pthread_spin_lock (&d->free_lock);
  d->free[d->nr_free++] = e - 1;
  pthread_spin_unlock (&d->free_lock);
  if (src)
    memcpy (chunk_ptr (d, ENTRY (expected)) + off, src, len);
  return ENTRY (expected);
}

static int
memory_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
               uint32_t flags)
{
  struct memory_disk *d = h;
  const unsigned char *in = buf;
  uint64_t idx;
  uint32_t off, len;
  int r = 0;

  pthread_rwlock_rdlock (&d->lock);
  FOR_EACH_PIECE (offset, count, idx, off, len) {
    uint32_t e = ENTRY (__atomic_load_n (&d->dir[idx], __ATOMIC_ACQUIRE));
    if (e)
      memcpy (chunk_ptr (d, e) + off, in, len);
    else if (!fill_hole (d, idx, off, len, in)) {
      r = -ENOSPC;
      break;
    }
    in += len;
  }
  pthread_rwlock_unlock (&d->lock);
  return r;
}

/* Zero a range: whole chunks become holes (when allowed), partial chunks
 * are cleared in place.  Holes stay holes: they already read as zeros. */
static int
memory_zero (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct memory_disk *d = h;
  bool may_free = flags & BACKEND_FLAG_MAY_TRIM;
  uint64_t idx;
  uint32_t off, len;

  pthread_rwlock_wrlock (&d->lock);
  FOR_EACH_PIECE (offset, count, idx, off, len) {
    /* Maps wait for the write lock; an unmap may still drop a pin. */
    uint64_t v = __atomic_load_n (&d->dir[idx], __ATOMIC_ACQUIRE);
    uint32_t e = ENTRY (v);
    if (!e)
      continue;
    if (len == CHUNK_SIZE && may_free && PINS (v) == 0) {
      __atomic_store_n (&d->dir[idx], 0, __ATOMIC_RELEASE);
      d->free[d->nr_free++] = e - 1;  /* under the write lock */
    }
    else
      memset (chunk_ptr (d, e) + off, 0, len);
  }
  pthread_rwlock_unlock (&d->lock);
  return 0;
}

static int
memory_trim (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  return memory_zero (h, count, offset, BACKEND_FLAG_MAY_TRIM);
}

/* Unpin the chunks of [offset, offset+count): while pinned, their
 * directory entries cannot change (nothing frees a pinned chunk). */
static void
unpin (struct memory_disk *d, uint32_t count, uint64_t offset)
{
  uint64_t idx;
  uint32_t off, len;

  FOR_EACH_PIECE (offset, count, idx, off, len)
    __atomic_fetch_sub (&d->dir[idx], PIN_ONE, __ATOMIC_RELEASE);
}

static void
memory_unmap (void *h, uint32_t count, uint64_t offset,
              const struct iovec *iov, unsigned n)
{
  unpin (h, count, offset);
}

static int
memory_map (void *h, enum backend_op op, uint32_t count, uint64_t offset,
            struct iovec *iov, unsigned max)
{
  struct memory_disk *d = h;
  uint64_t idx, done = 0;
  uint32_t off, len;
  unsigned n = 0;
  int r = 0;

  /* The read lock keeps trim and zero out while chunks are pinned (and so
   * a filled entry stays filled); once pinned, they stay ours after it is
   * dropped. */
  pthread_rwlock_rdlock (&d->lock);
  FOR_EACH_PIECE (offset, count, idx, off, len) {
    uint32_t e = ENTRY (__atomic_load_n (&d->dir[idx], __ATOMIC_ACQUIRE));
    unsigned char *p;

    if (!e && op == BACKEND_OP_READ)
      goto undo;                /* holes: the caller copies (zeros) */
    if (!e && !(e = fill_hole (d, idx, 0, CHUNK_SIZE, NULL))) {
      r = -ENOSPC;
      goto undo;
    }
    p = chunk_ptr (d, e) + off;
    if (n && (unsigned char *) iov[n - 1].iov_base + iov[n - 1].iov_len == p)
      iov[n - 1].iov_len += len;
    else if (n == max)
      goto undo;                /* too scattered */
    else
      iov[n++] = (struct iovec) { p, len };
    __atomic_fetch_add (&d->dir[idx], PIN_ONE, __ATOMIC_ACQ_REL);
    done += len;
  }
  pthread_rwlock_unlock (&d->lock);
  return n;

 undo:
  unpin (d, done, offset);
  pthread_rwlock_unlock (&d->lock);
  return r;
}

static int
memory_extents (void *h, uint32_t count, uint64_t offset, uint32_t flags,
                struct backend_extents *e)
{
  struct memory_disk *d = h;
  uint64_t idx;
  uint32_t off, len;

  pthread_rwlock_rdlock (&d->lock);
  FOR_EACH_PIECE (offset, count, idx, off, len) {
    uint32_t type = ENTRY (__atomic_load_n (&d->dir[idx], __ATOMIC_ACQUIRE))
      ? 0 : BACKEND_EXTENT_HOLE | BACKEND_EXTENT_ZERO;
    if (backend_extents_add (e, idx * CHUNK_SIZE + off, len, type) ||
        ((flags & BACKEND_FLAG_REQ_ONE) && e->n > 1))
      break;
  }
  pthread_rwlock_unlock (&d->lock);
  if ((flags & BACKEND_FLAG_REQ_ONE) && e->n > 1)
    e->n = 1;
  return 0;
}

const struct backend_ops memory_backend_ops = {
  .name = "memory",
  .synopsis = "size=SIZE [reserve=SIZE]: a sparse RAM disk",
  .help = "           size=SIZE     device size (required), e.g. 1G, 64M+1234\n"
          "           reserve=SIZE  storage reserved and locked at start\n"
          "                         (default: size); writes beyond it: ENOSPC\n",
  .props = BACKEND_INLINE,
  .config = memory_config,
  .open = memory_open,
  .close = memory_close,
  .get_size = memory_get_size,
  .get_caps = memory_get_caps,
  .pread = memory_pread,
  .pwrite = memory_pwrite,
  .trim = memory_trim,
  .zero = memory_zero,
  .extents = memory_extents,
  .map = memory_map,
  .unmap = memory_unmap,
};
