/* memhog: allocate MiB of anonymous memory and make it all matter.
 *
 * Usage: memhog MIB [ROUNDS]
 *
 * Each round writes every page with a pattern derived from the page's
 * address and the round number, then reads all of it back and verifies.
 * With MIB above free memory this drives the kernel into swapping (each
 * round touches every page twice, so pages go out and come back in).
 * Exit status: 0 all rounds verified, 1 a mismatch (data corruption in
 * swap), 2 usage or allocation error.  Progress goes to stdout, one line
 * per phase, so a hang shows where it stopped.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A word of the pattern for the word at address a in round r. */
static inline uint64_t
pattern (uintptr_t a, unsigned r)
{
  uint64_t x = (uint64_t) a ^ ((uint64_t) r * 0x9e3779b97f4a7c15ull);

  x ^= x >> 33;
  x *= 0xff51afd7ed558ccdull;
  x ^= x >> 33;
  return x;
}

int
main (int argc, char **argv)
{
  size_t mib, len, page = sysconf (_SC_PAGESIZE), words;
  unsigned rounds = 3;
  uint64_t *mem;
  double t0 = now (), t;

  if (argc < 2 || argc > 3 || (mib = strtoul (argv[1], NULL, 10)) == 0) {
    fprintf (stderr, "usage: memhog MIB [ROUNDS]\n");
    return 2;
  }
  if (argc == 3)
    rounds = strtoul (argv[2], NULL, 10);
  len = mib << 20;
  mem = mmap (NULL, len, PROT_READ | PROT_WRITE,
              MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (mem == MAP_FAILED) {
    perror ("memhog: mmap");
    return 2;
  }
  words = len / sizeof *mem;
  printf ("memhog: pid %d, %zu MiB, %u rounds\n", (int) getpid (), mib, rounds);
  fflush (stdout);
  for (unsigned r = 1; r <= rounds; r++) {
    size_t step = page / sizeof *mem, bad = 0;

    t = now ();
    /* Every word of every page: a lost or misplaced page cannot pass. */
    for (size_t i = 0; i < words; i++)
      mem[i] = pattern ((uintptr_t) &mem[i], r);
    printf ("memhog: round %u written in %.1f s\n", r, now () - t);
    fflush (stdout);
    t = now ();
    for (size_t p = 0; p < words; p += step)
      for (size_t i = p; i < p + step; i++)
        if (mem[i] != pattern ((uintptr_t) &mem[i], r)) {
          if (bad++ < 5)
            printf ("memhog: MISMATCH round %u at offset %zu: %016llx\n", r,
                    i * sizeof *mem, (unsigned long long) mem[i]);
          break;                /* one report per page */
        }
    if (bad) {
      printf ("memhog: FAIL: %zu bad pages in round %u\n", bad, r);
      return 1;
    }
    printf ("memhog: round %u verified in %.1f s\n", r, now () - t);
    fflush (stdout);
  }
  printf ("memhog: OK in %.1f s\n", now () - t0);
  return 0;
}
