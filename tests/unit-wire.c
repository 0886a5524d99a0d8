/* Protocol encoding helpers, errno mapping and the request checking layer
 * (backend_check) that stands between clients and backends. */
#include <config.h>

#include <errno.h>
#include <string.h>

#include "ubdkit/backend.h"
#include "protocol.h"
#include "wire.h"
#include "unit.h"

static void
test_wire (void)
{
  unsigned char b[8];

  put16 (b, 0x1234);
  CHECK (b[0] == 0x12 && b[1] == 0x34 && get16 (b) == 0x1234);
  put32 (b, NBDP_REQUEST_MAGIC);
  CHECK (b[0] == 0x25 && b[3] == 0x13 && get32 (b) == NBDP_REQUEST_MAGIC);
  put64 (b, NBDP_MAGIC);
  CHECK (memcmp (b, "NBDMAGIC", 8) == 0 && get64 (b) == NBDP_MAGIC);
  put64 (b, NBDP_IHAVEOPT);
  CHECK (memcmp (b, "IHAVEOPT", 8) == 0);
}

static void
test_errno (void)
{
  CHECK (nbdp_errno (0) == 0);
  CHECK (nbdp_errno (-EPERM) == NBDP_EPERM);
  CHECK (nbdp_errno (-EROFS) == NBDP_EPERM);
  CHECK (nbdp_errno (-EINVAL) == NBDP_EINVAL);
  CHECK (nbdp_errno (-ENOSPC) == NBDP_ENOSPC);
  CHECK (nbdp_errno (-ENOTSUP) == NBDP_ENOTSUP);
  CHECK (nbdp_errno (-EOVERFLOW) == NBDP_EOVERFLOW);
  CHECK (nbdp_errno (-ENOMEM) == NBDP_ENOMEM);
  CHECK (nbdp_errno (-EBADF) == NBDP_EIO);     /* anything else */
}

static void
test_check (void)
{
  struct backend b = {
    .size = 1 << 20, .min_block = 1, .pref_block = 4096,
    .max_block = 32 << 20,
    .caps = BACKEND_CAN_WRITE | BACKEND_CAN_FLUSH | BACKEND_CAN_TRIM,
  };

  CHECK (backend_check (&b, BACKEND_OP_READ, 0, 4096, 0) == 0);
  CHECK (backend_check (&b, BACKEND_OP_READ, (1 << 20) - 1, 1, 0) == 0);
  CHECK (backend_check (&b, BACKEND_OP_READ, 1 << 20, 1, 0) == -EINVAL);
  CHECK (backend_check (&b, BACKEND_OP_READ, UINT64_MAX - 511, 1024, 0)
         == -EINVAL);                          /* offset+count overflows */
  CHECK (backend_check (&b, BACKEND_OP_WRITE, (1 << 20) - 1, 2, 0) == -ENOSPC);
  CHECK (backend_check (&b, BACKEND_OP_READ, 0, 0, 0) == -EINVAL);
  CHECK (backend_check (&b, BACKEND_OP_WRITE, 0, 512, BACKEND_FLAG_FUA)
         == -EINVAL);                          /* FUA not advertised */
  CHECK (backend_check (&b, BACKEND_OP_READ, 0, 512, BACKEND_FLAG_FUA)
         == -EINVAL);                          /* not a read flag */
  CHECK (backend_check (&b, BACKEND_OP_ZERO, 0, 512, 0) == -EOPNOTSUPP);
  CHECK (backend_check (&b, BACKEND_OP_FLUSH, 0, 0, 0) == 0);
  CHECK (backend_check (&b, BACKEND_OP_FLUSH, 0, 1, 0) == -EINVAL);
  CHECK (backend_check (&b, 99, 0, 1, 0) == -EINVAL);
  b.readonly = true;
  CHECK (backend_check (&b, BACKEND_OP_WRITE, 0, 512, 0) == -EPERM);
  CHECK (backend_check (&b, BACKEND_OP_TRIM, 0, 512, 0) == -EPERM);
  CHECK (backend_check (&b, BACKEND_OP_READ, 0, 512, 0) == 0);
  b.readonly = false;
  b.min_block = 4096;
  CHECK (backend_check (&b, BACKEND_OP_READ, 512, 4096, 0) == -EINVAL);
  CHECK (backend_check (&b, BACKEND_OP_READ, 4096, 4096, 0) == 0);
  b.size = UINT64_C (1) << 40;
  CHECK (backend_check (&b, BACKEND_OP_READ, 0, (32 << 20) + 4096, 0) != 0);
}

static void
test_extents (void)
{
  struct backend_extent v[3];
  struct backend_extents e = { .v = v, .max = 3, .start = 100, .end = 1000 };

  CHECK (backend_extents_add (&e, 0, 50, 0) == 0 && e.n == 0);  /* before */
  CHECK (backend_extents_add (&e, 0, 200, 0) == 0 && e.n == 1);
  CHECK (v[0].offset == 100 && v[0].length == 100);             /* clipped */
  CHECK (backend_extents_add (&e, 200, 100, 0) == 0 && e.n == 1);
  CHECK (v[0].length == 200);                                   /* merged */
  CHECK (backend_extents_add (&e, 300, 100, 3) == 0 && e.n == 2);
  CHECK (backend_extents_add (&e, 400, 100, 0) == 0 && e.n == 3);
  CHECK (backend_extents_add (&e, 500, 100, 3) == 1 && e.n == 3); /* full */
  CHECK (backend_extents_add (&e, 2000, 10, 0) == 0 && e.n == 3); /* after */
}

int
main (void)
{
  test_wire ();
  test_errno ();
  test_check ();
  test_extents ();
  UNIT_EXIT ();
}
