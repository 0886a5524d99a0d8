/* See request-pool.h.  Buffers come from one anonymous mapping, written once
 * so every page is present before the first request; under mlockall they
 * then stay resident.  They are never MADV_DONTNEED'd while the pool lives. */
#include <config.h>

#include <assert.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "log.h"
#include "request-pool.h"
#include "resident.h"

int
request_pool_init (struct request_pool *p, size_t nr_slots, size_t slot_size,
                   size_t buf_size)
{
  size_t i, page = sysconf (_SC_PAGESIZE);

  memset (p, 0, sizeof *p);
  if (nr_slots == 0 || nr_slots > UINT32_MAX || slot_size == 0 ||
      buf_size == 0 || buf_size % page) {
    log_error ("request pool: bad geometry (%zu slots of %zu bytes)",
               nr_slots, buf_size);
    return -1;
  }
  if (buf_size > SIZE_MAX / nr_slots) {
    log_error ("request pool: %zu x %zu bytes overflows", nr_slots, buf_size);
    return -1;
  }
  slot_size = (slot_size + 63) & ~(size_t) 63;  /* no false sharing */
  p->nr_slots = nr_slots;
  p->slot_size = slot_size;
  p->buf_size = buf_size;
  p->slots = resident_map ((nr_slots * slot_size + page - 1) & ~(page - 1));
  p->bufs = resident_map (nr_slots * buf_size);
  p->free = calloc (nr_slots, sizeof *p->free);
  if (!p->slots || !p->bufs || !p->free) {
    log_error ("request pool: cannot reserve %zu slots of %zu bytes: %m",
               nr_slots, buf_size);
    request_pool_free (p);
    return -1;
  }
  /* Hand out low indexes first: they are the warmest in cache. */
  for (i = 0; i < nr_slots; i++)
    p->free[i] = nr_slots - 1 - i;
  p->nr_free = p->low_water = nr_slots;
  return 0;
}

void
request_pool_free (struct request_pool *p)
{
  size_t page = sysconf (_SC_PAGESIZE);

  if (p->slots)
    munmap (p->slots, (p->nr_slots * p->slot_size + page - 1) & ~(page - 1));
  if (p->bufs)
    munmap (p->bufs, p->nr_slots * p->buf_size);
  free (p->free);
  memset (p, 0, sizeof *p);
}

void *
request_pool_get (struct request_pool *p)
{
  void *slot;

  if (p->nr_free == 0) {
    p->empty++;
    return NULL;
  }
  slot = p->slots + (size_t) p->free[--p->nr_free] * p->slot_size;
  if (p->nr_free < p->low_water)
    p->low_water = p->nr_free;
  p->gets++;
  memset (slot, 0, p->slot_size);
  return slot;
}

void
request_pool_put (struct request_pool *p, void *slot)
{
  size_t i = request_pool_index (p, slot);

  assert (i < p->nr_slots);
  assert (p->nr_free < p->nr_slots);
  p->free[p->nr_free++] = i;
}
