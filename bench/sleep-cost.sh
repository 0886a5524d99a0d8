#!/usr/bin/env bash
# sleep-cost.sh: the CPU time this host charges a thread for one sleep and
# wake-up (nanosleep of 1-50 us, 20000 times each), next to its wall time.
# On a VM whose idle exits are dear, this bounds what any server can spend
# per request at QD1: between two requests it either sleeps (this cost) or
# stays on its CPU (the whole gap).  See bench/README.md.
set -euo pipefail
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
cat > "$tmp/s.c" <<'C'
#include <stdio.h>
#include <stdlib.h>
#include <time.h>
#include <sys/resource.h>

static double
us (struct timeval t)
{
  return t.tv_sec * 1e6 + t.tv_usec;
}

int
main (int argc, char **argv)
{
  long ns = atol (argv[1]);
  int n = atoi (argv[2]);
  struct timespec ts = { 0, ns }, t0, t1;
  struct rusage r0, r1;

  clock_gettime (CLOCK_MONOTONIC, &t0);
  getrusage (RUSAGE_SELF, &r0);
  for (int i = 0; i < n; i++)
    nanosleep (&ts, NULL);
  clock_gettime (CLOCK_MONOTONIC, &t1);
  getrusage (RUSAGE_SELF, &r1);
  printf ("| %ld | %.1f | %.2f |\n", ns / 1000,
          ((t1.tv_sec - t0.tv_sec) * 1e9 + (t1.tv_nsec - t0.tv_nsec)) / 1e3 / n,
          (us (r1.ru_utime) - us (r0.ru_utime) + us (r1.ru_stime) -
           us (r0.ru_stime)) / n);
  return 0;
}
C
${CC:-cc} -O2 -o "$tmp/s" "$tmp/s.c"
echo "| sleep asked (us) | wall per sleep (us) | CPU charged per sleep (us) |"
echo "|--:|--:|--:|"
for us in 1 5 10 20 50; do
  "$tmp/s" $((us * 1000)) "${SLEEPS:-20000}"
done
