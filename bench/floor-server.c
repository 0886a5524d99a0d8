/* floor-server: the least an NBD server can do for a memory disk, to
 * measure the floor of server CPU per request on this host.
 *
 * It is not part of ubdkit and serves nothing real: no structured
 * replies, no trim or zeroes, no TLS, no limits beyond a bounds check, a
 * thread per connection.  What it does is the cheapest shape there is:
 * blocking read() of whatever requests have arrived, then one writev() of
 * every reply, sent straight from the disk's memory (one copy, the
 * kernel's), and writes received straight into it.  Whatever this costs per
 * request, no server on this host and client can go below; ubdkit's and
 * nbdkit's costs are read against it (bench/README.md).
 *
 * Usage: floor-server SOCKET SIZE_IN_BYTES
 */

#define _GNU_SOURCE
#include <endian.h>
#include <errno.h>
#include <limits.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/un.h>

#define OPT_MAGIC    0x49484156454F5054ULL  /* "IHAVEOPT" */
#define REP_MAGIC    0x0003e889045565a9ULL
#define REQ_MAGIC    0x25609513U
#define SIMPLE_MAGIC 0x67446698U
#define OPT_EXPORT_NAME 1
#define OPT_ABORT       2
#define OPT_INFO        6
#define OPT_GO          7
#define REP_ACK         1
#define REP_INFO        3
#define REP_ERR_UNSUP   0x80000001U
#define TFLAGS (1 | 4 | 256)    /* HAS_FLAGS, SEND_FLUSH, CAN_MULTI_CONN */
#define MAX_REQ (32u << 20)
#define RBUF (64 * 1024)
#define BATCH 256               /* replies per writev, at most */

static unsigned char *disk;
static uint64_t disk_size;

static int
read_full (int fd, void *buf, size_t n)
{
  for (size_t done = 0; done < n;) {
    ssize_t r = read (fd, (char *) buf + done, n - done);
    if (r <= 0) {
      if (r < 0 && errno == EINTR)
        continue;
      return -1;
    }
    done += r;
  }
  return 0;
}

/* A blocking stream socket's writev returns once everything is queued,
 * unless a signal cuts it short. */
static int
writev_full (int fd, struct iovec *iov, int n)
{
  while (n > 0) {
    ssize_t r = writev (fd, iov, n > IOV_MAX ? IOV_MAX : n);
    if (r < 0) {
      if (errno == EINTR)
        continue;
      return -1;
    }
    while (n > 0 && (size_t) r >= iov->iov_len) {
      r -= iov->iov_len;
      iov++, n--;
    }
    if (n > 0) {
      iov->iov_base = (char *) iov->iov_base + r;
      iov->iov_len -= r;
    }
  }
  return 0;
}

static int
opt_reply (int fd, uint32_t opt, uint32_t type, const void *data,
           uint32_t len)
{
  unsigned char h[20];
  struct iovec iov[2] = { { h, sizeof h }, { (void *) data, len } };
  uint64_t m = htobe64 (REP_MAGIC);
  uint32_t o = htobe32 (opt), t = htobe32 (type), l = htobe32 (len);

  memcpy (h, &m, 8);
  memcpy (h + 8, &o, 4);
  memcpy (h + 12, &t, 4);
  memcpy (h + 16, &l, 4);
  return writev_full (fd, iov, 2);
}

/* Fixed newstyle; every option but INFO, GO, EXPORT_NAME and ABORT is
 * unsupported.  Returns 0 to go on to transmission. */
static int
handshake (int fd)
{
  unsigned char greet[18] = "NBDMAGIC", opt[16], info[12], data[4096];
  uint64_t m = htobe64 (OPT_MAGIC), size = htobe64 (disk_size);
  uint16_t f = htobe16 (1 | 2), tf = htobe16 (TFLAGS);
  uint32_t cflags;

  memcpy (greet + 8, &m, 8);
  memcpy (greet + 16, &f, 2);
  if (write (fd, greet, sizeof greet) != sizeof greet ||
      read_full (fd, &cflags, 4))
    return -1;
  memset (info, 0, 2);                  /* NBD_INFO_EXPORT */
  memcpy (info + 2, &size, 8);
  memcpy (info + 10, &tf, 2);
  for (;;) {
    uint32_t o, len;

    if (read_full (fd, opt, sizeof opt))
      return -1;
    memcpy (&o, opt + 8, 4);
    memcpy (&len, opt + 12, 4);
    o = be32toh (o);
    len = be32toh (len);
    if (len > sizeof data || read_full (fd, data, len))
      return -1;
    switch (o) {
    case OPT_EXPORT_NAME:               /* NO_ZEROES: size and flags only */
      return write (fd, info + 2, 10) == 10 ? 0 : -1;
    case OPT_ABORT:
      opt_reply (fd, o, REP_ACK, NULL, 0);
      return -1;
    case OPT_INFO:
    case OPT_GO:
      if (opt_reply (fd, o, REP_INFO, info, sizeof info) ||
          opt_reply (fd, o, REP_ACK, NULL, 0))
        return -1;
      if (o == OPT_GO)
        return 0;
      break;
    default:
      if (opt_reply (fd, o, REP_ERR_UNSUP, NULL, 0))
        return -1;
    }
  }
}

static void
transmission (int fd)
{
  static __thread unsigned char rbuf[RBUF];
  static __thread unsigned char hdr[BATCH][16];
  static __thread struct iovec iov[2 * BATCH];
  size_t have = 0;

  for (;;) {
    ssize_t r = read (fd, rbuf + have, RBUF - have);
    size_t p = 0;
    int nh = 0, ni = 0;

    if (r <= 0) {
      if (r < 0 && errno == EINTR)
        continue;
      return;
    }
    have += r;
    while (have - p >= 28) {
      unsigned char *q = rbuf + p;
      uint32_t magic, len, err = 0, m = htobe32 (SIMPLE_MAGIC);
      uint16_t type;
      uint64_t off;

      memcpy (&magic, q, 4);
      memcpy (&type, q + 6, 2);
      memcpy (&off, q + 16, 8);
      memcpy (&len, q + 24, 4);
      type = be16toh (type);
      off = be64toh (off);
      len = be32toh (len);
      if (be32toh (magic) != REQ_MAGIC || len > MAX_REQ || type == 2)
        return;                         /* bad magic, too big, or DISC */
      if ((type == 0 || type == 1) &&
          (off > disk_size || len > disk_size - off))
        err = htobe32 (22);             /* EINVAL */
      if (type == 1) {
        size_t in = have - p - 28 < len ? have - p - 28 : len;

        /* Reads queued so far must leave with the data they saw. */
        if (ni && writev_full (fd, iov, ni))
          return;
        nh = ni = 0;
        if (!err)
          memcpy (disk + off, q + 28, in);
        if (in < len) {                 /* the rest straight into the disk */
          if (err || read_full (fd, disk + off + in, len - in))
            return;
          p = have;
        }
        else
          p += 28 + len;
      }
      else
        p += 28;
      memcpy (hdr[nh], &m, 4);
      memcpy (hdr[nh] + 4, &err, 4);
      memcpy (hdr[nh] + 8, q + 8, 8);
      iov[ni++] = (struct iovec) { hdr[nh++], 16 };
      if (type == 0 && !err)
        iov[ni++] = (struct iovec) { disk + off, len };
      if (nh == BATCH) {
        if (writev_full (fd, iov, ni))
          return;
        nh = ni = 0;
      }
    }
    if (ni && writev_full (fd, iov, ni))
      return;
    memmove (rbuf, rbuf + p, have - p);
    have -= p;
  }
}

static void *
serve (void *arg)
{
  int fd = (intptr_t) arg;

  if (handshake (fd) == 0)
    transmission (fd);
  close (fd);
  return NULL;
}

int
main (int argc, char **argv)
{
  struct sockaddr_un sa = { .sun_family = AF_UNIX };
  int lfd;

  if (argc != 3 || strlen (argv[1]) >= sizeof sa.sun_path) {
    fprintf (stderr, "usage: floor-server SOCKET SIZE_IN_BYTES\n");
    return 2;
  }
  disk_size = strtoull (argv[2], NULL, 0);
  disk = mmap (NULL, disk_size, PROT_READ | PROT_WRITE,
               MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
  if (disk == MAP_FAILED) {
    perror ("mmap");
    return 1;
  }
  /* Huge pages and resident, as ubdkit's memory backend. */
  madvise (disk, disk_size, MADV_HUGEPAGE);
  for (uint64_t o = 0; o < disk_size; o += 4096)
    disk[o] = 0;
  strcpy (sa.sun_path, argv[1]);
  unlink (argv[1]);
  lfd = socket (AF_UNIX, SOCK_STREAM, 0);
  if (lfd < 0 || bind (lfd, (struct sockaddr *) &sa, sizeof sa) ||
      listen (lfd, 64)) {
    perror (argv[1]);
    return 1;
  }
  for (;;) {
    int fd = accept (lfd, NULL, NULL);
    pthread_t t;

    if (fd < 0)
      continue;
    if (pthread_create (&t, NULL, serve, (void *) (intptr_t) fd))
      close (fd);
    else
      pthread_detach (t);
  }
}
