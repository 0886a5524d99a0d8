/* Internal to plugins/nbd: the backend handle (nbd.c), its connections
 * ("lanes", lane.c), and its blocking table for the nbdkit filter host
 * (blocking.c).  See nbd.c and blocking.c for the designs. */
#ifndef UBDKIT_PLUGINS_NBD_REMOTE_H
#define UBDKIT_PLUGINS_NBD_REMOTE_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>

#include <libnbd.h>
#include <liburing.h>

#include "ubdkit/backend.h"
#include "loop.h"

#define MAX_LANES 16
#define MAX_THREADS 256
#define DEFAULT_MAX_BLOCK BACKEND_MAX_REQUEST
#define MAX_BACKOFF 30.0            /* seconds between attempts at most */
#define IN_FLIGHT (1u << 31)        /* io->phase: libnbd owns the request */

enum lane_state { LANE_CONNECTED, LANE_CONNECTING, LANE_LOST, LANE_DOWN };

/* A list of requests linked through next_io. */
struct io_list {
  struct backend_io *head, **tail;
};

struct remote;

/* What a remote export advertised (remote_learn). */
struct remote_info {
  uint64_t size;
  uint32_t caps, min_block, pref_block, max_block;
  uint32_t max_request;            /* the remote's maximum: pieces */
};

struct lane {
  struct remote *r;
  struct nbd_handle *nbd;
  int fd;
  enum lane_state state;
  unsigned attempts;               /* reconnection attempts in this outage */
  _Atomic uint64_t reconnects;     /* successful ones, since open (written
                                    * by the owner thread only) */
  struct loop *loop;               /* the owner thread; NULL until claimed */
  struct loop_event in_ev, out_ev, timer_ev;
  bool in_armed, out_armed, timer_armed, cancelled;
  struct __kernel_timespec ts;
  struct io_list pending;          /* waiting for a connection */
  struct io_list done;             /* completed by libnbd, to look at */
  struct loop_work kick_work;
  /* Requests from other threads, under lock. */
  pthread_mutex_t lock;
  struct io_list inbox;
  bool inbox_posted;
  struct loop_work inbox_work;
};

struct remote {
  bool conn;                       /* false: tells it from a remote_ctx */
  char *uri;
  unsigned nlanes, retry;
  double retry_delay;
  bool readonly;
  struct remote_info info;
  struct lane lanes[MAX_LANES];
  _Atomic uint64_t ctx_reconnects; /* blocking.c's, over all contexts */
  /* Which lane each thread uses: appended under lock, read without. */
  pthread_mutex_t lock;
  unsigned nclaimed;
  struct { struct loop *loop; struct lane *lane; } map[MAX_THREADS];
  atomic_uint nmap;
};


extern const struct backend_ops remote_blocking_ops;

/* The backend's close (both tables): R and whatever its lanes hold. */
void remote_close (void *h);
/* A handle connected to R's URI, or NULL after logging. */
struct nbd_handle *remote_connect (const struct remote *r);
/* What the remote behind NBD advertises, into *INFO (R: its URI for
 * messages, readonly=).  0, or -1 after logging. */
int remote_learn (const struct remote *r, struct nbd_handle *nbd,
                  struct remote_info *info);
/* libnbd's extent callback: base:allocation entries appended to
 * USER_DATA, a struct backend_extents, until it is full. */
int remote_on_extents (void *user_data, const char *context,
                       uint64_t offset, uint32_t *entries, size_t n,
                       int *error);
/* Set up lane LN of R around its connected handle ln->nbd. */
void lane_init (struct lane *ln, struct remote *r);
/* A libnbd handle set up for the remote: NULL (see nbd_get_error) or a
 * handle that asks for base:allocation and may read the files a URI names
 * (tls-psk-file, tls-certificates: the URI is the administrator's, from
 * the command line, as with nbdinfo). */
struct nbd_handle *remote_handle_new (void);
/* Take IO on the lane's owner thread (from submit: completes nothing
 * before returning). */
void lane_take (struct lane *ln, struct backend_io *io);

static inline void
list_init (struct io_list *l)
{
  l->head = NULL;
  l->tail = &l->head;
}

static inline void
list_push (struct io_list *l, struct backend_io *io)
{
  io->next_io = NULL;
  *l->tail = io;
  l->tail = &io->next_io;
}

static inline struct backend_io *
list_pop (struct io_list *l)
{
  struct backend_io *io = l->head;

  if (io && !(l->head = io->next_io))
    l->tail = &l->head;
  return io;
}


#endif
