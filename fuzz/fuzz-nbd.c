/* A libFuzzer target for the NBD server: handshake and transmission.
 *
 * The real server runs once, with one loop thread, two request slots of
 * 16 KiB (so large requests stream in pieces and pipelined ones wait for a
 * slot) and a 1 MiB memory disk.  Each input is a whole client session:
 * it is written into one end of a socketpair whose other end is handed to
 * server_add_connection, then the write side is shut down and everything
 * the server says is read and thrown away until it hangs up.
 *
 * A session must end: the server must close the connection once the
 * client's input has ended, within FUZZ_NBD_TIMEOUT seconds (default 10).
 * If it does not (a hang, a connection slot never released) the target
 * aborts, so the input that caused it is the one reported.
 *
 * FUZZ_NBD_TLS=on|require: the server offers or requires TLS, with PSK
 * credentials: the fuzzer then explores options before STARTTLS, the
 * refusals of --tls=require and whatever a client sends as its TLS
 * handshake (fuzz/corpus-tls has seeds).
 *
 * The same file builds without libFuzzer: fuzz/replay.c calls these
 * functions for every file of the corpus and the regressions (make check).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "ubdkit/backend.h"
#include "log.h"
#include "server.h"

int LLVMFuzzerInitialize (int *argc, char ***argv);
int LLVMFuzzerTestOneInput (const uint8_t *data, size_t size);
void fuzz_nbd_stop (void);

static struct backend disk;
static struct export export;
static double timeout_s = 10;
static bool verbose;           /* FUZZ_NBD_VERBOSE: print bytes in and out */

static double
now (void)
{
  struct timespec ts;

  clock_gettime (CLOCK_MONOTONIC, &ts);
  return ts.tv_sec + ts.tv_nsec / 1e9;
}

static void __attribute__ ((noreturn))
hang (const char *what)
{
  fprintf (stderr, "fuzz-nbd: %s within %g s: the server hangs\n", what,
           timeout_s);
  abort ();
}

int
LLVMFuzzerInitialize (int *argc, char ***argv)
{
  char size[] = "size=1M";
  char *params[] = { size };
  struct server_options o = {
    .threads = 1, .depth = 2, .buf_size = 16384, .max_connections = 1,
    .handshake_timeout = 30,    /* the daemon's default; never 0 there */
  };
  const char *t = getenv ("FUZZ_NBD_TIMEOUT");

  const char *tls = getenv ("FUZZ_NBD_TLS");
  static char psk[64];

  if (t)
    timeout_s = atof (t);
  if (tls) {
    FILE *f;
    snprintf (psk, sizeof psk, "/tmp/fuzz-nbd-%d.psk", (int) getpid ());
    f = fopen (psk, "w");
    if (!f || fputs ("alice:0123456789abcdef0123456789abcdef\n", f) < 0 ||
        fclose (f) != 0)
      abort ();
    o.tls.mode = strcmp (tls, "on") == 0 ? TLS_ON : TLS_REQUIRE;
    o.tls.psk = psk;
  }
  verbose = getenv ("FUZZ_NBD_VERBOSE") != NULL;
  log_quiet = true;
  if (backend_config (&disk, "memory", params, 1, false) == -1 ||
      backend_open (&disk) == -1)
    abort ();
  export = (struct export) { "", "fuzzing", &disk };
  if (server_start (&o, &export, 1) == -1)
    abort ();
  return 0;
}

/* A connected socket whose other end the server owns; sets *server_fd. */
static int
connect_server (int *server_fd)
{
  double deadline = now () + timeout_s;
  int sv[2];

  for (;;) {
    if (socketpair (AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) == -1) {
      perror ("socketpair");
      abort ();
    }
    /* The previous connection is closed (its fd is gone) but the server
     * may not have counted it free yet: then it refuses, and we retry. */
    if (server_add_connection (sv[0], "fuzz") == 0)
      break;
    close (sv[1]);
    if (now () > deadline)
      hang ("no connection slot came free");
    usleep (1000);
  }
  *server_fd = sv[0];
  return sv[1];
}

/* Write DATA while reading (and discarding) replies, so neither side can
 * block the other; then half-close and read until the server hangs up.
 * Returns the number of bytes read. */
static size_t
run_session (int fd, const uint8_t *data, size_t size)
{
  double deadline = now () + timeout_s;
  bool writing = true;
  size_t off = 0, got = 0;
  char buf[65536];

  fcntl (fd, F_SETFL, O_NONBLOCK);
  if (size == 0) {
    shutdown (fd, SHUT_WR);
    writing = false;
  }
  for (;;) {
    struct pollfd p = { .fd = fd, .events = POLLIN | (writing ? POLLOUT : 0) };
    ssize_t n;

    if (now () > deadline)
      hang ("the session did not end");
    if (poll (&p, 1, 100) <= 0)
      continue;
    if (writing && (p.revents & (POLLOUT | POLLERR | POLLHUP))) {
      n = send (fd, data + off, size - off, MSG_NOSIGNAL);
      if (n > 0)
        off += n;
      if ((n == -1 && errno != EAGAIN && errno != EINTR) || off == size) {
        shutdown (fd, SHUT_WR);   /* fails harmlessly if the peer is gone */
        writing = false;
      }
    }
    if (p.revents & (POLLIN | POLLHUP | POLLERR)) {
      n = read (fd, buf, sizeof buf);
      if (n == 0 || (n == -1 && errno != EAGAIN && errno != EINTR))
        return got;               /* EOF, or reset */
      if (n > 0)
        got += n;
    }
  }
}

/* The server closes its end when it is done with the connection: its fd
 * number, which nothing else in this process reuses meanwhile (the loop
 * thread opens no files), then stops being valid. */
static void
wait_server_closed (int server_fd)
{
  double deadline = now () + timeout_s;

  while (fcntl (server_fd, F_GETFD) != -1 || errno != EBADF) {
    if (now () > deadline)
      hang ("the connection was not closed");
    usleep (100);
  }
}

int
LLVMFuzzerTestOneInput (const uint8_t *data, size_t size)
{
  int server_fd, fd = connect_server (&server_fd);
  size_t got = run_session (fd, data, size);

  if (verbose)
    fprintf (stderr, "fuzz-nbd: %zu bytes in, %zu bytes out\n", size, got);
  close (fd);
  wait_server_closed (server_fd);
  return 0;
}

/* For replay.c: stop the server, so a leak checker sees a clean exit.
 * (libFuzzer never returns from its main.) */
void
fuzz_nbd_stop (void)
{
  server_stop ();
  backend_close (&disk);
}
