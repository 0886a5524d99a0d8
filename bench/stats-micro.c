/* stats-micro: what one request's counting costs on this CPU, alone.
 *
 * The end-to-end comparison in stats-cost.sh is at the mercy of a shared
 * 2-core host; this times the exact bumps one NBD request makes
 * (stats_request at parse, stats_bump of completed at release; the error
 * path is rarer) in a loop, with the counters on and with stats_off set,
 * and prints nanoseconds per request for each.  Built and run by
 * stats-cost.sh: cc -O2 -I lib/core bench/stats-micro.c lib/core/stats.c
 */
#include <stdio.h>
#include <stdlib.h>
#include <time.h>

#include "stats.h"

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* One request, as transmission.c counts it; noinline so that the loop
 * cannot be merged into a few wide additions. */
__attribute__ ((noinline)) static void
one_request (struct stats_block *s, unsigned op, uint64_t len)
{
  stats_request (s, op, len);
  stats_bump (&s->completed, 1);
}

__attribute__ ((noinline)) static void
no_request (struct stats_block *s, unsigned op, uint64_t len)
{
  (void) s; (void) op; (void) len;
  __asm__ volatile ("" ::: "memory");
}

static double
run (void (*fn) (struct stats_block *, unsigned, uint64_t),
     struct stats_block *s, long n)
{
  double t = now ();

  for (long i = 0; i < n; i++)
    fn (s, i & 1, 4096);
  return (now () - t) * 1e9 / n;
}

int
main (int argc, char **argv)
{
  long n = argc > 1 ? atol (argv[1]) : 200000000;
  static struct stats_block s;
  double base, on, off;

  base = run (no_request, &s, n);
  on = run (one_request, &s, n);
  stats_off = true;
  off = run (one_request, &s, n);
  printf ("%.2f %.2f %.2f\n", base, on, off);
  return s.completed == (uint64_t) n ? 0 : 1;
}
