/* ubdkit backend interface: the contract between the frontends (NBD, ublk)
 * and every backend (plugins/<name>).
 *
 * Error rule: every data-path callback returns 0 or a negative errno and
 * never relies on the global errno.  Set-up callbacks (open) log once where
 * they have context and return NULL.
 *
 * Threads: open/close run on the main thread before/after serving;
 * connect/disconnect (per-connection handles) on worker threads.  Data
 * callbacks run on a loop (or ublk queue) thread; backends that set
 * BACKEND_INLINE never block and are called directly there, so they must be
 * thread safe.  A backend may offer `submit` to queue its I/O on the
 * calling thread's io_uring instead of blocking.
 *
 * Every request is checked by backend_check() (lib/core/backend.c) before a
 * backend sees it: offset and count are inside the device, flags are ones
 * the backend advertised, and the operation is one it can do.  Callbacks
 * therefore never need to re-validate.
 */
#ifndef UBDKIT_BACKEND_H
#define UBDKIT_BACKEND_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "ubdkit/event.h"

struct io_uring;
struct iovec;
struct loop;
struct backend_conn;

/* Request types, shared by both frontends. */
enum backend_op {
  BACKEND_OP_READ,
  BACKEND_OP_WRITE,
  BACKEND_OP_FLUSH,
  BACKEND_OP_TRIM,
  BACKEND_OP_ZERO,
  BACKEND_OP_CACHE,
  BACKEND_OP_EXTENTS,
};

/* Request flags. */
#define BACKEND_FLAG_FUA      (1u << 0) /* durable before completion */
#define BACKEND_FLAG_MAY_TRIM (1u << 1) /* ZERO may punch a hole */
#define BACKEND_FLAG_FAST     (1u << 2) /* ZERO: fail with -ENOTSUP if slow */
#define BACKEND_FLAG_REQ_ONE  (1u << 3) /* EXTENTS: one extent is enough */

/* Capabilities, the answers of nbdkit's can_* queries as one bit mask. */
#define BACKEND_CAN_WRITE      (1u << 0)
#define BACKEND_CAN_FLUSH      (1u << 1)
#define BACKEND_CAN_FUA        (1u << 2)
#define BACKEND_CAN_TRIM       (1u << 3)
#define BACKEND_CAN_ZERO       (1u << 4)
#define BACKEND_CAN_FAST_ZERO  (1u << 5)
#define BACKEND_CAN_CACHE      (1u << 6)
#define BACKEND_CAN_EXTENTS    (1u << 7)
#define BACKEND_CAN_MULTI_CONN (1u << 8)
#define BACKEND_IS_ROTATIONAL  (1u << 9)
/* Not a client-visible capability: one connection at a time (nbdkit's
 * SERIALIZE_CONNECTIONS); a second one waits until the first closed. */
#define BACKEND_ONE_CONNECTION (1u << 10)

#define BACKEND_SUBMIT_DONE 1

/* Execution properties. */
#define BACKEND_INLINE (1u << 0) /* never blocks: call on the loop thread */
/* submit can read and write a buffer registered in the caller's ring
 * (backend_io.fixed_buf) without ever touching its bytes: ublk zero copy,
 * where the buffer is the kernel request's own pages. */
#define BACKEND_FIXED_BUF (1u << 1)
/* get_size never blocks and follows a size that may change while serving
 * (rbd: the image's header watch): each new connection asks it again
 * instead of taking the size seen at open. */
#define BACKEND_LIVE_SIZE (1u << 2)

/* Extents: filled by the extents callback into caller-owned storage
 * (preallocated with the request, never grown). */
#define BACKEND_EXTENT_HOLE (1u << 0)
#define BACKEND_EXTENT_ZERO (1u << 1)
struct backend_extent {
  uint64_t offset;
  uint64_t length;
  uint32_t type;
};
struct backend_extents {
  struct backend_extent *v;
  size_t n, max;
  uint64_t start, end; /* the range asked about */
};
/* Append an extent; merges with the previous one of the same type.
 * Returns 0, or 1 when the array is full (the caller stops: what it has is a
 * valid prefix of the answer). */
int backend_extents_add (struct backend_extents *e, uint64_t offset,
                         uint64_t length, uint32_t type);

/* Key=value parameters from the command line. */
#define BACKEND_MAX_PARAMS 256
struct backend_param {
  const char *key;
  const char *value;
};

/* An asynchronous request handed to `submit`.  The backend completes it
 * exactly once by calling io->done(io, res) on the submitting thread, with
 * res 0 or -errno.  It must not call done from inside submit. */
struct backend_io {
  struct loop_event ev;               /* for the backend's own SQEs */
  enum backend_op op;
  uint32_t flags;
  uint64_t offset;
  uint32_t count;
  void *buf;
  /* READ/WRITE with buf NULL: the data is buffer buf_index of the ring's
   * registered buffer table, from its offset 0 (only for backends with
   * BACKEND_FIXED_BUF, whose submit must then take the request). */
  bool fixed_buf;
  uint16_t buf_index;
  uint32_t done_bytes;                /* backend scratch: partial progress */
  void (*done) (struct backend_io *io, int res);
  struct backend_extents *ext;        /* EXTENTS: where to put them */
  /* Used by the core while the request waits for or runs on a worker. */
  struct backend_io *next_io;
  struct loop *loop;
  const struct backend *backend;
  int result;
  struct loop_work work;
  /* Backend scratch space for its own completion bookkeeping. */
  struct io_uring *ring;
  void *priv;
  uint32_t phase;
};

struct backend_ops {
  const char *name;
  const char *synopsis;   /* one line for `ubdkit --help` */
  const char *help;       /* key=value documentation */
  uint32_t props;         /* BACKEND_INLINE ... */
  /* A host for plugins of another program (nbdkit): selected by the
   * prefix "NAME:" ("nbdkit:memory"), its config gets raw words (keys
   * NULL): params[0].value is the text after "NAME:", the rest are the
   * arguments as given, '=' or not.  Its config runs foreign code, so
   * backend_config reports its failures as run-time errors (-2). */
  bool host;

  /* Parse and check parameters, acquiring nothing but the handle: runs
   * before the daemon sets anything up, so bad arguments fail fast.
   * Returns a handle, or NULL after backend_param_error. */
  void *(*config) (const struct backend_param *params, size_t n,
                   bool readonly);
  /* Acquire resources (open files, reserve memory).  Optional.  Returns 0,
   * or -1 after logging. */
  int (*open) (void *h);
  /* Release the handle and whatever open acquired (open may not have run,
   * or may have failed half way). */
  void (*close) (void *h);
  /* Optional: this process handed the backend to a child that serves it
   * (ubdkit add's server): the close that follows must not run exit
   * callbacks the child runs (an nbdkit plugin's cleanup and unload). */
  void (*forget) (void *h);

  /* Per-connection handles (optional: nbdkit plugins have them; the
   * built-in backends serve every connection through the one handle).
   * connect runs for each client connection (once for a ublk device) and
   * returns the connection's handle, which get_size, get_caps, block_size
   * and the data callbacks then receive instead of H; or NULL after
   * logging (the client is refused).  EXPORT is the name the client asked
   * for ("": the default), kept by the backend only until disconnect;
   * TLS says whether the client negotiated TLS (NBD_OPT_STARTTLS).
   * disconnect releases the connection after its last request.  Both may
   * block: they run on worker threads (backend_connect_start).  Without
   * connect, get_size and get_caps are asked once, in backend_open; with
   * it, once per connection (the backend's own get_caps may still report
   * BACKEND_ONE_CONNECTION). */
  void *(*connect) (void *h, const char *export, bool readonly, int peer_fd,
                    bool tls);
  void (*disconnect) (void *ch);
  /* Per-connection steps before connect (optional), on workers too; both
   * get the client's socket PEER_FD (-1: a ublk device has none).
   * preconnect runs as soon as a client connected, before the NBD
   * greeting: 0, or -1 after logging (the client is dropped).
   * list_exports answers NBD_OPT_LIST with the backend's own export names,
   * which the default export then accepts (any name goes to its connect):
   * it calls bc->list_add for each and returns 0, -EIO after logging, or
   * what list_add returned when it refused one. */
  int (*preconnect) (void *h, int peer_fd, bool readonly);
  int (*list_exports) (void *h, int peer_fd, bool readonly,
                       struct backend_conn *bc);

  uint64_t (*get_size) (void *h);
  /* BACKEND_LIVE_SIZE backends that learn of a change (optional): a file
   * descriptor that turns readable (an eventfd: read it to rearm) when the
   * size may have changed; get_size then tells.  A ublk device follows it
   * (daemon/supervisor.c). */
  int (*size_fd) (void *h);
  uint32_t (*get_caps) (void *h);     /* BACKEND_CAN_* */
  /* Block size constraints (optional): minimum, preferred, maximum. */
  void (*block_size) (void *h, uint32_t *min, uint32_t *pref, uint32_t *max);

  /* Synchronous data path.  Optional where the capability is absent. */
  int (*pread) (void *h, void *buf, uint32_t count, uint64_t offset);
  int (*pwrite) (void *h, const void *buf, uint32_t count, uint64_t offset,
                 uint32_t flags);
  int (*flush) (void *h);
  int (*trim) (void *h, uint32_t count, uint64_t offset, uint32_t flags);
  int (*zero) (void *h, uint32_t count, uint64_t offset, uint32_t flags);
  int (*cache) (void *h, uint32_t count, uint64_t offset);
  int (*extents) (void *h, uint32_t count, uint64_t offset, uint32_t flags,
                  struct backend_extents *e);
  /* Synchronous callbacks may block (not BACKEND_INLINE and no submit):
   * they then run on worker threads, never on loop or queue threads. */

  /* Optional asynchronous path on the calling thread's ring.  Returns 0 if
   * queued (done will be called), BACKEND_SUBMIT_DONE if it completed at
   * once without blocking (done is not called), or a negative errno if it
   * could not be queued (done is not called).  Ops it does not take
   * (returns -ENOSYS) go through the synchronous callbacks. */
  int (*submit) (void *h, struct io_uring *ring, struct backend_io *io);
  /* Optional, for a backend with submit alone: the same backend with a
   * blocking data path for callers on worker threads (the nbdkit filter
   * host, which puts it in place of ops after config: it takes config's
   * handle, and its open, connect and close are the ones then used). */
  const struct backend_ops *blocking;

  /* Optional direct access, for backends whose storage is the data itself
   * (memory): describe [offset, offset+count) as at most MAX iovecs into
   * the backend's own storage, so a frontend sends a READ's reply from it
   * or receives a WRITE's payload into it without a copy.  For a WRITE,
   * holes get fresh zeroed storage first (may fail with -ENOSPC), and the
   * write is complete, and as durable as FUA asks, once the bytes are in
   * place.  Returns the number of iovecs; 0 when the range does not fit
   * in MAX or (READ) has holes: the caller then uses pread/pwrite; or a
   * negative errno.  The storage stays with the range (trim and zero do
   * not free it) until unmap is called with the same range and the iovecs
   * map gave.  Runs on the calling thread and never blocks. */
  int (*map) (void *h, enum backend_op op, uint32_t count, uint64_t offset,
              struct iovec *iov, unsigned max);
  void (*unmap) (void *h, uint32_t count, uint64_t offset,
                 const struct iovec *iov, unsigned n);

  /* Optional, for the counters (lib/core/stats.h): how many times the
   * backend has re-established its connection to a remote since open.
   * Called from any thread; must not block. */
  uint64_t (*reconnects) (void *h);

  /* nbdkit compat: optional, for a connection's handle (from connect),
   * for NBD_INFO_NAME and NBD_INFO_DESCRIPTION: the export's canonical
   * name (what "" stood for) and its description; NULL for none.  Asked
   * on the loop thread: answers kept at connect, never blocking. */
  const char *(*conn_name) (void *ch);
  const char *(*conn_description) (void *ch);
};

/* The largest read or write ubdkit serves, as nbdkit does (64 MiB): the
 * default maximum block size of every backend, and the cap on what a
 * backend may ask for.  A larger request is streamed through the slot's
 * buffer (--buffer-size), so this bounds time per request, not memory. */
#define BACKEND_MAX_REQUEST (64u * 1024 * 1024)

/* A backend opened for serving: ops + handle + cached answers. */
struct backend {
  const struct backend_ops *ops;
  void *h;
  uint64_t size;
  uint32_t caps;
  uint32_t min_block, pref_block, max_block;
  bool readonly;
  char *args;   /* "name k=v ..." as given, for logs and `list` */
  /* Connections holding a handle, and connects waiting for their turn
   * (BACKEND_ONE_CONNECTION); under the worker pool's lock. */
  unsigned nr_conns;
  struct backend_conn *wait_head, *wait_tail;
};

enum backend_job {
  BACKEND_JOB_CONNECT, BACKEND_JOB_DISCONNECT, BACKEND_JOB_PRECONNECT,
  BACKEND_JOB_LIST,
};

/* One connection's view of a backend, in storage the frontend preallocated
 * (one per NBD connection slot, one per ublk device).  Once connected,
 * `view` is what the connection serves: the backend itself for backends
 * without connect, else a copy holding the connection's handle and its
 * own size, capabilities and block sizes. */
struct backend_conn {
  struct backend view;
  struct backend *b;            /* the backend connected to */
  const char *export;           /* kept, not copied, until connected */
  int peer_fd;                  /* the client's socket; -1: none (ublk) */
  bool tls;                     /* the client negotiated TLS */
  bool connected;               /* view is valid; disconnect is due */
  bool busy;                    /* a job is under way */
  enum backend_job job;         /* the job under way (or last) */
  struct backend *asked;        /* PRECONNECT, LIST: the backend asked (b
                                 * stays the one connected to) */
  /* LIST: called on the worker for each export, while the frontend waits
   * for done: 0, or a negative errno to stop the list (-E2BIG). */
  int (*list_add) (struct backend_conn *bc, const char *name,
                   const char *description);
  int result;
  void (*done) (struct backend_conn *bc, int res);
  /* Used by the core while the job waits for or runs on a worker. */
  struct backend_conn *next;
  struct loop *loop;            /* NULL: a synchronous caller waits */
  struct loop_work work;
};

/* The built-in backends, in --help order. */
extern const struct backend_ops file_backend_ops;
extern const struct backend_ops memory_backend_ops;
extern const struct backend_ops null_backend_ops;
#ifdef HAVE_NBDKIT
extern const struct backend_ops plughost_backend_ops;  /* plugins/nbdkit */
#endif
/* --filter (plugins/nbdkit/filter.c): filter_chain_add records a filter
 * name (outermost first) and sets backend_filter_hook; the next
 * backend_config clears the hook and lets it configure the filter chain
 * over the backend it was asked for. */
extern int (*backend_filter_hook) (struct backend *b, const char *name,
                                   char **argv, int argc, bool readonly);
#ifdef HAVE_NBDKIT
extern const struct backend_ops filter_backend_ops;
void filter_chain_add (const char *name);
#endif
#ifdef HAVE_LIBNBD
/* plugins/nbd, linked into the daemon only (not into lib/ and its unit
 * tests, which would then need libnbd): weak, NULL where absent. */
extern const struct backend_ops remote_backend_ops __attribute__((weak));
#endif
#ifdef HAVE_LIBRBD
/* plugins/rbd, linked into the daemon only, as plugins/nbd. */
extern const struct backend_ops rbd_backend_ops __attribute__((weak));
#endif

/* Find a built-in backend by name (a host by "NAME:..."); NULL if none. */
const struct backend_ops *backend_lookup (const char *name);
/* List built-in backends on stdout. */
void backend_print_list (void);

/* Configure BACKEND with key=value arguments into *b.  Returns 0, -1
 * after logging a usage error (unknown backend or key, bad value: exit 2),
 * or -2 after logging a host's failure (an nbdkit plugin refused its
 * configuration: a run-time error, exit 1, as nbdkit exits).  Then
 * backend_open acquires its resources: 0, or -1 after logging.  Release
 * with backend_close in either case. */
int backend_config (struct backend *b, const char *name, char **argv,
                    int argc, bool readonly);
int backend_open (struct backend *b);
void backend_close (struct backend *b);
/* At exit, with no request in flight: flush B if it can and may be
 * written, logging a failure with NAME.  Returns 0 or -1. */
int backend_flush_at_exit (struct backend *b, const char *name);
/* backend_close in a process whose child served B (see ops.forget). */
void backend_forget (struct backend *b);

/* Connect BC to backend B (export name EXPORT, kept until then) from loop
 * L's thread.  Returns 0 if BC is connected already (a backend without
 * connect: done is not called), or 1: connect runs on a worker (after
 * the connection before it closed, for BACKEND_ONE_CONNECTION) and
 * done (bc, 0 or -errno) runs later on L's thread. */
int backend_connect_start (struct backend_conn *bc, struct backend *b,
                           struct loop *l, const char *export,
                           void (*done) (struct backend_conn *, int));
/* Release a connected BC from L's thread, after its last request: 0 if
 * done at once (done is not called), else 1 and done runs later on L's
 * thread, after the backend's disconnect ran on a worker. */
int backend_disconnect_start (struct backend_conn *bc, struct loop *l,
                              void (*done) (struct backend_conn *, int));
/* The per-connection steps before connect (backend_ops.preconnect,
 * list_exports) of backend B, for connection BC (peer_fd set) from loop
 * L's thread: 0 if B has no such step (done is not called), else 1 and
 * done (bc, 0 or -errno) runs later on L's thread.  BC may be connected
 * to another backend meanwhile (bc->b is left alone). */
int backend_preconnect_start (struct backend_conn *bc, struct backend *b,
                              struct loop *l,
                              void (*done) (struct backend_conn *, int));
int backend_list_start (struct backend_conn *bc, struct backend *b,
                        struct loop *l,
                        int (*add) (struct backend_conn *, const char *,
                                    const char *),
                        void (*done) (struct backend_conn *, int));
/* A connect still waiting for its turn ends with -ECANCELED without
 * reaching the backend (its done still runs).  Loop thread only. */
void backend_connect_cancel (struct backend_conn *bc);
/* The same from a thread that may block (not a loop), for a connection
 * without a socket (a ublk device): preconnect, then connect, each waiting
 * for its worker.  backend_connect returns 0, or -1 after logging. */
int backend_connect (struct backend_conn *bc, struct backend *b,
                     const char *export);
void backend_disconnect (struct backend_conn *bc);

/* The backend's size as it is now (get_size asked again: a file or
 * block device may have grown), for `ubdkit resize`; b->size is left
 * alone.  Backends with connect keep the size of the connection. */
uint64_t backend_query_size (const struct backend *b);

/* The one checking layer: returns 0 if the request may go to the backend,
 * else the negative errno to answer with (-EINVAL, -ENOSPC, -EPERM,
 * -EOPNOTSUPP ...). */
int backend_check (const struct backend *b, enum backend_op op,
                   uint64_t offset, uint64_t count, uint32_t flags);

/* Run one request synchronously on a checked range. */
int backend_call (const struct backend *b, struct backend_io *io,
                  struct backend_extents *ext);
/* Start a checked request from loop L's thread: queued on L's ring when
 * the backend can (submit), run at once when it never blocks
 * (BACKEND_INLINE), else run on a worker thread.  io->done runs exactly
 * once, on L's thread (possibly before this returns). */
void backend_start (const struct backend *b, struct loop *l,
                    struct backend_io *io);

/* Direct access to a checked range (see backend_ops.map): the number of
 * iovecs, 0 if the backend cannot (the caller copies), or -errno. */
int backend_map (const struct backend *b, enum backend_op op, uint32_t count,
                 uint64_t offset, struct iovec *iov, unsigned max);
void backend_unmap (const struct backend *b, uint32_t count, uint64_t offset,
                    const struct iovec *iov, unsigned n);

/* Worker threads for backends that block, started before serving: N
 * threads, all created now.  Returns 0 or -1 after logging. */
int backend_workers_start (unsigned n);
void backend_workers_stop (void);
/* Does this backend need worker threads? */
bool backend_needs_workers (const struct backend *b);
/* Can its extents be asked on the loop thread at memory speed (an inline
 * backend with an extents callback)?  Then a read may look for holes. */
bool backend_cheap_extents (const struct backend *b);
/* The backend's reconnects (its ops->reconnects), 0 if it has none. */
static inline uint64_t
backend_reconnects (const struct backend *b)
{
  return b->ops->reconnects ? b->ops->reconnects (b->h) : 0;
}

/* Helpers for backends. */
const char *backend_param_get (const struct backend_param *p, size_t n,
                               const char *key);
/* Reject unknown keys: returns 0, or -1 after logging the first unknown. */
int backend_params_check (const char *backend, const struct backend_param *p,
                          size_t n, const char *const *known);
/* Report a bad parameter from config: logs the message, returns -1. */
int backend_param_error (const char *fmt, ...)
  __attribute__((format (printf, 1, 2)));
/* Parse a boolean ("true/false/on/off/yes/no/1/0"); -1 on error. */
int backend_parse_bool (const char *s);

#endif /* UBDKIT_BACKEND_H */
