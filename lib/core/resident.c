/* See resident.h. */
#include <config.h>

#include <stdint.h>
#include <string.h>
#include <sys/mman.h>

#include "resident.h"

#define HUGE_SIZE ((size_t) 2 << 20)

void *
resident_map (size_t len)
{
  size_t map_len;
  unsigned char *p;

  len = (len + 4095) & ~(size_t) 4095;
  map_len = len >= HUGE_SIZE ? len + HUGE_SIZE : len;
  /* PROT_NONE first: under mlockall (MCL_FUTURE) a writable mapping is
   * populated at once, with small pages, before madvise could ask for huge
   * ones.  mprotect below populates it (if locked) after the advice. */
  p = mmap (NULL, map_len, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  if (map_len != len) {
    /* Keep the 2 MiB-aligned part, so whole huge pages fit. */
    uintptr_t a = ((uintptr_t) p + HUGE_SIZE - 1) & ~(uintptr_t) (HUGE_SIZE - 1);
    size_t head = a - (uintptr_t) p, tail = map_len - head - len;

    if (head)
      munmap (p, head);
    if (tail)
      munmap ((unsigned char *) a + len, tail);
    p = (unsigned char *) a;
#ifdef MADV_HUGEPAGE
    madvise (p, len, MADV_HUGEPAGE);  /* a hint: THP may be off */
#endif
  }
  /* A fork (--run, a supervisor) must not make these pages copy-on-write:
   * the next write to them would then need a fresh page. */
  madvise (p, len, MADV_DONTFORK);
  if (mprotect (p, len, PROT_READ | PROT_WRITE) == -1) {
    munmap (p, len);
    return NULL;
  }
  memset (p, 0, len);           /* every page present from now on */
  return p;
}
