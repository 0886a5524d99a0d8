/* Internal state of the NBD server, shared by its files:
 *   conn.c          connection I/O: input buffer, reply queue, close
 *   handshake.c     option negotiation
 *   transmission.c  requests and replies
 *   server.c        loops, pools, hand-off of accepted sockets
 *   tls.c           STARTTLS: the handshake, kTLS (tls.h)
 *   tls-record.c    TLS records in userspace where kTLS cannot be used
 * All of it is owned by one loop thread; nothing here is locked except
 * the hand-off queue in struct nbd_loop.
 */
#ifndef UBDKIT_NBD_INTERNAL_H
#define UBDKIT_NBD_INTERNAL_H

#include <stdbool.h>
#include <stdint.h>
#include <time.h>
#include <sys/socket.h>
#include <sys/uio.h>

#include "ubdkit/backend.h"
#include "loop.h"
#include "request-pool.h"
#include "protocol.h"
#include "server.h"
#include "server-stats.h"

#define CONN_RBUF   32768       /* input buffer: headers, options, names,
                                 * small write payloads */
/* A write payload up to this size is gathered in the input buffer with its
 * header, so one recv brings several small writes (and one sendmsg then
 * answers them); larger payloads are received straight into the backend's
 * storage or a slot buffer. */
#define SMALL_PAYLOAD (CONN_RBUF / 2)
#define CONN_TBUF   10240       /* handshake reply buffer */
#define SEND_BATCH  64          /* iovecs in one sendmsg */
#define REQ_IOV     16          /* a mapped piece: iovecs into the backend */

struct conn;

/* A request slot (lives in the loop's request pool). */
struct req {
  struct conn *c;
  struct req *next;             /* reply queue */
  struct backend_io io;
  struct backend_extents ext;   /* BLOCK_STATUS answers (in buf) */
  uint16_t type, nflags;
  uint32_t bflags;              /* backend flags */
  uint64_t cookie, offset;
  uint64_t count;               /* 64-bit only with extended headers */
  uint64_t pos;                 /* bytes done */
  uint32_t piece;               /* bytes in the current piece */
  uint32_t have;                /* payload bytes of this piece received */
  int err;                      /* negative errno to report */
  bool discard;                 /* drain a rejected write's payload */
  bool final;                   /* the queued piece ends the request */
  bool pumping, again;          /* an effect-only request's piece loop */
  void *buf;                    /* the slot's data buffer */
  /* The current piece mapped in the backend's storage (backend_map): the
   * data is sent from, or received into, these instead of buf. */
  struct iovec iov[REQ_IOV];
  unsigned niov;
  /* The queued piece: a header (at most 32 bytes) and up to 12 bytes of
   * chunk payload, then optional data. */
  unsigned char hdr[44];
  uint32_t hdr_len, data_len, sent;
};

enum conn_phase { PHASE_HANDSHAKE, PHASE_TRANSMISSION };

struct nbd_loop;

struct conn {
  struct nbd_loop *nl;
  struct conn *next_free;
  int fd;
  bool in_use;
  bool dead;                    /* socket failed: drop replies */
  bool read_done;               /* no more input wanted (EOF, DISC, stop) */
  enum conn_phase phase;
  char peer[64];
  /* TLS (tls.c): the connection's state from STARTTLS on; tls_up once
   * the handshake is over and the client authorized. */
  struct tls_conn *tls;
  bool tls_up;
  uint32_t rwant;               /* recv no more than this in the buffer
                                 * (0: all it holds): the TLS handshake
                                 * reads a record at a time */

  /* Input. */
  unsigned char rbuf[CONN_RBUF];
  uint32_t rstart, rend;
  bool recv_busy;
  bool recv_after_send;         /* recv_more waits for send_work */
  struct loop_event recv_ev;
  struct req *rx_req;           /* a write whose payload is arriving */
  struct iovec riov[REQ_IOV];   /* rest of a mapped payload to receive */
  struct msghdr rmsg;
  struct loop_work input_work;
  bool waiting_slot;
  bool hogging;                 /* parked: half the pool, replies stuck */
  struct conn *wait_next;
  time_t started;               /* for the handshake timeout */
  /* The backend as this connection sees it (its own handle, for
   * backends with per-connection handles). */
  struct backend_conn bconn;
  bool hs_paused;               /* the greeting or an option waits for a
                                 * job of the backend's (bconn) */
  int connect_res;              /* a failed connect, for its option */
  size_t pre_next;              /* the next export to preconnect */
  char name[NBDP_MAX_NAME + 1]; /* the export name connected to */
  /* NBD_OPT_LIST by the default export's backend (conn_list_exports):
   * its replies, written by a worker into tbuf[0, list_len) while paused,
   * up to list_room; list_res is its result once done (1: listed). */
  uint32_t list_len, list_room;
  int list_res;

  /* Handshake. */
  int hs_state;
  uint32_t cflags, opt, optlen;
  uint64_t discard;
  unsigned char tbuf[CONN_TBUF];
  uint32_t tlen, toff;
  bool after_reply_go, after_reply_close;
  bool structured;
  bool extended;                /* extended headers (implies structured) */
  bool meta_base_alloc;
  const struct export *meta_export;

  /* Transmission. */
  const struct export *exp;
  const struct backend *b;      /* &bconn.view once an export is chosen */
  uint16_t tflags;
  unsigned inflight;            /* slots held */

  /* Replies. */
  struct req *sq_head, **sq_tail;
  struct req *stream_owner;     /* a reply split over pieces, half sent */
  bool send_busy;
  struct loop_event send_ev;
  struct loop_work send_work;
  struct iovec iov[SEND_BATCH];
  struct msghdr msg;
};

struct nbd_loop {
  struct loop loop;
  struct request_pool pool;
  struct conn *conns;
  unsigned nr_conns;
  struct conn *free_conns;
  struct conn *wait_head, *wait_tail;  /* waiting for a slot */
  bool stopping;
  unsigned active;              /* conns in use (loop thread's view) */
  unsigned fair_share;          /* slots one connection may hold while its
                                 * replies are not draining */
  unsigned handshake_timeout;   /* seconds */
  struct loop_event tick_ev;    /* 1 s timer */
  struct __kernel_timespec tick;
  /* Hand-off from the main thread. */
  pthread_mutex_t handoff_lock;
  struct handoff { int fd; char peer[64]; } *handoff;
  unsigned nr_handoff;
  atomic_uint assigned;         /* conns given to this loop, not yet closed */
  /* Do the clients pipeline?  Of the last PIPE_WINDOW requests parsed, how
   * many found an earlier one of their connection still unanswered. */
  unsigned win_reqs, win_piped;
  struct stats_block *stats;    /* one per export (stats.h) */
};

/* Polling (loop.c) is held while more than 1/PIPE_SHARE of the requests
 * of a window arrive with one of their connection's still in flight.  A
 * client with one request at a time never does that: it sends the next
 * only after it has read our reply, and we released that reply's slot long
 * before (the send completes as it is submitted). */
#define PIPE_WINDOW 64
#define PIPE_SHARE  8

/* The loops (server.c), for the counters' readers (stats.c), and the
 * connections accepted (written by the accepting thread only). */
extern struct nbd_loop *server_loops;
extern unsigned server_nr_loops;
extern _Atomic uint64_t server_accepted;

/* The counters of the export C is connected to. */
#define conn_stats(c) (&(c)->nl->stats[(c)->exp - server_exports])

/* Exports, shared read-only by all loops. */
extern const struct export *server_exports;
extern size_t server_nr_exports;
const struct export *server_find_export (const char *name, size_t len);

/* conn.c */
void conn_init (struct conn *c, struct nbd_loop *nl, int fd, const char *peer);
void conn_input (struct conn *c);
void conn_schedule_input (struct conn *c);
void conn_recv_payload (struct conn *c, void *dst, uint32_t len);
void conn_recv_payload_mapped (struct conn *c, struct req *r);
unsigned iov_tail (struct iovec *dst, unsigned max, const struct iovec *src,
                   unsigned nsrc, size_t skip);
void conn_send_tbuf (struct conn *c);
void conn_queue_reply (struct conn *c, struct req *r);
void conn_fail (struct conn *c);
void conn_maybe_close (struct conn *c);
void conn_stop_reading (struct conn *c);
uint32_t conn_avail (const struct conn *c);
/* The backend C serves export E through, connected to it under the name
 * NAME of LEN bytes (the client's, copied) if not yet.  NULL while the connect runs on a
 * worker (c->hs_paused: the caller returns and its option runs again
 * when the connect finished), or when the connect failed (the caller
 * refuses the option). */
const struct backend *conn_backend (struct conn *c, const struct export *e,
                                    const char *name, uint32_t len);
/* Start a new connection: the backends' preconnect steps on workers (the
 * connection is dropped if one refuses), then the greeting. */
void conn_start (struct conn *c);
/* NBD_OPT_LIST by the default export's backend, if it lists exports of its
 * own: 0 if it does not (nor while paused: c->hs_paused, the option runs
 * again when the list is done), 1 when its replies are in tbuf (tlen),
 * written by ADD within ROOM bytes, or a negative errno (-E2BIG: they did
 * not fit) to refuse the option with. */
int conn_list_exports (struct conn *c, uint32_t room,
                       int (*add) (struct backend_conn *, const char *,
                                   const char *));

/* handshake.c: 1 progress, 0 need more input, -1 closed, 2 paused until
 * the backend connected (conn_backend). */
void handshake_start (struct conn *c);
int handshake_step (struct conn *c);

/* transmission.c: 1 progress, 0 need more input, 2 blocked on the pool. */
int transmission_step (struct conn *c);
void transmission_payload (struct req *r, int res);
void transmission_piece_sent (struct req *r);
void req_release (struct req *r);
uint16_t transmission_flags (const struct backend *b, bool structured);

#endif
