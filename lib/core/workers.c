/* Worker threads for backends whose callbacks block (every nbdkit plugin).
 *
 * All threads are created at start-up, after the forward-progress steps,
 * so they inherit IO_FLUSHER.  The queue is an intrusive list through the
 * requests' own backend_io, so queueing allocates nothing and can never be
 * full.  A finished request is posted back to the loop (or ublk queue)
 * thread that started it, which runs its done callback; loop and queue
 * threads therefore never block on a backend.
 *
 * Per-connection handles (backends with connect) are opened and closed by
 * the same workers, through a second intrusive list of the connections'
 * own struct backend_conn, ahead of requests.  A connect to a backend
 * that takes one connection at a time waits on that backend's list until
 * the connection before it closed, without holding a worker.
 */
#include <config.h>

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <time.h>

#include "log.h"
#include "loop.h"
#include "workers.h"

static struct {
  pthread_mutex_t lock;
  pthread_cond_t cond;
  struct backend_io *head, *tail;
  bool stop;
  struct backend_conn *conn_head, *conn_tail;  /* connects, disconnects */
  pthread_cond_t sync_cond;     /* synchronous connects wait here */
  pthread_t *threads;
  unsigned n;
  /* How many to wake (see wake_for_queue). */
  unsigned queued;              /* requests on the list */
  unsigned sleepers;            /* workers waiting on cond */
  unsigned waking;              /* of those, signalled and not yet up */
  unsigned to_signal;           /* signals owed, sent after unlocking */
  unsigned executing;            /* requests in the backend now */
  uint64_t svc_ns;              /* a request's time in the backend */
  uint64_t win_min;             /* the shortest in this window */
  unsigned win_count;
} W = { .lock = PTHREAD_MUTEX_INITIALIZER, .cond = PTHREAD_COND_INITIALIZER,
        .sync_cond = PTHREAD_COND_INITIALIZER };

/* Waking a sleeping worker costs a context switch on each side, and on a
 * virtual machine an IPI and the other CPU's exit from idle: some tens of
 * microseconds of CPU that the loops and the awake workers could have
 * used.  A request from a fast backend (memory, a file in the page cache,
 * a pass-through filter) takes a few microseconds, so waking a worker for
 * each queued request, as a plain condition-variable pool does, spends
 * more on waking than on serving: with eight workers a 4k QD32 load cost
 * 1.5 context switches per request.  So the pool wakes only as many
 * workers as the queue needs: enough, beside those already in the backend,
 * to drain what is queued within about the cost of one wake-up, at the
 * backend time a request takes when nothing contends (update_svc).
 * A slow backend (a network plugin, a sleep) therefore gets a worker for
 * every queued request, as before; a fast one gets one or two.
 *
 * The estimate is history, and a backend that was fast may hang in a call.
 * The workers in the backend are not counted as able to take the queue, so
 * while requests are queued at least one worker is up and free to take
 * them (or none is left asleep): a request that hangs holds only its own
 * worker, never the queue behind it (tests/test-workers-stall.sh). */
#define WAKE_NS 20000

/* Wake one sleeping worker that is not already being woken.  Under
 * W.lock; the signal goes out in unlock_and_wake, once the lock is free,
 * so that the worker does not wake only to wait for the lock. */
static bool
kick (void)
{
  if (W.sleepers <= W.waking)
    return false;
  W.waking++;
  W.to_signal++;
  return true;
}

static void
unlock_and_wake (void)
{
  unsigned n = W.to_signal;

  W.to_signal = 0;
  pthread_mutex_unlock (&W.lock);
  while (n--)
    pthread_cond_signal (&W.cond);
}

/* Wake workers until enough are up for what is queued.  Under W.lock. */
static void
wake_for_queue (void)
{
  unsigned up = W.n - W.sleepers + W.waking;
  uint64_t need, want;

  if (W.queued == 0)
    return;
  need = (W.queued * W.svc_ns + WAKE_NS - 1) / WAKE_NS;
  if (need == 0)
    need = 1;
  if (need > W.queued)
    need = W.queued;
  want = W.executing + need;
  while (up < want && kick ())
    up++;
}

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

/* Connection jobs.  Lists and counts are under W.lock. */

static void
push_conn (struct backend_conn **head, struct backend_conn **tail,
           struct backend_conn *bc)
{
  bc->next = NULL;
  if (*tail)
    (*tail)->next = bc;
  else
    *head = bc;
  *tail = bc;
}

static struct backend_conn *
pop_conn (struct backend_conn **head, struct backend_conn **tail)
{
  struct backend_conn *bc = *head;

  *head = bc->next;
  if (!*head)
    *tail = NULL;
  return bc;
}

/* Let connect BC run now, or wait for its turn. */
static void
admit (struct backend_conn *bc)
{
  struct backend *b = bc->b;

  if ((b->caps & BACKEND_ONE_CONNECTION) && b->nr_conns > 0) {
    push_conn (&b->wait_head, &b->wait_tail, bc);
    return;
  }
  b->nr_conns++;
  push_conn (&W.conn_head, &W.conn_tail, bc);
  kick ();
}

/* A connection of B ended (or never began): the next waiting may run. */
static void
release (struct backend *b)
{
  b->nr_conns--;
  if (b->wait_head)
    admit (pop_conn (&b->wait_head, &b->wait_tail));
}

/* What a finished job leaves: a connection or none (the steps before
 * connect leave it as it was). */
static void
settle (struct backend_conn *bc)
{
  if (bc->job == BACKEND_JOB_CONNECT)
    bc->connected = bc->result == 0;
  else if (bc->job == BACKEND_JOB_DISCONNECT)
    bc->connected = false;
}

static void
conn_done (struct loop_work *w)
{
  struct backend_conn *bc = container_of (w, struct backend_conn, work);

  bc->busy = false;
  settle (bc);
  bc->done (bc, bc->result);
}

/* Hand BC's result back: to its loop, or to the synchronous caller. */
static void
finish (struct backend_conn *bc, int res)
{
  bc->result = res;
  if (bc->loop) {
    bc->work.fn = conn_done;
    loop_post (bc->loop, &bc->work);
    return;
  }
  pthread_mutex_lock (&W.lock);
  bc->busy = false;
  settle (bc);
  pthread_cond_broadcast (&W.sync_cond);
  pthread_mutex_unlock (&W.lock);
}

static void
run_conn_job (struct backend_conn *bc)
{
  int r = 0;

  switch (bc->job) {
  case BACKEND_JOB_CONNECT: r = backend_conn_open (bc); break;
  case BACKEND_JOB_DISCONNECT: backend_conn_close (bc); break;
  case BACKEND_JOB_PRECONNECT: r = backend_conn_preconnect (bc); break;
  case BACKEND_JOB_LIST: r = backend_conn_list (bc); break;
  }
  if (bc->job == BACKEND_JOB_DISCONNECT ||
      (bc->job == BACKEND_JOB_CONNECT && r < 0)) {
    pthread_mutex_lock (&W.lock);
    release (bc->b);
    unlock_and_wake ();
  }
  finish (bc, r);
}

/* Queue a job for the workers (or, without a pool, run it here).  Only
 * a connect counts as a connection and may have to wait its turn. */
static void
start_conn_job (struct backend_conn *bc)
{
  bool connect = bc->job == BACKEND_JOB_CONNECT;

  if (W.n == 0) {
    if (connect)
      bc->b->nr_conns++;
    run_conn_job (bc);
    return;
  }
  pthread_mutex_lock (&W.lock);
  if (connect)
    admit (bc);
  else {
    push_conn (&W.conn_head, &W.conn_tail, bc);
    kick ();
  }
  unlock_and_wake ();
}

/* BC starts a job from a loop (L) or, with L NULL, a blocking caller.
 * Returns 1 (its done is due). */
static int
start_job (struct backend_conn *bc, struct loop *l, enum backend_job job,
           void (*done) (struct backend_conn *, int))
{
  bc->loop = l;
  bc->done = done;
  bc->job = job;
  bc->busy = true;
  bc->result = 0;
  start_conn_job (bc);
  return 1;
}

int
backend_connect_start (struct backend_conn *bc, struct backend *b,
                       struct loop *l, const char *export,
                       void (*done) (struct backend_conn *, int))
{
  bc->b = b;
  bc->export = export;
  if (!b->ops->connect) {
    bc->view = *b;              /* the one shared handle */
    if (b->ops->props & BACKEND_LIVE_SIZE)
      bc->view.size = b->ops->get_size (b->h);
    bc->connected = true;
    return 0;
  }
  return start_job (bc, l, BACKEND_JOB_CONNECT, done);
}

int
backend_disconnect_start (struct backend_conn *bc, struct loop *l,
                          void (*done) (struct backend_conn *, int))
{
  if (!bc->connected || !bc->b->ops->connect) {
    bc->connected = false;
    return 0;
  }
  bc->connected = false;
  return start_job (bc, l, BACKEND_JOB_DISCONNECT, done);
}

int
backend_preconnect_start (struct backend_conn *bc, struct backend *b,
                          struct loop *l,
                          void (*done) (struct backend_conn *, int))
{
  if (!b->ops->preconnect)
    return 0;
  bc->asked = b;
  return start_job (bc, l, BACKEND_JOB_PRECONNECT, done);
}

int
backend_list_start (struct backend_conn *bc, struct backend *b,
                    struct loop *l,
                    int (*add) (struct backend_conn *, const char *,
                                const char *),
                    void (*done) (struct backend_conn *, int))
{
  if (!b->ops->list_exports)
    return 0;
  bc->asked = b;
  bc->list_add = add;
  return start_job (bc, l, BACKEND_JOB_LIST, done);
}

void
backend_connect_cancel (struct backend_conn *bc)
{
  struct backend *b = bc->b;
  struct backend_conn **p;
  bool found = false;

  if (bc->job != BACKEND_JOB_CONNECT)
    return;                     /* only connects wait for their turn */
  pthread_mutex_lock (&W.lock);
  for (p = &b->wait_head; *p; p = &(*p)->next)
    if (*p == bc) {
      *p = bc->next;
      if (b->wait_tail == bc)
        b->wait_tail = p == &b->wait_head
          ? NULL : container_of (p, struct backend_conn, next);
      found = true;
      break;
    }
  pthread_mutex_unlock (&W.lock);
  if (found)
    finish (bc, -ECANCELED);
}

static int
wait_sync (struct backend_conn *bc)
{
  pthread_mutex_lock (&W.lock);
  while (bc->busy)
    pthread_cond_wait (&W.sync_cond, &W.lock);
  pthread_mutex_unlock (&W.lock);
  return bc->result;
}

int
backend_connect (struct backend_conn *bc, struct backend *b,
                 const char *export)
{
  bc->peer_fd = -1;
  bc->tls = false;
  if (backend_preconnect_start (bc, b, NULL, NULL) == 1 &&
      wait_sync (bc) < 0) {
    log_error ("%s: the backend refused the connection (preconnect)",
               b->args);
    return -1;
  }
  if (backend_connect_start (bc, b, NULL, export, NULL) == 0)
    return 0;
  if (wait_sync (bc) < 0) {
    log_error ("%s: the backend refused the connection", b->args);
    return -1;
  }
  return 0;
}

void
backend_disconnect (struct backend_conn *bc)
{
  if (backend_disconnect_start (bc, NULL, NULL) == 1)
    wait_sync (bc);
}


/* The workers. */

/* The backend time of a request, as the shortest over the last window of
 * requests (WINDOW to twice that): what a request costs when nothing
 * contends.  An average would follow contention instead (eight workers
 * writing to one file wait on its inode lock), and waking more workers
 * for it would feed it.  Under W.lock. */
#define WINDOW 64

static void
update_svc (uint64_t spent)
{
  if (spent < W.win_min)
    W.win_min = spent;
  if (++W.win_count == WINDOW) {
    W.svc_ns = W.win_min;
    W.win_min = UINT64_MAX;
    W.win_count = 0;
  }
  else if (W.win_min < W.svc_ns)
    W.svc_ns = W.win_min;
}

/* Take the next job: a connection's first (handshakes wait for it), else a
 * request.  SPENT is how long the worker's last request took in the
 * backend (0: none).  Returns false when stopping with nothing left. */
static bool
next_job (struct backend_conn **bc, struct backend_io **io, uint64_t spent)
{
  bool more = true;

  *bc = NULL;
  *io = NULL;
  pthread_mutex_lock (&W.lock);
  if (spent) {
    W.executing--;
    update_svc (spent);
  }
  while (!W.head && !W.conn_head && !W.stop) {
    W.sleepers++;
    pthread_cond_wait (&W.cond, &W.lock);
    W.sleepers--;
    if (W.waking)
      W.waking--;
  }
  if (W.conn_head)
    *bc = pop_conn (&W.conn_head, &W.conn_tail);
  else if (W.head) {
    *io = W.head;
    W.head = (*io)->next_io;
    if (!W.head)
      W.tail = NULL;
    W.queued--;
    W.executing++;
    wake_for_queue ();
  }
  else
    more = false;
  unlock_and_wake ();
  return more;
}

static uint64_t
now_ns (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec * UINT64_C (1000000000) + ts.tv_nsec;
}

static void *
worker_main (void *arg)
{
  struct backend_conn *bc;
  struct backend_io *io;
  uint64_t spent = 0, start;

  log_set_thread_name ("worker");
  prctl (PR_SET_NAME, "worker");
  while (next_job (&bc, &io, spent)) {
    spent = 0;
    if (bc) {
      run_conn_job (bc);
      continue;
    }
    start = now_ns ();
    io->result = backend_call (io->backend, io, io->ext);
    spent = now_ns () - start;
    if (spent == 0)
      spent = 1;
    io->work.fn = worker_done;
    loop_post (io->loop, &io->work);
  }
  return NULL;
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
  W.queued++;
  wake_for_queue ();
  unlock_and_wake ();
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
  W.svc_ns = WAKE_NS;           /* until measured: a worker a request */
  W.win_min = UINT64_MAX;
  W.win_count = 0;
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
