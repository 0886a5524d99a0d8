# Extended headers (NBD_OPT_EXTENDED_HEADERS) and sparse reads
# (NBD_REPLY_TYPE_OFFSET_HOLE), spoken with raw sockets because libnbd 1.14
# cannot negotiate extended headers.  Run by
# test-nbd-extended.sh.
#
# usage: test-nbd-extended.py SOCKET PID
#
# The server is "memory size=8G": large enough for 64-bit effect lengths
# and block status extents over 4 GiB.  Every case checks the data it
# wrote; afterwards a libnbd client (compact headers) must read the same
# data, and the server must still be running.  The first wrong answer
# ends the run with "FAIL: <case>: <what happened>".

import os
import socket
import struct
import sys

sys.dont_write_bytecode = True      # keep srcdir clean (may be read-only)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd  # noqa: E402  (libnbd's Python bindings)
import nbdraw  # noqa: E402
from nbdraw import (Conn, ProtocolError, chunk_error, err_name,  # noqa: E402
                    rep_name, CMD_READ, CMD_WRITE, CMD_FLUSH, CMD_TRIM,
                    CMD_WRITE_ZEROES, CMD_CACHE, CMD_BLOCK_STATUS,
                    CMD_FLAG_PAYLOAD_LEN, CMD_FLAG_REQ_ONE, CMD_FLAG_DF,
                    NBD_EINVAL, REP_ACK)

GiB = 1 << 30
MiB = 1 << 20
SIZE = 8 * GiB
TIMEOUT = 20.0
SOCK = PID = None


class Failure(Exception):
    pass


def expect(cond, msg):
    if not cond:
        raise Failure(msg)


def ext_conn(structured_first=False, meta=True):
    """A connection with extended headers negotiated and GO done."""
    c = Conn(SOCK, TIMEOUT)
    c.handshake()
    if structured_first:
        rep, _ = c.option(nbdraw.OPT_STRUCTURED_REPLY)
        expect(rep == REP_ACK, "STRUCTURED_REPLY: %s" % rep_name(rep))
    rep, _ = c.option(nbdraw.OPT_EXTENDED_HEADERS)
    expect(rep == REP_ACK, "EXTENDED_HEADERS: %s" % rep_name(rep))
    if meta:
        ctx, rep = c.set_meta_context([b"base:allocation"])
        expect(rep == REP_ACK and len(ctx) == 1 and
               ctx[0][1] == b"base:allocation",
               "SET_META_CONTEXT: %s %s" % (ctx, rep_name(rep)))
    err = c.go(infos=(nbdraw.INFO_BLOCK_SIZE,))
    expect(err is None, "GO failed: %s" % (err,))
    expect(c.size == SIZE, "size %s" % c.size)
    expect(c.block_size is not None, "no NBD_INFO_BLOCK_SIZE")
    return c


def final_chunk(c, handle, what):
    """The reply to a request without data: one chunk, returns its error."""
    chunks = c.recv_chunks(handle)
    expect(len(chunks) == 1, "%s: %d chunks" % (what, len(chunks)))
    ch = chunks[0]
    expect(ch["type"] in (nbdraw.REPLY_TYPE_NONE, nbdraw.REPLY_TYPE_ERROR),
           "%s: chunk type %d" % (what, ch["type"]))
    return chunk_error(ch)


def request_ok(c, cmd, offset, length, handle, flags=0, payload=b""):
    c.send_request(cmd, offset, length, handle, flags, payload)
    err = final_chunk(c, handle, nbdraw.cmd_name(cmd))
    expect(err == 0, "%s %d+%d: %s" % (nbdraw.cmd_name(cmd), offset, length,
                                       err_name(err)))


def write(c, offset, data, handle=1):
    request_ok(c, CMD_WRITE, offset, len(data), handle,
               CMD_FLAG_PAYLOAD_LEN, data)


def read(c, offset, length, handle=2, flags=0):
    err, data, chunks = c.read_chunks(offset, length, handle, flags)
    expect(err == 0, "read %d+%d: %s" % (offset, length, err_name(err)))
    for ch in chunks:
        expect(ch["offset"] == offset, "chunk header offset %s, request %d"
               % (ch["offset"], offset))
    return data, chunks


def block_status(c, offset, length, flags=0, handle=3):
    """[(length, flags)] of one BLOCK_STATUS_EXT reply."""
    c.send_request(CMD_BLOCK_STATUS, offset, length, handle, flags)
    chunks = c.recv_chunks(handle)
    expect(len(chunks) == 1, "block status: %d chunks" % len(chunks))
    ch = chunks[0]
    expect(ch["type"] == nbdraw.REPLY_TYPE_BLOCK_STATUS_EXT,
           "block status chunk type %d, expected BLOCK_STATUS_EXT" % ch["type"])
    p = ch["payload"]
    expect(len(p) >= 24 and (len(p) - 8) % 16 == 0,
           "block status payload length %d" % len(p))
    ctx, count = struct.unpack(">II", p[:8])
    expect(count == (len(p) - 8) // 16, "descriptor count %d for %d bytes"
           % (count, len(p)))
    out = []
    for i in range(count):
        n, pad, st = struct.unpack(">QII", p[8 + 16 * i:24 + 16 * i])
        expect(n > 0 and pad == 0, "descriptor %d: length %d pad %d"
               % (i, n, pad))
        out.append((n, st))
    return out


def expect_closed(c, after):
    try:
        c.wait_closed()
    except socket.timeout:
        raise Failure("server still open %gs after %s" % (TIMEOUT, after))


# Written by the cases, checked again by libnbd at the end.
EXPECT = {}


def remember(offset, data):
    EXPECT[offset] = data


# The cases.

def case_negotiation():
    with Conn(SOCK, TIMEOUT) as c:
        c.handshake()
        c.send_option(nbdraw.OPT_EXTENDED_HEADERS, b"x")
        _, rep, _ = c.recv_option_reply()
        expect(rep == nbdraw.REP_ERR_INVALID,
               "EXTENDED_HEADERS with data: %s" % rep_name(rep))
        rep, _ = c.option(nbdraw.OPT_EXTENDED_HEADERS)
        expect(rep == REP_ACK, "EXTENDED_HEADERS: %s" % rep_name(rep))
        rep, _ = c.option(nbdraw.OPT_EXTENDED_HEADERS)
        expect(rep == nbdraw.REP_ERR_INVALID,
               "repeated EXTENDED_HEADERS: %s" % rep_name(rep))
        rep, _ = c.option(nbdraw.OPT_STRUCTURED_REPLY)
        expect(rep == nbdraw.REP_ERR_EXT_HEADER_REQD,
               "STRUCTURED_REPLY after EXTENDED_HEADERS: %s" % rep_name(rep))
        err = c.go()
        expect(err is None, "GO failed: %s" % (err,))
        expect(c.tflags & (1 << 7), "DF not advertised with extended headers")
        # No meta context: block status is refused, the session goes on.
        c.send_request(CMD_BLOCK_STATUS, 0, 4096, 9)
        err = final_chunk(c, 9, "BLOCK_STATUS without a context")
        expect(err == NBD_EINVAL, "BLOCK_STATUS without a context: %s"
               % err_name(err))
    with ext_conn(structured_first=True) as c:
        read(c, 0, 4096)


def case_round_trips():
    with ext_conn() as c:
        data = os.urandom(MiB + 4567)
        off = 5 * GiB + 123
        write(c, off, data)
        got, chunks = read(c, off, len(data))
        expect(got == data, "read after write at 5G+123 differs")
        # Larger than a slot buffer (1 MiB): streamed in both directions.
        big = os.urandom(5 * MiB)
        write(c, 6 * GiB, big, handle=11)
        got, chunks = read(c, 6 * GiB, len(big), handle=12)
        expect(got == big, "5 MiB read after write differs")
        got, _ = read(c, 6 * GiB, len(big), handle=13, flags=CMD_FLAG_DF)
        expect(got == big, "5 MiB DF read differs")
        request_ok(c, CMD_FLUSH, 0, 0, 14)
        if c.tflags & (1 << 10):
            request_ok(c, CMD_CACHE, 0, 5 * GiB, 15)
        # TRIM and WRITE_ZEROES over 4 GiB in one request each.
        write(c, 1 * GiB, b"\xaa" * 4096, handle=16)
        write(c, 5 * GiB - 4096, b"\xbb" * 4096, handle=17)
        request_ok(c, CMD_WRITE_ZEROES, 512 * MiB, 4 * GiB + 512 * MiB, 18,
                   nbdraw.CMD_FLAG_NO_HOLE)
        for o in (GiB, 5 * GiB - 4096):
            got, _ = read(c, o, 4096, handle=19)
            expect(got == bytes(4096), "WRITE_ZEROES over 4G left data at %d"
                   % o)
        write(c, 1 * GiB, b"\xcc" * 4096, handle=20)
        request_ok(c, CMD_TRIM, 0, 5 * GiB, 21)
        got, _ = read(c, GiB, 4096, handle=22)
        expect(got == bytes(4096), "TRIM over 4G left data at 1G")
        got, _ = read(c, off, len(data), handle=23)
        expect(got == data, "data at 5G+123 changed by TRIM/ZERO before it")
        remember(off, data)
        remember(6 * GiB, big)


def case_block_status_64():
    with ext_conn() as c:
        mark = os.urandom(8192)
        write(c, 7 * GiB + 4096, mark)
        remember(7 * GiB + 4096, mark)
        # case_round_trips trimmed [0, 5G) and wrote from 5G+123 on.
        ext = block_status(c, 0, SIZE)
        expect(ext[0][0] >= 5 * GiB and ext[0][1] == 3,
               "first extent of [0, 8G) is %s, expected a hole >= 5 GiB"
               % (ext[0],))
        expect(ext[0][0] > 1 << 32, "extent length fits in 32 bits")
        total = sum(n for n, _ in ext)
        expect(total <= SIZE, "extents add up to %d > size" % total)
        one = block_status(c, 0, SIZE, CMD_FLAG_REQ_ONE, handle=4)
        expect(len(one) == 1 and one[0][0] == ext[0][0],
               "REQ_ONE answer %s" % (one,))
        # An allocated range is reported as data.
        ext = block_status(c, 7 * GiB + 4096, 8192, handle=5)
        expect(ext[0] == (8192, 0), "written 8 KiB reported as %s" % (ext,))


def case_payload_len_rules():
    with ext_conn() as c:
        # WRITE without the payload flag: its length is an effect length,
        # no payload follows, and the spec requires the flag.
        c.send_request(CMD_WRITE, 0, 4096, 31)
        err = final_chunk(c, 31, "WRITE without PAYLOAD_LEN")
        expect(err == NBD_EINVAL, "WRITE without PAYLOAD_LEN: %s"
               % err_name(err))
        # READ with a payload: consumed and refused, session goes on.
        c.send_request(CMD_READ, 0, 3000, 32, CMD_FLAG_PAYLOAD_LEN,
                       b"\x55" * 3000)
        chunks = c.recv_chunks(32)
        expect(chunk_error(chunks[-1]) == NBD_EINVAL,
               "READ with a payload: %s" % chunks)
        got, _ = read(c, 5 * GiB + 123, 4096, handle=33)
        expect(got == EXPECT[5 * GiB + 123][:4096],
               "read after refused payload returned wrong data")
        # Beyond the advertised maximum payload: hard disconnect.
        maxp = c.block_size[2]
        c.send_request(CMD_WRITE, 0, maxp + 1, 34, CMD_FLAG_PAYLOAD_LEN)
        expect_closed(c, "a write payload of maximum+1 bytes")


def case_bad_magic():
    with ext_conn() as c:
        c.send_request(CMD_READ, 0, 512, 41, magic=0xdeadbeef)
        expect_closed(c, "extended request with magic 0xdeadbeef")
    with ext_conn() as c:
        c.send_request(CMD_READ, 0, 512, 42, extended=False)
        c.send(bytes(4))        # a compact header is 4 bytes shorter
        expect_closed(c, "a compact request after extended headers")
    with Conn(SOCK, TIMEOUT) as c:
        c.handshake()
        c.option(nbdraw.OPT_EXTENDED_HEADERS)
        c.send_option(nbdraw.OPT_EXPORT_NAME, b"")
        expect_closed(c, "NBD_OPT_EXPORT_NAME after extended headers")


def case_compact_structured_unchanged():
    """Without extended headers, 64-bit lengths cannot be sent and block
    status keeps its 32-bit chunk type."""
    with Conn(SOCK, TIMEOUT) as c:
        c.handshake()
        c.option(nbdraw.OPT_STRUCTURED_REPLY)
        c.set_meta_context([b"base:allocation"])
        expect(c.go() is None, "GO failed")
        c.send_request(CMD_BLOCK_STATUS, 0, 1 << 31, 51)
        ch = c.recv_chunks(51)[0]
        expect(ch["type"] == nbdraw.REPLY_TYPE_BLOCK_STATUS,
               "compact block status chunk type %d" % ch["type"])
        c.send_request(CMD_WRITE, 0, 4096, 52, CMD_FLAG_PAYLOAD_LEN,
                       bytes(4096))
        err = final_chunk(c, 52, "compact WRITE with PAYLOAD_LEN")
        expect(err == NBD_EINVAL, "compact WRITE with PAYLOAD_LEN: %s"
               % err_name(err))


def chunk_kinds(chunks):
    """[(type, offset, length)] of a read's content chunks."""
    out = []
    for ch in chunks:
        if ch["type"] == nbdraw.REPLY_TYPE_OFFSET_DATA:
            off = struct.unpack(">Q", ch["payload"][:8])[0]
            out.append(("data", off, len(ch["payload"]) - 8))
        elif ch["type"] == nbdraw.REPLY_TYPE_OFFSET_HOLE:
            off, n = struct.unpack(">QI", ch["payload"])
            out.append(("hole", off, n))
    return out


def sparse_reads(c, base, handle):
    """Reads of a hole and of a partly written range on connection C
    (structured or extended): holes come as OFFSET_HOLE chunks, data as
    OFFSET_DATA, tiling the range exactly (read_chunks checks that)."""
    err, got, chunks = c.read_chunks(base, 65536, handle)
    expect(err == 0 and got == bytes(65536), "read of a hole: %s"
           % err_name(err))
    expect(chunk_kinds(chunks) == [("hole", base, 65536)],
           "read of a hole came as %s" % chunk_kinds(chunks))
    data = os.urandom(4096)
    c.send_request(CMD_WRITE, base + 8192, 4096, handle + 1,
                   CMD_FLAG_PAYLOAD_LEN if c.extended else 0, data)
    expect(final_chunk(c, handle + 1, "write") == 0, "write failed")
    remember(base + 8192, data)
    err, got, chunks = c.read_chunks(base, 32768, handle + 2)
    expect(err == 0, "partly written read: %s" % err_name(err))
    expect(got == bytes(8192) + data + bytes(20480),
           "partly written read returned wrong data")
    want = [("hole", base, 8192), ("data", base + 8192, 4096),
            ("hole", base + 12288, 20480)]
    expect(chunk_kinds(chunks) == want, "partly written read came as %s"
           % chunk_kinds(chunks))
    # DF: one data chunk, holes included as zeroes.
    err, got, chunks = c.read_chunks(base, 32768, handle + 3, CMD_FLAG_DF)
    expect(err == 0 and got == bytes(8192) + data + bytes(20480),
           "DF read: %s" % err_name(err))
    expect(chunk_kinds(chunks) == [("data", base, 32768)],
           "DF read came as %s" % chunk_kinds(chunks))


def case_sparse_reads():
    with Conn(SOCK, TIMEOUT) as c:
        c.handshake()
        c.option(nbdraw.OPT_STRUCTURED_REPLY)
        expect(c.go() is None, "GO failed")
        sparse_reads(c, 7 * GiB + 64 * MiB, 61)
    with ext_conn() as c:
        sparse_reads(c, 7 * GiB + 128 * MiB, 71)
    # libnbd's chunk callback sees the same.
    h = nbd.NBD()
    h.connect_unix(SOCK)
    seen = []

    def chunk(buf, offset, status, error):
        seen.append((status, offset, len(buf)))
        return 0
    base = 7 * GiB + 64 * MiB
    buf = h.pread_structured(32768, base, chunk)
    h.shutdown()
    expect(buf == bytes(8192) + EXPECT[base + 8192] + bytes(20480),
           "libnbd pread_structured returned wrong data")
    expect(sorted(seen) == sorted([(nbd.READ_HOLE, base, 8192),
                                   (nbd.READ_DATA, base + 8192, 4096),
                                   (nbd.READ_HOLE, base + 12288, 20480)]),
           "libnbd saw chunks %s" % seen)


def check_healthy(when):
    if not os.path.exists("/proc/%d" % PID):
        raise Failure("server died %s" % when)
    h = nbd.NBD()
    h.connect_unix(SOCK)
    for off, data in EXPECT.items():
        if h.pread(len(data), off) != data:
            raise Failure("libnbd read wrong data at %d %s" % (off, when))
    h.shutdown()


CASES = [case_negotiation, case_round_trips, case_block_status_64,
         case_payload_len_rules, case_bad_magic,
         case_compact_structured_unchanged, case_sparse_reads]


def main():
    global SOCK, PID
    SOCK, PID = sys.argv[1], int(sys.argv[2])
    only = sys.argv[3:]
    failed = 0
    for case in CASES:
        name = case.__name__[5:]
        if only and name not in only:
            continue
        try:
            case()
            check_healthy("after " + name)
            print("ok: %s" % name)
        except (Failure, ProtocolError, nbdraw.Closed, socket.timeout,
                nbd.Error) as e:
            print("FAIL: %s: %s" % (name, e))
            failed += 1
    sys.exit(1 if failed else 0)


if __name__ == "__main__":
    main()
