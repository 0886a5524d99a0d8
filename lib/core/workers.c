/* Worker threads for backends whose callbacks block (every nbdkit plugin).
 *
 * All threads are created at start-up, after the forward-progress steps,
 * so they inherit IO_FLUSHER.  The queue is an intrusive list through the
 * requests' own backend_io, so queueing allocates nothing and can never be
 * full.  A finished request is posted back to the loop (or ublk queue)
 * thread that started it, which runs its done callback; loop and queue
 * threads therefore never block on a backend.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>

#include "log.h"
#include "loop.h"
#include "workers.h"

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct backend_io *head, *tail;
  bool stop;
  pthread_t *threads;
  unsigned n;
} W = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER };

bool
backend_needs_workers (const struct backend *b)
{
  return !(b->ops->props & BACKEND_INLINE);
}

static void
worker_done (struct loop_work *w)
{
  struct backend_io *io = container_of (w, struct backend_io, work);

  io->done (io, io->result);
}

static void *
worker_main (void *arg)
{
  log_set_thread_name ("worker");
  prctl (PR_SET_NAME, "worker");
  for (;;) {
    struct backend_io *io;

    pthread_mutex_lock (&W.lock);
    while (!W.head && !W.stop)
      pthread_cond_wait (&W.cond, &W.lock);
    if (!W.head) {
      pthread_mutex_unlock (&W.lock);
      return NULL;
    }
    io = W.head;
    W.head = io->next_io;
    if (!W.head)
      W.tail = NULL;
    pthread_mutex_unlock (&W.lock);

    io->result = backend_call (io->backend, io, io->ext);
    io->work.fn = worker_done;
    loop_post (io->loop, &io->work);
  }
}

void
backend_workers_run (const struct backend *b, struct loop *l,
                     struct backend_io *io)
{
  if (W.n == 0) {
    /* No pool (a caller that never started one): run here. */
    io->done (io, backend_call (b, io, io->ext));
    return;
  }
  io->backend = b;
  io->loop = l;
  io->next_io = NULL;
  pthread_mutex_lock (&W.lock);
  if (W.tail)
    W.tail->next_io = io;
  else
    W.head = io;
  W.tail = io;
  pthread_cond_signal (&W.cond);
  pthread_mutex_unlock (&W.lock);
}

int
backend_workers_start (unsigned n)
{
  int r;

  W.threads = calloc (n, sizeof *W.threads);
  if (!W.threads) {
    log_error ("calloc: %m");
    return -1;
  }
  W.stop = false;
  for (W.n = 0; W.n < n; W.n++) {
    r = pthread_create (&W.threads[W.n], loop_thread_attr (), worker_main,
                        NULL);
    if (r) {
      log_error ("pthread_create: %s", strerror (r));
      return -1;
    }
  }
  return 0;
}

/* Called after the loops have stopped: nothing is queued any more. */
void
backend_workers_stop (void)
{
  pthread_mutex_lock (&W.lock);
  W.stop = true;
  pthread_cond_broadcast (&W.cond);
  pthread_mutex_unlock (&W.lock);
  for (unsigned i = 0; i < W.n; i++)
    pthread_join (W.threads[i], NULL);
  free (W.threads);
  W.threads = NULL;
  W.n = 0;
}
