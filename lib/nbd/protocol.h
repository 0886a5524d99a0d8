/* NBD wire protocol constants, written from the protocol specification
 * (doc/proto.md of the NBD project).  All integers on the wire are
 * big-endian.  Prefixed NBDP_ so as not to collide with libnbd. */
#ifndef UBDKIT_NBD_PROTOCOL_H
#define UBDKIT_NBD_PROTOCOL_H

#include <stdint.h>

#define NBDP_MAGIC          UINT64_C (0x4e42444d41474943) /* "NBDMAGIC" */
#define NBDP_IHAVEOPT       UINT64_C (0x49484156454f5054) /* "IHAVEOPT" */
#define NBDP_REP_MAGIC      UINT64_C (0x0003e889045565a9)
#define NBDP_REQUEST_MAGIC  0x25609513u
#define NBDP_EXT_REQUEST_MAGIC 0x21e41c71u
#define NBDP_SIMPLE_REPLY_MAGIC 0x67446698u
#define NBDP_STRUCTURED_REPLY_MAGIC 0x668e33efu
#define NBDP_EXTENDED_REPLY_MAGIC 0x6e8a278cu

/* Handshake flags (server) and client flags. */
#define NBDP_FLAG_FIXED_NEWSTYLE (1u << 0)
#define NBDP_FLAG_NO_ZEROES      (1u << 1)
#define NBDP_FLAG_C_FIXED_NEWSTYLE (1u << 0)
#define NBDP_FLAG_C_NO_ZEROES      (1u << 1)

/* Transmission flags. */
#define NBDP_FLAG_HAS_FLAGS         (1u << 0)
#define NBDP_FLAG_READ_ONLY         (1u << 1)
#define NBDP_FLAG_SEND_FLUSH        (1u << 2)
#define NBDP_FLAG_SEND_FUA          (1u << 3)
#define NBDP_FLAG_ROTATIONAL        (1u << 4)
#define NBDP_FLAG_SEND_TRIM         (1u << 5)
#define NBDP_FLAG_SEND_WRITE_ZEROES (1u << 6)
#define NBDP_FLAG_SEND_DF           (1u << 7)
#define NBDP_FLAG_CAN_MULTI_CONN    (1u << 8)
#define NBDP_FLAG_SEND_CACHE        (1u << 10)
#define NBDP_FLAG_SEND_FAST_ZERO    (1u << 11)

/* Options. */
#define NBDP_OPT_EXPORT_NAME       1
#define NBDP_OPT_ABORT             2
#define NBDP_OPT_LIST              3
#define NBDP_OPT_STARTTLS          5
#define NBDP_OPT_INFO              6
#define NBDP_OPT_GO                7
#define NBDP_OPT_STRUCTURED_REPLY  8
#define NBDP_OPT_LIST_META_CONTEXT 9
#define NBDP_OPT_SET_META_CONTEXT  10
#define NBDP_OPT_EXTENDED_HEADERS  11

/* Option replies. */
#define NBDP_REP_ACK          1u
#define NBDP_REP_SERVER       2u
#define NBDP_REP_INFO         3u
#define NBDP_REP_META_CONTEXT 4u
#define NBDP_REP_ERR(n)       ((1u << 31) | (n))
#define NBDP_REP_ERR_UNSUP    NBDP_REP_ERR (1)
#define NBDP_REP_ERR_POLICY   NBDP_REP_ERR (2)
#define NBDP_REP_ERR_INVALID  NBDP_REP_ERR (3)
#define NBDP_REP_ERR_PLATFORM NBDP_REP_ERR (4)
#define NBDP_REP_ERR_TLS_REQD NBDP_REP_ERR (5)
#define NBDP_REP_ERR_UNKNOWN  NBDP_REP_ERR (6)
#define NBDP_REP_ERR_SHUTDOWN NBDP_REP_ERR (7)
#define NBDP_REP_ERR_TOO_BIG  NBDP_REP_ERR (9)
#define NBDP_REP_ERR_EXT_HEADER_REQD NBDP_REP_ERR (10)

/* NBD_INFO types. */
#define NBDP_INFO_EXPORT      0
#define NBDP_INFO_NAME        1
#define NBDP_INFO_DESCRIPTION 2
#define NBDP_INFO_BLOCK_SIZE  3

/* Commands and command flags. */
#define NBDP_CMD_READ         0
#define NBDP_CMD_WRITE        1
#define NBDP_CMD_DISC         2
#define NBDP_CMD_FLUSH        3
#define NBDP_CMD_TRIM         4
#define NBDP_CMD_CACHE        5
#define NBDP_CMD_WRITE_ZEROES 6
#define NBDP_CMD_BLOCK_STATUS 7
#define NBDP_CMD_FLAG_FUA       (1u << 0)
#define NBDP_CMD_FLAG_NO_HOLE   (1u << 1)
#define NBDP_CMD_FLAG_DF        (1u << 2)
#define NBDP_CMD_FLAG_REQ_ONE   (1u << 3)
#define NBDP_CMD_FLAG_FAST_ZERO (1u << 4)
#define NBDP_CMD_FLAG_PAYLOAD_LEN (1u << 5)  /* extended headers only */

/* Structured replies. */
#define NBDP_REPLY_FLAG_DONE         (1u << 0)
#define NBDP_REPLY_TYPE_NONE         0
#define NBDP_REPLY_TYPE_OFFSET_DATA  1
#define NBDP_REPLY_TYPE_OFFSET_HOLE  2
#define NBDP_REPLY_TYPE_BLOCK_STATUS 5
#define NBDP_REPLY_TYPE_BLOCK_STATUS_EXT 6  /* extended headers only */
#define NBDP_REPLY_TYPE_ERROR        ((1u << 15) + 1)
#define NBDP_REPLY_TYPE_ERROR_OFFSET ((1u << 15) + 2)

/* Error values on the wire. */
#define NBDP_EPERM      1
#define NBDP_EIO        5
#define NBDP_ENOMEM     12
#define NBDP_EINVAL     22
#define NBDP_ENOSPC     28
#define NBDP_EOVERFLOW  75
#define NBDP_ENOTSUP    95
#define NBDP_ESHUTDOWN  108

/* base:allocation */
#define NBDP_STATE_HOLE 1u
#define NBDP_STATE_ZERO 2u
#define NBDP_CONTEXT_BASE_ALLOCATION 1u   /* our id for it */

/* Sizes of fixed wire structures. */
#define NBDP_OPT_HEADER_SIZE     16
#define NBDP_REQUEST_SIZE        28
#define NBDP_EXT_REQUEST_SIZE    32
#define NBDP_SIMPLE_REPLY_SIZE   16
#define NBDP_STRUCTURED_HDR_SIZE 20
#define NBDP_EXTENDED_HDR_SIZE   32
#define NBDP_MAX_NAME            4096
#define NBDP_MAX_STRING          4096

/* Map a negative errno to the NBD error number. */
uint32_t nbdp_errno (int err);

#endif
