/* ublk control commands: /dev/ublk-control driven through io_uring
 * URING_CMD (with 128-byte SQEs, as control commands need).
 *
 * Commands are synchronous for the caller: each submits one SQE and waits
 * for its completion.  They return 0 (or a positive count) or a negative
 * errno; the caller decides what to log, since only it knows what the
 * failure means.  Ioctl-encoded command numbers are used when the kernel
 * offers them (UBLK_F_CMD_IOCTL_ENCODE), the legacy ones otherwise.
 */
#ifndef UBDKIT_UBCTL_H
#define UBDKIT_UBCTL_H

#include <stdbool.h>
#include <stdint.h>

#include <liburing.h>

#include "uapi.h"

#define UBCTL_PATH "/dev/ublk-control"

struct ubctl {
  int fd;
  struct io_uring ring;
  uint64_t features;            /* GET_FEATURES, or an assumed base set */
  bool have_features;           /* the kernel answered GET_FEATURES */
  bool ioctl_encode;
};

/* Open the control device and probe features.  Returns 0 or -errno
 * (-ENOENT: no ublk_drv module loaded). */
int ubctl_open (struct ubctl *c);
void ubctl_close (struct ubctl *c);

int ubctl_add_dev (struct ubctl *c, struct ublksrv_ctrl_dev_info *info);
int ubctl_del_dev (struct ubctl *c, uint32_t id);
int ubctl_start_dev (struct ubctl *c, uint32_t id, int32_t pid);
int ubctl_stop_dev (struct ubctl *c, uint32_t id);
int ubctl_set_params (struct ubctl *c, uint32_t id, struct ublk_params *p);
int ubctl_get_params (struct ubctl *c, uint32_t id, struct ublk_params *p);
int ubctl_get_info (struct ubctl *c, uint32_t id,
                    struct ublksrv_ctrl_dev_info *info);
int ubctl_start_recovery (struct ubctl *c, uint32_t id);
int ubctl_end_recovery (struct ubctl *c, uint32_t id, int32_t pid);
/* UPDATE_SIZE (new size in sectors), QUIESCE_DEV (waits up to TIMEOUT_MS,
 * 0: for ever, for every queue to have an idle tag, then aborts the idle
 * fetches), TRY_STOP_DEV (STOP_DEV unless the block device has openers:
 * then -EBUSY).  -EOPNOTSUPP from kernels without them. */
int ubctl_update_size (struct ubctl *c, uint32_t id, uint64_t sectors);
int ubctl_quiesce_dev (struct ubctl *c, uint32_t id, uint64_t timeout_ms);
int ubctl_try_stop_dev (struct ubctl *c, uint32_t id);

/* Feature bits by name, for `ubdkit features` and `list`: writes
 * "name|name|..." into buf. */
void ubctl_feature_names (uint64_t features, char *buf, size_t len);
/* The recovery mode of a device's flags: "hold", "fail-io", "off". */
const char *ubctl_recovery_name (uint64_t flags);
/* Device state as a word. */
const char *ubctl_state_name (uint16_t state);

#endif
