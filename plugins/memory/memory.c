/* memory: a sparse RAM disk whose storage is reserved at start.
 *
 * All chunk storage is one anonymous mapping made and prefaulted when the
 * backend is opened (reserve=SIZE, by default the whole disk), so the I/O
 * path never asks the kernel for memory.  Storage is handed out in 4 KiB
 * chunks, in one of two layouts:
 *
 * Flat (the default: the reservation covers the disk).  Chunk i of the disk
 * lives at store + i * 4 KiB, always; a bitmap says which chunks hold data
 * (a clear bit is a hole, read as zeros whatever its storage holds).  Trim
 * and zero clear bits; a write into a hole first zeroes the rest of the
 * chunk, then sets its bit, under the fill lock, so two writes filling one
 * hole cannot zero each other's bytes.  Storage never changes offset, so
 * nothing is pinned and nothing is locked on the read and write paths:
 * mapping a random 4 KiB block costs one bit in a bitmap of 32 KiB per GiB
 * (which stays in cache), not a directory entry of 2 MiB per GiB (which
 * misses it).  Requests that race (a trim against a write to the same
 * chunk) leave the bytes of either, possibly torn, as on a real disk.
 *
 * Thin (reserve=SIZE below the disk size).  A directory of 4 KiB chunks; an
 * entry's low 32 bits are 0 for a hole or 1 + the index of a chunk in the
 * reservation, its high 32 bits the chunk's pins (below).  A write takes a
 * chunk from a free stack, trim/zero give whole chunks back to it.  When
 * the reservation is used up a write fails with ENOSPC, like a
 * thin-provisioned disk that is full.  Reads and in-place writes share a
 * read lock (overlapping requests race only on data, as on real disks);
 * filling a hole publishes a fresh chunk with a compare-and-swap; trim and
 * zero, which free chunks, take the write lock so a chunk is never reused
 * while someone still copies from it.
 *
 * Direct access (map): the NBD server sends reads straight from the chunks
 * and receives writes straight into them, one copy instead of two.  In the
 * thin layout a mapped chunk is pinned (a count in its directory entry)
 * until unmapped; trim and zero clear a pinned chunk in place instead of
 * freeing it, so it can never be handed to another offset while a socket
 * still reads or fills it.  The count shares the entry's word, and so its
 * cache line, and unmap finds the entry by the range it was given.
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
  pthread_spinlock_t free_lock;   /* thin: the free stack; flat: fills */
  pthread_rwlock_t lock;          /* thin only */
  bool flat;                      /* chunk i at store + i * CHUNK_SIZE */
  uint64_t *bits;                 /* flat: 1 = the chunk holds data */
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

static size_t
bits_len (const struct memory_disk *d)
{
  return (d->nr_chunks / 64 + 1) * sizeof (uint64_t);
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
  d->flat = d->nr_store >= d->nr_chunks;
  pthread_spin_init (&d->free_lock, PTHREAD_PROCESS_PRIVATE);
  pthread_rwlock_init (&d->lock, NULL);
  return d;
}

static int
memory_open (void *h)
{
  struct memory_disk *d = h;

  if (d->flat) {
    d->bits = resident_map (bits_len (d));
    d->store = resident_map (d->nr_store ? (size_t) d->nr_store * CHUNK_SIZE : 1);
    if (!d->bits || !d->store) {
      log_error ("memory: cannot reserve %" PRIu64 " bytes: %m "
                 "(reserve=SIZE reserves less)",
                 (uint64_t) d->nr_store * CHUNK_SIZE);
      return -1;
    }
    log_info ("memory: %" PRIu64 " bytes, all reserved at start", d->size);
    return 0;
  }
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
  log_info ("memory: %" PRIu64 " bytes, %" PRIu64 " reserved at start "
            "(thin-provisioned)",
            d->size, (uint64_t) d->nr_store * CHUNK_SIZE);
  return 0;
}

static void
memory_close (void *h)
{
  struct memory_disk *d = h;

  if (d->bits)
    munmap (d->bits, bits_len (d));
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

/* The flat layout. */

static inline bool
flat_has_data (struct memory_disk *d, uint64_t idx)
{
  return __atomic_load_n (&d->bits[idx / 64], __ATOMIC_ACQUIRE) >> (idx % 64) & 1;
}

static inline unsigned char *
flat_chunk (struct memory_disk *d, uint64_t idx)
{
  return d->store + idx * CHUNK_SIZE;
}

/* Make hole IDX hold data: zero its chunk but for [off, off+len), copy SRC
 * there (if given, else zero that too), then set its bit.  Under the fill
 * lock: a second write into the same hole waits, then finds data and
 * writes in place, so neither zeroes the other's bytes.  The stale storage
 * of a trimmed chunk never shows: it is all overwritten before the bit is
 * set. */
static void
flat_fill (struct memory_disk *d, uint64_t idx, uint32_t off, uint32_t len,
           const unsigned char *src)
{
  unsigned char *c = flat_chunk (d, idx);

  pthread_spin_lock (&d->free_lock);
  if (!flat_has_data (d, idx)) {
    memset (c, 0, off);
    if (src)
      memcpy (c + off, src, len);
    else
      memset (c + off, 0, len);
    memset (c + off + len, 0, CHUNK_SIZE - off - len);
    __atomic_fetch_or (&d->bits[idx / 64], UINT64_C (1) << (idx % 64),
                       __ATOMIC_RELEASE);
    src = NULL;
  }
  pthread_spin_unlock (&d->free_lock);
  if (src)
    memcpy (c + off, src, len);
}

/* Whole chunks become holes (when allowed): only their bits change.
 * Partial chunks are cleared in place. */
static void
flat_zero (struct memory_disk *d, uint32_t count, uint64_t offset,
           bool may_free)
{
  uint64_t idx;
  uint32_t off, len;

  FOR_EACH_PIECE (offset, count, idx, off, len) {
    if (!flat_has_data (d, idx))
      continue;
    if (len == CHUNK_SIZE && may_free)
      __atomic_fetch_and (&d->bits[idx / 64], ~(UINT64_C (1) << (idx % 64)),
                          __ATOMIC_RELEASE);
    else
      memset (flat_chunk (d, idx) + off, 0, len);
  }
}

/* Contiguous on the disk is contiguous in storage: always one iovec.  A
 * read with a hole in it is refused (the caller sends the hole); a write
 * fills its holes, all zeros until the payload lands. */
static int
flat_map (struct memory_disk *d, enum backend_op op, uint32_t count,
          uint64_t offset, struct iovec *iov)
{
  uint64_t idx;
  uint32_t off, len;

  FOR_EACH_PIECE (offset, count, idx, off, len) {
    if (flat_has_data (d, idx))
      continue;
    if (op == BACKEND_OP_READ)
      return 0;
    flat_fill (d, idx, 0, CHUNK_SIZE, NULL);
  }
  iov[0] = (struct iovec) { d->store + offset, count };
  return 1;
}

/* Both layouts. */

/* The storage of chunk IDX, or NULL for a hole.  In the thin layout only
 * under the read lock (see read_lock): a hole may be filled meanwhile, but
 * a chunk is never freed under it. */
static inline unsigned char *
chunk_data (struct memory_disk *d, uint64_t idx)
{
  uint32_t e;

  if (d->flat)
    return flat_has_data (d, idx) ? flat_chunk (d, idx) : NULL;
  e = ENTRY (__atomic_load_n (&d->dir[idx], __ATOMIC_ACQUIRE));
  return e ? chunk_ptr (d, e) : NULL;
}

/* The thin layout's read lock; the flat layout needs none. */
static void
read_lock (struct memory_disk *d)
{
  if (!d->flat)
    pthread_rwlock_rdlock (&d->lock);
}

static void
read_unlock (struct memory_disk *d)
{
  if (!d->flat)
    pthread_rwlock_unlock (&d->lock);
}

/* The backend operations: where the layouts differ, the flat one
 * dispatches to its functions above and the thin one is done here. */

static int
memory_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  struct memory_disk *d = h;
  unsigned char *out = buf;
  uint64_t idx;
  uint32_t off, len;

  read_lock (d);
  FOR_EACH_PIECE (offset, count, idx, off, len) {
    unsigned char *c = chunk_data (d, idx);
    if (c)
      memcpy (out, c + off, len);
    else
      memset (out, 0, len);
    out += len;
  }
  read_unlock (d);
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

  read_lock (d);
  FOR_EACH_PIECE (offset, count, idx, off, len) {
    unsigned char *c = chunk_data (d, idx);
    if (c)
      memcpy (c + off, in, len);
    else if (d->flat)
      flat_fill (d, idx, off, len, in);
    else if (!fill_hole (d, idx, off, len, in)) {
      r = -ENOSPC;
      break;
    }
    in += len;
  }
  read_unlock (d);
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

  if (d->flat) {
    flat_zero (d, count, offset, may_free);
    return 0;
  }
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
  struct memory_disk *d = h;

  if (!d->flat)                 /* flat storage never moves: no pins */
    unpin (d, count, offset);
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

  if (d->flat)
    return flat_map (d, op, count, offset, iov);
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

  read_lock (d);
  FOR_EACH_PIECE (offset, count, idx, off, len) {
    uint32_t type = chunk_data (d, idx)
      ? 0 : BACKEND_EXTENT_HOLE | BACKEND_EXTENT_ZERO;
    if (backend_extents_add (e, idx * CHUNK_SIZE + off, len, type) ||
        ((flags & BACKEND_FLAG_REQ_ONE) && e->n > 1))
      break;
  }
  read_unlock (d);
  if ((flags & BACKEND_FLAG_REQ_ONE) && e->n > 1)
    e->n = 1;
  return 0;
}

const struct backend_ops memory_backend_ops = {
  .name = "memory",
  .synopsis = "size=SIZE [reserve=SIZE]: a sparse RAM disk",
  .help = "           size=SIZE     device size (required), e.g. 1G, 64M+1234\n"
          "           reserve=SIZE  storage reserved and locked at start\n"
          "                         (default: size); below size the disk is\n"
          "                         thin: writes beyond it fail with ENOSPC\n",
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
