/* The request pool: a mempool of request slots, each with a data buffer,
 * all allocated, locked and prefaulted at start-up.
 *
 * A pool belongs to one thread (an event loop or a ublk queue) and is used
 * without locks.  request_pool_get never allocates: when the pool is empty it
 * returns NULL and the caller stops taking new requests until a slot comes
 * back (backpressure).  Requests larger than a slot's buffer are streamed
 * through it in chunks by the frontends.
 *
 * Ownership: the pool owns the slot array and the buffers; request_pool_free
 * releases both.  A slot handed out by _get is the caller's until _put.
 */
#ifndef UBDKIT_REQUEST_POOL_H
#define UBDKIT_REQUEST_POOL_H

#include <stddef.h>
#include <stdint.h>

struct request_pool {
  size_t nr_slots;
  size_t slot_size;     /* bytes of caller-defined state per slot */
  size_t buf_size;      /* bytes of data buffer per slot */
  unsigned char *slots; /* nr_slots * slot_size */
  unsigned char *bufs;  /* nr_slots * buf_size, page aligned */
  uint32_t *free;       /* stack of free slot indexes */
  size_t nr_free;
  /* Statistics. */
  uint64_t gets, empty; /* successful gets; times it was found empty */
  size_t low_water;     /* fewest free slots seen */
};

/* Allocate and prefault.  Returns 0, or -1 after logging. */
int request_pool_init (struct request_pool *p, size_t nr_slots,
                       size_t slot_size, size_t buf_size);
void request_pool_free (struct request_pool *p);

/* A free slot (zeroed state), or NULL when the pool is empty. */
void *request_pool_get (struct request_pool *p);
void request_pool_put (struct request_pool *p, void *slot);

static inline size_t
request_pool_index (const struct request_pool *p, const void *slot)
{
  return ((const unsigned char *) slot - p->slots) / p->slot_size;
}

/* The data buffer belonging to a slot (buf_size bytes). */
static inline void *
request_pool_buffer (const struct request_pool *p, const void *slot)
{
  return p->bufs + request_pool_index (p, slot) * p->buf_size;
}

static inline size_t
request_pool_in_use (const struct request_pool *p)
{
  return p->nr_slots - p->nr_free;
}

#endif
