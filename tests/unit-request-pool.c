/* The request pool: every slot handed out once, NULL when empty (the
 * backpressure signal), buffers distinct and page aligned, slots zeroed. */
#include <config.h>

#include <stdint.h>
#include <string.h>
#include <unistd.h>

#include "request-pool.h"
#include "unit.h"

struct slot {
  uint64_t a, b;
  char pad[40];
};

int
main (void)
{
  struct request_pool p;
  struct slot *got[16];
  size_t page = sysconf (_SC_PAGESIZE);

  CHECK (request_pool_init (&p, 0, sizeof (struct slot), 4096) == -1);
  CHECK (request_pool_init (&p, 4, sizeof (struct slot), 1000) == -1);
  CHECK (request_pool_init (&p, 16, sizeof (struct slot), 8192) == 0);
  for (int i = 0; i < 16; i++) {
    got[i] = request_pool_get (&p);
    CHECK (got[i] != NULL);
    CHECK (got[i]->a == 0 && got[i]->b == 0);
    CHECK ((uintptr_t) request_pool_buffer (&p, got[i]) % page == 0);
    memset (request_pool_buffer (&p, got[i]), i, 8192);
    got[i]->a = i;
  }
  CHECK (request_pool_in_use (&p) == 16);
  CHECK (request_pool_get (&p) == NULL);       /* empty: backpressure */
  CHECK (p.empty == 1);
  for (int i = 0; i < 16; i++) {
    unsigned char *b = request_pool_buffer (&p, got[i]);
    CHECK (b[0] == i && b[8191] == i);         /* buffers do not overlap */
    for (int k = 0; k < i; k++)
      CHECK (got[k] != got[i]);
  }
  request_pool_put (&p, got[3]);
  CHECK (request_pool_in_use (&p) == 15);
  got[3] = request_pool_get (&p);
  CHECK (got[3] != NULL && got[3]->a == 0);    /* zeroed on reuse */
  CHECK (request_pool_get (&p) == NULL);
  for (int i = 0; i < 16; i++)
    request_pool_put (&p, got[i]);
  CHECK (request_pool_in_use (&p) == 0);
  CHECK (p.low_water == 0);
  CHECK (p.gets == 17);
  request_pool_free (&p);
  UNIT_EXIT ();
}
