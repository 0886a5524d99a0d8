/* See ubctl.h. */
#include <config.h>

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "ubctl.h"

/* The base every ublk kernel has (5.19 and later, before GET_FEATURES). */
#define BASE_FEATURES (UBLK_F_URING_CMD_COMP_IN_TASK | UBLK_F_NEED_GET_DATA)

static int
ctrl_cmd (struct ubctl *c, unsigned legacy, unsigned encoded, uint32_t id,
          void *buf, uint16_t len, uint64_t data)
{
  struct io_uring_sqe *sqe = io_uring_get_sqe (&c->ring);
  struct io_uring_cqe *cqe;
  struct ublksrv_ctrl_cmd *cmd;
  int r;

  if (!sqe)
    return -EBUSY;
  memset (sqe, 0, 2 * sizeof *sqe);      /* a 128-byte SQE */
  sqe->opcode = IORING_OP_URING_CMD;
  sqe->fd = c->fd;
  sqe->cmd_op = c->ioctl_encode ? encoded : legacy;
  cmd = (struct ublksrv_ctrl_cmd *) sqe->cmd;
  cmd->dev_id = id;
  cmd->queue_id = (uint16_t) -1;
  cmd->addr = (uintptr_t) buf;
  cmd->len = len;
  cmd->data[0] = data;
  r = io_uring_submit_and_wait (&c->ring, 1);
  if (r < 0)
    return r;
  r = io_uring_wait_cqe (&c->ring, &cqe);
  if (r < 0)
    return r;
  r = cqe->res;
  io_uring_cqe_seen (&c->ring, cqe);
  return r;
}

int
ubctl_open (struct ubctl *c)
{
  uint64_t features = 0;
  int r;

  memset (c, 0, sizeof *c);
  c->fd = open (UBCTL_PATH, O_RDWR | O_CLOEXEC);
  if (c->fd == -1)
    return -errno;
  r = io_uring_queue_init (4, &c->ring, IORING_SETUP_SQE128);
  if (r < 0) {
    close (c->fd);
    c->fd = -1;
    return r;
  }
  /* GET_FEATURES exists only in ioctl form. */
  c->ioctl_encode = true;
  r = ctrl_cmd (c, 0, UBLK_U_CMD_GET_FEATURES, 0, &features,
                sizeof features, 0);
  if (r == 0) {
    c->features = features;
    c->have_features = true;
    c->ioctl_encode = features & UBLK_F_CMD_IOCTL_ENCODE;
  }
  else {
    log_debug ("ublk: GET_FEATURES: %s: assuming an old kernel",
               strerror (-r));
    c->features = BASE_FEATURES;
    c->ioctl_encode = false;
  }
  return 0;
}

void
ubctl_close (struct ubctl *c)
{
  if (c->fd >= 0) {
    io_uring_queue_exit (&c->ring);
    close (c->fd);
  }
  c->fd = -1;
}

#define CMD(name) UBLK_CMD_##name, UBLK_U_CMD_##name

int
ubctl_add_dev (struct ubctl *c, struct ublksrv_ctrl_dev_info *info)
{
  return ctrl_cmd (c, CMD (ADD_DEV), info->dev_id, info, sizeof *info, 0);
}

/* DEL_DEV waits until every opener of the device has closed it, which
 * with a mounted filesystem may be never; DEL_DEV_ASYNC (6.9 and later)
 * removes the device now and frees it when the last opener goes. */
int
ubctl_del_dev (struct ubctl *c, uint32_t id)
{
  int r;

  if (c->ioctl_encode) {
    r = ctrl_cmd (c, 0, UBLK_U_CMD_DEL_DEV_ASYNC, id, NULL, 0, 0);
    if (r != -EOPNOTSUPP && r != -EINVAL && r != -ENOTTY)
      return r;
  }
  return ctrl_cmd (c, CMD (DEL_DEV), id, NULL, 0, 0);
}

int
ubctl_start_dev (struct ubctl *c, uint32_t id, int32_t pid)
{
  return ctrl_cmd (c, CMD (START_DEV), id, NULL, 0, pid);
}

int
ubctl_stop_dev (struct ubctl *c, uint32_t id)
{
  return ctrl_cmd (c, CMD (STOP_DEV), id, NULL, 0, 0);
}

int
ubctl_set_params (struct ubctl *c, uint32_t id, struct ublk_params *p)
{
  return ctrl_cmd (c, CMD (SET_PARAMS), id, p, sizeof *p, 0);
}

int
ubctl_get_params (struct ubctl *c, uint32_t id, struct ublk_params *p)
{
  memset (p, 0, sizeof *p);
  p->len = sizeof *p;
  p->types = UBLK_PARAM_TYPE_BASIC | UBLK_PARAM_TYPE_DISCARD;
  return ctrl_cmd (c, CMD (GET_PARAMS), id, p, sizeof *p, 0);
}

int
ubctl_get_info (struct ubctl *c, uint32_t id,
                struct ublksrv_ctrl_dev_info *info)
{
  memset (info, 0, sizeof *info);
  return ctrl_cmd (c, CMD (GET_DEV_INFO), id, info, sizeof *info, 0);
}

int
ubctl_start_recovery (struct ubctl *c, uint32_t id)
{
  return ctrl_cmd (c, CMD (START_USER_RECOVERY), id, NULL, 0, 0);
}

int
ubctl_end_recovery (struct ubctl *c, uint32_t id, int32_t pid)
{
  return ctrl_cmd (c, CMD (END_USER_RECOVERY), id, NULL, 0, pid);
}

/* The commands below exist only in ioctl form (6.14 and later); without
 * the feature the caller gets -EOPNOTSUPP, as from a kernel that lacks
 * the command. */
static int
new_cmd (struct ubctl *c, unsigned encoded, uint32_t id, uint64_t data)
{
  if (!c->ioctl_encode)
    return -EOPNOTSUPP;
  return ctrl_cmd (c, 0, encoded, id, NULL, 0, data);
}

int
ubctl_update_size (struct ubctl *c, uint32_t id, uint64_t sectors)
{
  return new_cmd (c, UBLK_U_CMD_UPDATE_SIZE, id, sectors);
}

int
ubctl_quiesce_dev (struct ubctl *c, uint32_t id, uint64_t timeout_ms)
{
  return new_cmd (c, UBLK_U_CMD_QUIESCE_DEV, id, timeout_ms);
}

int
ubctl_try_stop_dev (struct ubctl *c, uint32_t id)
{
  return new_cmd (c, UBLK_U_CMD_TRY_STOP_DEV, id, 0);
}

void
ubctl_feature_names (uint64_t features, char *buf, size_t len)
{
  static const char *const names[] = {
    "ZERO_COPY", "URING_CMD_COMP_IN_TASK", "NEED_GET_DATA", "USER_RECOVERY",
    "USER_RECOVERY_REISSUE", "UNPRIVILEGED_DEV", "CMD_IOCTL_ENCODE",
    "USER_COPY", "ZONED", "USER_RECOVERY_FAIL_IO", "UPDATE_SIZE",
    "AUTO_BUF_REG", "QUIESCE", "PER_IO_DAEMON", "BUF_REG_OFF_DAEMON",
    "BATCH_IO", "INTEGRITY", "SAFE_STOP_DEV", "NO_AUTO_PART_SCAN",
    "SHMEM_ZC", "IO_DESC_SIZE",
  };
  size_t o = 0;

  buf[0] = '\0';
  for (unsigned i = 0; i < 64 && o < len; i++) {
    if (!(features & (1ULL << i)))
      continue;
    if (i < sizeof names / sizeof names[0])
      o += snprintf (buf + o, len - o, "%s%s", o ? "|" : "", names[i]);
    else
      o += snprintf (buf + o, len - o, "%sbit%u", o ? "|" : "", i);
  }
}

const char *
ubctl_recovery_name (uint64_t flags)
{
  if (!(flags & UBLK_F_USER_RECOVERY))
    return "off";
  if (flags & UBLK_F_USER_RECOVERY_FAIL_IO)
    return "fail-io";
  if (flags & UBLK_F_USER_RECOVERY_REISSUE)
    return "hold";
  return "hold-new";            /* new requests wait, outstanding ones fail */
}

const char *
ubctl_state_name (uint16_t state)
{
  switch (state) {
  case UBLK_S_DEV_DEAD: return "dead";
  case UBLK_S_DEV_LIVE: return "live";
  case UBLK_S_DEV_QUIESCED: return "quiesced";
  case UBLK_S_DEV_FAIL_IO: return "fail-io";
  default: return "unknown";
  }
}
