/* The event loop's adaptive polling: the rule, and that a loop which was
 * polling stops burning CPU once its load goes away. */
#include <config.h>

#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "loop.h"
#include "unit.h"

static void
check_rule (void)
{
  const uint64_t max = 100000;

  /* Short waits grow the poll from nothing, doubling up to the limit. */
  CHECK (loop_poll_next (0, max, 30000) == 4000);
  CHECK (loop_poll_next (4000, max, 30000) == 8000);
  CHECK (loop_poll_next (64000, max, 90000) == max);
  CHECK (loop_poll_next (max, max, 90000) == max);
  /* A wait the poll covered changes nothing. */
  CHECK (loop_poll_next (8000, max, 8000) == 8000);
  CHECK (loop_poll_next (8000, max, 100) == 8000);
  /* One wait beyond the limit stops polling. */
  CHECK (loop_poll_next (max, max, max + 1) == 0);
  CHECK (loop_poll_next (0, max, 5000000) == 0);
  /* No limit: never poll. */
  CHECK (loop_poll_next (0, 0, 1) == 0);
}

static double
thread_cpu_s (pthread_t t)
{
  clockid_t id;
  struct timespec ts;

  if (pthread_getcpuclockid (t, &id) != 0 || clock_gettime (id, &ts) != 0)
    return -1;
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static double
now_s (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static struct loop l;

static void
on_wake (struct loop *lp)
{
  if (atomic_load (&lp->stop))
    lp->done = true;
}

int
main (void)
{
  double t0, c0, idle_cpu;

  check_rule ();

  /* A real loop, woken every 50 us for 0.2 s (it polls), then left alone
   * for 0.3 s: it must go to sleep rather than poll on. */
  memset (&l, 0, sizeof l);
  l.poll_max_ns = 2000000;
  l.on_wake = on_wake;
  CHECK (loop_start (&l, 0, "unit-loop", 64) == 0);
  c0 = thread_cpu_s (l.thread);
  for (t0 = now_s (); now_s () - t0 < 0.2; ) {
    struct timespec gap = { 0, 50000 };

    loop_wake (&l);
    nanosleep (&gap, NULL);
  }
  fprintf (stderr, "busy loop used %.1f ms of CPU in %.0f ms\n",
           (thread_cpu_s (l.thread) - c0) * 1e3, (now_s () - t0) * 1e3);
  /* Let the first long wait end the polling, then measure. */
  nanosleep (&(struct timespec) { 0, 50000000 }, NULL);
  c0 = thread_cpu_s (l.thread);
  t0 = now_s ();
  nanosleep (&(struct timespec) { 0, 300000000 }, NULL);
  idle_cpu = thread_cpu_s (l.thread) - c0;
  fprintf (stderr, "idle loop used %.1f ms of CPU in %.0f ms\n",
           idle_cpu * 1e3, (now_s () - t0) * 1e3);
  CHECK (c0 >= 0 && idle_cpu >= 0);
  CHECK (idle_cpu < 0.03);
  loop_stop (&l);
  loop_join (&l);
  UNIT_EXIT ();
}
