/* The ublk kernel interface.  Debian 12's <linux/ublk_cmd.h> is the 6.1
 * version: its structures are the ones we use (layout-compatible with later
 * kernels), but it lacks the ioctl-encoded command numbers, GET_FEATURES and
 * the newer feature bits, which are defined here from the UAPI as of 6.12.
 * Everything is guarded, so a newer header wins. */
#ifndef UBDKIT_UBLK_UAPI_H
#define UBDKIT_UBLK_UAPI_H

#include <linux/ioctl.h>
#include <linux/ublk_cmd.h>

#ifndef UBLK_CMD_GET_DEV_INFO2
#define UBLK_CMD_GET_DEV_INFO2 0x12
#endif

#ifndef UBLK_U_CMD_ADD_DEV
#define UBLK_U_CMD_GET_DEV_INFO \
  _IOR ('u', UBLK_CMD_GET_DEV_INFO, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_ADD_DEV \
  _IOWR ('u', UBLK_CMD_ADD_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_DEL_DEV \
  _IOWR ('u', UBLK_CMD_DEL_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_DEV \
  _IOWR ('u', UBLK_CMD_START_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_STOP_DEV \
  _IOWR ('u', UBLK_CMD_STOP_DEV, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_SET_PARAMS \
  _IOWR ('u', UBLK_CMD_SET_PARAMS, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_GET_PARAMS \
  _IOR ('u', UBLK_CMD_GET_PARAMS, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_START_USER_RECOVERY \
  _IOWR ('u', UBLK_CMD_START_USER_RECOVERY, struct ublksrv_ctrl_cmd)
#define UBLK_U_CMD_END_USER_RECOVERY \
  _IOWR ('u', UBLK_CMD_END_USER_RECOVERY, struct ublksrv_ctrl_cmd)
#endif
#ifndef UBLK_U_CMD_GET_FEATURES
#define UBLK_U_CMD_GET_FEATURES _IOR ('u', 0x13, struct ublksrv_ctrl_cmd)
#endif
#ifndef UBLK_U_CMD_DEL_DEV_ASYNC
#define UBLK_U_CMD_DEL_DEV_ASYNC _IOR ('u', 0x14, struct ublksrv_ctrl_cmd)
#endif
#ifndef UBLK_U_CMD_UPDATE_SIZE
#define UBLK_U_CMD_UPDATE_SIZE _IOWR ('u', 0x15, struct ublksrv_ctrl_cmd)
#endif
#ifndef UBLK_U_CMD_QUIESCE_DEV
#define UBLK_U_CMD_QUIESCE_DEV _IOWR ('u', 0x16, struct ublksrv_ctrl_cmd)
#endif
#ifndef UBLK_U_CMD_TRY_STOP_DEV
#define UBLK_U_CMD_TRY_STOP_DEV _IOWR ('u', 0x17, struct ublksrv_ctrl_cmd)
#endif
#ifndef UBLK_U_IO_FETCH_REQ
#define UBLK_U_IO_FETCH_REQ \
  _IOWR ('u', UBLK_IO_FETCH_REQ, struct ublksrv_io_cmd)
#define UBLK_U_IO_COMMIT_AND_FETCH_REQ \
  _IOWR ('u', UBLK_IO_COMMIT_AND_FETCH_REQ, struct ublksrv_io_cmd)
#endif

#ifndef UBLK_U_IO_REGISTER_IO_BUF
#define UBLK_U_IO_REGISTER_IO_BUF \
  _IOWR ('u', 0x23, struct ublksrv_io_cmd)
#define UBLK_U_IO_UNREGISTER_IO_BUF \
  _IOWR ('u', 0x24, struct ublksrv_io_cmd)
#endif

#ifndef UBLK_U_IO_PREP_IO_CMDS
#define UBLK_U_IO_PREP_IO_CMDS _IOWR ('u', 0x25, struct ublk_batch_io)
#define UBLK_U_IO_COMMIT_IO_CMDS _IOWR ('u', 0x26, struct ublk_batch_io)
#define UBLK_U_IO_FETCH_IO_CMDS _IOWR ('u', 0x27, struct ublk_batch_io)
/* UBLK_F_BATCH_IO: the command of PREP_IO_CMDS, COMMIT_IO_CMDS and
 * FETCH_IO_CMDS, in sqe->cmd; their element buffer is at sqe->addr. */
struct ublk_batch_io {
  __u16 q_id;
#define UBLK_BATCH_F_HAS_ZONE_LBA (1 << 0)
#define UBLK_BATCH_F_HAS_BUF_ADDR (1 << 1)
#define UBLK_BATCH_F_AUTO_BUF_REG_FALLBACK (1 << 2)
  __u16 flags;
  __u16 nr_elem;
  __u8 elem_bytes;
  __u8 reserved;
  __u64 reserved2;
};
#endif

/* UBLK_F_AUTO_BUF_REG: what FETCH and COMMIT_AND_FETCH carry in sqe->addr
 * instead of a buffer address: bits 0-15 the index in the ring's sparse
 * buffer table where the kernel registers the request's pages, bits
 * 16-23 flags. */
#ifndef UBLK_AUTO_BUF_REG_FALLBACK
#define UBLK_AUTO_BUF_REG_FALLBACK (1 << 0)
#endif
#ifndef UBLK_IO_F_NEED_REG_BUF
#define UBLK_IO_F_NEED_REG_BUF (1U << 17)
#endif
#define UBDKIT_AUTO_BUF_REG_ADDR(index, flags) \
  ((uint64_t) (uint16_t) (index) | (uint64_t) (uint8_t) (flags) << 16)

#ifndef UBLK_F_UNPRIVILEGED_DEV
#define UBLK_F_UNPRIVILEGED_DEV (1ULL << 5)
#endif
#ifndef UBLK_F_CMD_IOCTL_ENCODE
#define UBLK_F_CMD_IOCTL_ENCODE (1ULL << 6)
#endif
#ifndef UBLK_F_USER_COPY
#define UBLK_F_USER_COPY (1ULL << 7)
#endif
#ifndef UBLK_F_ZONED
#define UBLK_F_ZONED (1ULL << 8)
#endif
#ifndef UBLK_F_USER_RECOVERY_FAIL_IO
#define UBLK_F_USER_RECOVERY_FAIL_IO (1ULL << 9)
#endif
#ifndef UBLK_F_UPDATE_SIZE
#define UBLK_F_UPDATE_SIZE (1ULL << 10)
#endif
#ifndef UBLK_F_AUTO_BUF_REG
#define UBLK_F_AUTO_BUF_REG (1ULL << 11)
#endif
#ifndef UBLK_F_QUIESCE
#define UBLK_F_QUIESCE (1ULL << 12)
#endif
#ifndef UBLK_F_PER_IO_DAEMON
#define UBLK_F_PER_IO_DAEMON (1ULL << 13)
#endif
#ifndef UBLK_F_BUF_REG_OFF_DAEMON
#define UBLK_F_BUF_REG_OFF_DAEMON (1ULL << 14)
#endif
#ifndef UBLK_F_BATCH_IO
#define UBLK_F_BATCH_IO (1ULL << 15)
#endif
#ifndef UBLK_F_INTEGRITY
#define UBLK_F_INTEGRITY (1ULL << 16)
#endif
#ifndef UBLK_F_SAFE_STOP_DEV
#define UBLK_F_SAFE_STOP_DEV (1ULL << 17)
#endif
#ifndef UBLK_F_NO_AUTO_PART_SCAN
#define UBLK_F_NO_AUTO_PART_SCAN (1ULL << 18)
#endif
#ifndef UBLK_F_SHMEM_ZC
#define UBLK_F_SHMEM_ZC (1ULL << 19)
#endif
#ifndef UBLK_F_IO_DESC_SIZE
#define UBLK_F_IO_DESC_SIZE (1ULL << 20)
#endif
#ifndef UBLK_S_DEV_FAIL_IO
#define UBLK_S_DEV_FAIL_IO 3
#endif

#endif
