/* file: serve a regular file or a block device.
 *
 * Reads, writes, flushes, trims and zeroes are queued on the calling
 * thread's io_uring (submit); the synchronous callbacks serve callers that
 * have no ring.  flush is fdatasync; FUA writes use RWF_DSYNC, FUA trims
 * and zeroes are followed by an fdatasync; trim punches a hole; zero is
 * FALLOC_FL_ZERO_RANGE (or a punched hole when allowed); extents come from
 * SEEK_DATA/SEEK_HOLE.  direct=true opens with O_DIRECT and then requires
 * 4 KiB-aligned requests (advertised as the minimum block size).
 */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <linux/falloc.h>
#include <linux/fs.h>
#include <stdlib.h>
#include <string.h>
#include <sys/ioctl.h>
#include <sys/stat.h>
#include <sys/uio.h>
#include <unistd.h>

#include <liburing.h>

#include "ubdkit/backend.h"
#include "log.h"

struct file_disk {
  char *path;
  int fd;
  uint64_t size;
  bool is_block, direct, readonly;
  bool no_nowait_write;         /* the filesystem refused RWF_NOWAIT writes */
  bool direct_given;            /* direct= was on the command line */
};

/* Requests up to this size first try a non-blocking copy on the calling
 * thread (RWF_NOWAIT): a page-cache hit then costs one syscall and no
 * io-wq thread hop.  Larger ones, and misses, go through io_uring, which
 * can overlap their copies on other CPUs. */
#define INLINE_MAX (128 * 1024)

static int
parse_flag (const struct backend_param *p, size_t n, const char *key,
            bool *out)
{
  const char *v = backend_param_get (p, n, key);
  int b;

  *out = false;
  if (!v)
    return 0;
  b = backend_parse_bool (v);
  if (b == -1) {
    return backend_param_error ("file: %s=%s: expected true or false",
                                key, v);
  }
  *out = b;
  return 0;
}

static int
file_get_geometry (struct file_disk *d, const char *path)
{
  struct stat st;

  if (fstat (d->fd, &st) == -1) {
    log_error ("file: fstat: %s: %m", path);
    return -1;
  }
  if (S_ISBLK (st.st_mode)) {
    d->is_block = true;
    if (ioctl (d->fd, BLKGETSIZE64, &d->size) == -1) {
      log_error ("file: BLKGETSIZE64: %s: %m", path);
      return -1;
    }
  }
  else if (S_ISREG (st.st_mode))
    d->size = st.st_size;
  else {
    log_error ("file: %s: not a regular file or block device", path);
    return -1;
  }
  return 0;
}

static void *
file_config (const struct backend_param *p, size_t n, bool readonly)
{
  static const char *const known[] = { "file", "direct", "readonly", NULL };
  const char *path = backend_param_get (p, n, "file");
  struct file_disk *d;
  bool ro;

  if (backend_params_check ("file", p, n, known) == -1)
    return NULL;
  if (!path) {
    backend_param_error ("file: file=PATH is required");
    return NULL;
  }
  d = calloc (1, sizeof *d);
  if (!d || !(d->path = strdup (path)))
    fatal ("calloc: %m");
  d->fd = -1;
  d->direct_given = backend_param_get (p, n, "direct") != NULL;
  if (parse_flag (p, n, "direct", &d->direct) == -1 ||
      parse_flag (p, n, "readonly", &ro) == -1) {
    free (d->path);
    free (d);
    return NULL;
  }
  d->readonly = readonly || ro;
  return d;
}

static int
file_open (void *h)
{
  struct file_disk *d = h;
  struct stat st;
  int flags;

  /* A block device through the page cache needs fresh page-cache pages
   * for every write, which reclaim cannot give a swap device's server:
   * measured, it froze a VM swapping onto it.  Bypass the cache unless
   * told otherwise. */
  if (!d->direct_given && stat (d->path, &st) == 0 && S_ISBLK (st.st_mode))
    d->direct = true;
  flags = (d->readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC |
          (d->direct ? O_DIRECT : 0);

  d->fd = open (d->path, flags);
  if (d->fd == -1) {
    log_error ("file: open: %s: %m", d->path);
    return -1;
  }
  return file_get_geometry (d, d->path);
}

static void
file_close (void *h)
{
  struct file_disk *d = h;

  if (d->fd >= 0)
    close (d->fd);
  free (d->path);
  free (d);
}

/* Asked at open, and again by `ubdkit resize` after the file or block
 * device grew: look again rather than answer what open saw. */
static uint64_t
file_get_size (void *h)
{
  struct file_disk *d = h;
  struct stat st;
  uint64_t size;

  if (d->is_block) {
    if (ioctl (d->fd, BLKGETSIZE64, &size) == 0)
      d->size = size;
  }
  else if (fstat (d->fd, &st) == 0)
    d->size = st.st_size;
  return d->size;
}

static uint32_t
file_get_caps (void *h)
{
  struct file_disk *d = h;
  uint32_t caps = BACKEND_CAN_FLUSH | BACKEND_CAN_CACHE |
                  BACKEND_CAN_MULTI_CONN;

  if (!d->readonly)
    caps |= BACKEND_CAN_WRITE | BACKEND_CAN_FUA | BACKEND_CAN_TRIM |
            BACKEND_CAN_ZERO | BACKEND_CAN_FAST_ZERO;
  if (!d->is_block)
    caps |= BACKEND_CAN_EXTENTS;
  return caps;
}

static void
file_block_size (void *h, uint32_t *min, uint32_t *pref, uint32_t *max)
{
  struct file_disk *d = h;

  *min = d->direct ? 4096 : 1;
  *pref = 4096;
  *max = BACKEND_MAX_REQUEST;
}

/* Synchronous path. */

static int
file_pread (void *h, void *buf, uint32_t count, uint64_t offset)
{
  struct file_disk *d = h;

  while (count > 0) {
    ssize_t r = pread (d->fd, buf, count, offset);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return r == 0 ? -EIO : -errno;
    buf = (char *) buf + r;
    count -= r;
    offset += r;
  }
  return 0;
}

static int
file_pwrite (void *h, const void *buf, uint32_t count, uint64_t offset,
             uint32_t flags)
{
  struct file_disk *d = h;

  while (count > 0) {
    ssize_t r = pwrite (d->fd, buf, count, offset);
    if (r == -1 && errno == EINTR)
      continue;
    if (r <= 0)
      return r == 0 ? -EIO : -errno;
    buf = (const char *) buf + r;
    count -= r;
    offset += r;
  }
  if ((flags & BACKEND_FLAG_FUA) && fdatasync (d->fd) == -1)
    return -errno;
  return 0;
}

static int
file_flush (void *h)
{
  return fdatasync (((struct file_disk *) h)->fd) == -1 ? -errno : 0;
}

static int
zero_mode (uint32_t flags)
{
  return (flags & BACKEND_FLAG_MAY_TRIM)
    ? FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE : FALLOC_FL_ZERO_RANGE;
}

/* Zeros to write where the filesystem cannot zero a range (tmpfs has no
 * ZERO_RANGE): in .bss, so it costs nothing until used, and is locked. */
static unsigned char zeros[256 * 1024];

static int
file_zero (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct file_disk *d = h;

  if (fallocate (d->fd, zero_mode (flags), offset, count) == -1) {
    if (errno != EOPNOTSUPP)
      return -errno;
    if (flags & BACKEND_FLAG_FAST)
      return -ENOTSUP;
    while (count > 0) {
      uint32_t n = count < sizeof zeros ? count : sizeof zeros;
      int r = file_pwrite (h, zeros, n, offset, 0);
      if (r < 0)
        return r;
      count -= n;
      offset += n;
    }
  }
  return (flags & BACKEND_FLAG_FUA) ? file_flush (h) : 0;
}

static int
file_trim (void *h, uint32_t count, uint64_t offset, uint32_t flags)
{
  struct file_disk *d = h;

  /* Trim is advisory: where holes cannot be punched, do nothing. */
  if (fallocate (d->fd, FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                 offset, count) == -1 && errno != EOPNOTSUPP)
    return -errno;
  return (flags & BACKEND_FLAG_FUA) ? file_flush (h) : 0;
}

static int
file_cache (void *h, uint32_t count, uint64_t offset)
{
  int r = posix_fadvise (((struct file_disk *) h)->fd, offset, count,
                         POSIX_FADV_WILLNEED);
  return -r;
}

static int
file_extents (void *h, uint32_t count, uint64_t offset, uint32_t flags,
              struct backend_extents *e)
{
  struct file_disk *d = h;
  uint64_t end = offset + count, pos = offset;

  while (pos < end) {
    off_t data = lseek (d->fd, pos, SEEK_DATA), hole;
    if (data == -1 && errno != ENXIO)
      return -errno;
    if (data == -1 || (uint64_t) data >= end) {
      backend_extents_add (e, pos, end - pos,
                           BACKEND_EXTENT_HOLE | BACKEND_EXTENT_ZERO);
      break;
    }
    if ((uint64_t) data > pos &&
        backend_extents_add (e, pos, data - pos,
                             BACKEND_EXTENT_HOLE | BACKEND_EXTENT_ZERO))
      break;
    hole = lseek (d->fd, data, SEEK_HOLE);
    if (hole == -1)
      return -errno;
    if (backend_extents_add (e, data, hole - data, 0) ||
        (flags & BACKEND_FLAG_REQ_ONE))
      break;
    pos = hole;
  }
  return 0;
}

/* Asynchronous path on the caller's ring.  Short transfers are resubmitted
 * for the rest.  Phases: 0 the operation; 1 an fdatasync for FUA on
 * trim/zero; 2 writing zeros where fallocate cannot zero a range. */
enum { PHASE_OP, PHASE_FUA, PHASE_WRITE_ZEROS };

static void file_complete (struct loop_event *ev, int res, uint32_t cqe_flags);

static void
file_prep (struct file_disk *d, struct backend_io *io)
{
  struct io_uring_sqe *sqe;

  while ((sqe = io_uring_get_sqe (io->ring)) == NULL)
    io_uring_submit (io->ring);
  io->ev.fn = file_complete;
  io_uring_sqe_set_data (sqe, &io->ev);
  if (io->phase == PHASE_FUA) {
    io_uring_prep_fsync (sqe, d->fd, IORING_FSYNC_DATASYNC);
    return;
  }
  if (io->phase == PHASE_WRITE_ZEROS) {
    uint32_t left = io->count - io->done_bytes;
    io_uring_prep_write (sqe, d->fd, zeros,
                         left < sizeof zeros ? left : sizeof zeros,
                         io->offset + io->done_bytes);
    return;
  }
  switch (io->op) {
  case BACKEND_OP_READ:
    /* A registered buffer (ublk zero copy) is addressed from 0. */
    if (io->fixed_buf)
      io_uring_prep_read_fixed (sqe, d->fd, (void *) (uintptr_t) io->done_bytes,
                                io->count - io->done_bytes,
                                io->offset + io->done_bytes, io->buf_index);
    else
      io_uring_prep_read (sqe, d->fd, (char *) io->buf + io->done_bytes,
                          io->count - io->done_bytes,
                          io->offset + io->done_bytes);
    break;
  case BACKEND_OP_WRITE:
    if (io->fixed_buf)
      io_uring_prep_write_fixed (sqe, d->fd,
                                 (void *) (uintptr_t) io->done_bytes,
                                 io->count - io->done_bytes,
                                 io->offset + io->done_bytes, io->buf_index);
    else
      io_uring_prep_write (sqe, d->fd, (char *) io->buf + io->done_bytes,
                           io->count - io->done_bytes,
                           io->offset + io->done_bytes);
    if (io->flags & BACKEND_FLAG_FUA)
      sqe->rw_flags = RWF_DSYNC;
    break;
  case BACKEND_OP_FLUSH:
    io_uring_prep_fsync (sqe, d->fd, IORING_FSYNC_DATASYNC);
    break;
  case BACKEND_OP_TRIM:
    io_uring_prep_fallocate (sqe, d->fd,
                             FALLOC_FL_PUNCH_HOLE | FALLOC_FL_KEEP_SIZE,
                             io->offset, io->count);
    break;
  case BACKEND_OP_ZERO:
    io_uring_prep_fallocate (sqe, d->fd, zero_mode (io->flags), io->offset,
                             io->count);
    break;
  default:
    abort ();                   /* file_submit filters the ops */
  }
}

static void
file_complete (struct loop_event *ev, int res, uint32_t cqe_flags)
{
  struct backend_io *io = container_of (ev, struct backend_io, ev);
  struct file_disk *d = (struct file_disk *) io->priv;
  bool rw = io->op == BACKEND_OP_READ || io->op == BACKEND_OP_WRITE;

  if (res == -EOPNOTSUPP && io->op == BACKEND_OP_TRIM && io->phase == PHASE_OP)
    res = 0;                    /* trim is advisory */
  if (res == -EOPNOTSUPP && io->op == BACKEND_OP_ZERO &&
      io->phase == PHASE_OP && !(io->flags & BACKEND_FLAG_FAST)) {
    io->phase = PHASE_WRITE_ZEROS;
    io->done_bytes = 0;
    file_prep (d, io);
    return;
  }
  if (res == -EOPNOTSUPP && io->op == BACKEND_OP_ZERO)
    res = -ENOTSUP;             /* FAST_ZERO: the client falls back */
  if (res == -EAGAIN || res == -EINTR) {
    file_prep (d, io);          /* retry as it was */
    return;
  }
  if (res < 0) {
    io->done (io, res);
    return;
  }
  if (io->phase == PHASE_WRITE_ZEROS) {
    if (res == 0) {
      io->done (io, -EIO);
      return;
    }
    io->done_bytes += res;
    if (io->done_bytes < io->count) {
      file_prep (d, io);
      return;
    }
  }
  if (rw && io->phase == PHASE_OP) {
    if (res == 0) {
      io->done (io, -EIO);      /* the file shrank under us */
      return;
    }
    io->done_bytes += res;
    if (io->done_bytes < io->count) {
      file_prep (d, io);
      return;
    }
  }
  if (!rw && io->phase != PHASE_FUA && (io->flags & BACKEND_FLAG_FUA) &&
      io->op != BACKEND_OP_FLUSH) {
    io->phase = PHASE_FUA;
    file_prep (d, io);
    return;
  }
  io->done (io, 0);
}

/* Try the copy without blocking.  Returns BACKEND_SUBMIT_DONE when all of
 * it was done; otherwise what was done is recorded in io->done_bytes and 0
 * is returned for the ring to do the rest. */
static int
try_inline (struct file_disk *d, struct backend_io *io)
{
  struct iovec iov = { io->buf, io->count };
  bool write = io->op == BACKEND_OP_WRITE;
  ssize_t r;

  if (d->direct || io->fixed_buf || io->count > INLINE_MAX ||
      (write && d->no_nowait_write))
    return 0;
  if (write)
    r = pwritev2 (d->fd, &iov, 1, io->offset, RWF_NOWAIT |
                  ((io->flags & BACKEND_FLAG_FUA) ? RWF_DSYNC : 0));
  else
    r = preadv2 (d->fd, &iov, 1, io->offset, RWF_NOWAIT);
  if (r == (ssize_t) io->count)
    return BACKEND_SUBMIT_DONE;
  if (r > 0)
    io->done_bytes = r;
  else if (write && r == -1 && errno == EOPNOTSUPP)
    d->no_nowait_write = true;
  return 0;
}

static int
file_submit (void *h, struct io_uring *ring, struct backend_io *io)
{
  int r;

  switch (io->op) {
  case BACKEND_OP_READ: case BACKEND_OP_WRITE: case BACKEND_OP_FLUSH:
  case BACKEND_OP_TRIM: case BACKEND_OP_ZERO:
    break;
  default:
    return -ENOSYS;
  }
  io->ring = ring;
  io->priv = h;
  io->phase = PHASE_OP;
  io->done_bytes = 0;
  if (io->op == BACKEND_OP_READ || io->op == BACKEND_OP_WRITE) {
    r = try_inline (h, io);
    if (r == BACKEND_SUBMIT_DONE)
      return r;
  }
  file_prep (h, io);
  return 0;
}

const struct backend_ops file_backend_ops = {
  .name = "file",
  .synopsis = "file=PATH [direct=true] [readonly=true]: a file or block device",
  .help = "           file=PATH      regular file or block device (required)\n"
          "           direct=BOOL    open with O_DIRECT (4 KiB-aligned I/O)\n"
          "           readonly=BOOL  open read-only\n",
  .props = BACKEND_FIXED_BUF,
  .config = file_config,
  .open = file_open,
  .close = file_close,
  .get_size = file_get_size,
  .get_caps = file_get_caps,
  .block_size = file_block_size,
  .pread = file_pread,
  .pwrite = file_pwrite,
  .flush = file_flush,
  .trim = file_trim,
  .zero = file_zero,
  .cache = file_cache,
  .extents = file_extents,
  .submit = file_submit,
};
