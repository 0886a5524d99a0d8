# Bad-input tests for ubdkit's NBD server, run by test-nbd-bad-input.sh.
#
# usage: test-nbd-bad-input.py RW_SOCKET RW_PID RO_SOCKET RO_PID
#
# RW is "memory size=64M", RO the same with -r.  We first fill RW with a
# known pattern through libnbd.  Each case then misbehaves on a fresh raw
# connection (nbdraw), and after each case a well-behaved libnbd client
# must still connect to both servers and read back the right data, and
# both server processes must still be alive.  The first wrong answer
# ends the run with "FAIL: <case>: <what happened>".

import array
import os
import socket
import struct
import sys
import time

sys.dont_write_bytecode = True      # keep srcdir clean (may be read-only)
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import nbd  # noqa: E402  (libnbd's Python bindings)
import nbdraw  # noqa: E402
from nbdraw import (Closed, Conn, NBD_EINVAL, NBD_ENOSPC,  # noqa: E402
                    NBD_EPERM, err_name, rep_name)

SIZE = 64 << 20
MiB = 1 << 20
TIMEOUT = 10.0          # for every wait on a server


class Failure(Exception):
    pass


def pattern(offset, length):
    """The RW export's contents: each 8-byte word holds its own offset."""
    start = offset - offset % 8
    words = array.array("Q", range(start, offset + length + 8, 8))
    if sys.byteorder == "little":
        words.byteswap()
    skip = offset - start
    return words.tobytes()[skip:skip + length]


def zeroes(offset, length):
    return bytes(length)


class Server:
    def __init__(self, name, sock, pid, contents):
        self.name, self.sock, self.pid = name, sock, int(pid)
        self.contents = contents

    def alive(self):
        try:
            with open("/proc/%d/stat" % self.pid) as f:
                state = f.read().rsplit(")", 1)[1].split()[0]
        except FileNotFoundError:
            return False
        return state not in ("Z", "X")


# A well-behaved client: libnbd, driven through its async API so that a
# stuck server makes us fail after TIMEOUT instead of hanging.

def _wait(h, done, what):
    deadline = time.monotonic() + TIMEOUT
    while not done():
        if h.aio_is_dead() or h.aio_is_closed():
            raise Failure("libnbd %s: connection died" % what)
        left = deadline - time.monotonic()
        if left <= 0:
            raise Failure("libnbd %s: no answer in %gs" % (what, TIMEOUT))
        h.poll(max(1, int(left * 1000)))


def libnbd_read(server, offset, length, h=None):
    h = h or nbd.NBD()
    buf = nbd.Buffer(length)
    cookie = h.aio_pread(buf, offset)
    _wait(h, lambda: h.aio_command_completed(cookie),
          "pread(%d, %d) from %s" % (offset, length, server.name))
    return buf.to_bytearray()


def libnbd_connect(server):
    h = nbd.NBD()
    h.aio_connect_unix(server.sock)
    _wait(h, h.aio_is_ready, "connect to %s" % server.name)
    return h


def libnbd_close(h):
    h.aio_disconnect(0)
    _wait(h, lambda: h.aio_is_closed() or h.aio_is_dead(), "disconnect")


def check_healthy(server, when):
    if not server.alive():
        raise Failure("%s server (pid %d) died %s"
                      % (server.name, server.pid, when))
    try:
        h = libnbd_connect(server)
        if h.get_size() != SIZE:
            raise Failure("%s: size %d" % (server.name, h.get_size()))
        for off, n in ((0, 4096), (12345, 1000), (SIZE - 4096, 4096)):
            if libnbd_read(server, off, n, h) != server.contents(off, n):
                raise Failure("%s server returned wrong data at %d+%d %s"
                              % (server.name, off, n, when))
        libnbd_close(h)
    except nbd.Error as e:
        raise Failure("well-behaved client failed on %s server %s: %s"
                      % (server.name, when, e))


def fill(server):
    h = libnbd_connect(server)
    for off in range(0, SIZE, 4 * MiB):
        cookie = h.aio_pwrite(pattern(off, 4 * MiB), off)
        _wait(h, lambda: h.aio_command_completed(cookie), "fill")
    libnbd_close(h)


# Helpers for the raw cases.

def expect(cond, msg):
    if not cond:
        raise Failure(msg)


def expect_closed(c, after):
    try:
        c.wait_closed()
    except socket.timeout:
        raise Failure("server still open %gs after %s" % (TIMEOUT, after))


def expect_error(c, want, cmd, offset, length, payload=b"", handle=7):
    desc = "%s offset 0x%x length %d" % (nbdraw.cmd_name(cmd), offset,
                                         length)
    read_len = length if cmd == nbdraw.CMD_READ else 0
    err, _ = c.request(cmd, offset, length, handle, payload, read_len)
    expect(err == want, "%s: got %s, expected %s"
           % (desc, err_name(err), err_name(want)))


def expect_read_ok(c, server, offset=4096, length=4096):
    """The connection still works: a good read returns the right data."""
    err, data = c.read(offset, length, handle=0x1234)
    expect(err == 0, "follow-up read %d+%d failed: %s"
           % (offset, length, err_name(err)))
    expect(data == server.contents(offset, length),
           "follow-up read %d+%d returned wrong data" % (offset, length))


def expect_option_error_or_close(c, opt, what):
    """An option the server may refuse with an error reply or by closing.
    Returns True if the connection is still open."""
    try:
        ropt, rep, _ = c.recv_option_reply()
    except Closed:
        return False
    except socket.timeout:
        raise Failure("%s: no reply and not closed after %gs"
                      % (what, TIMEOUT))
    expect(ropt == opt, "%s: reply names option 0x%x" % (what, ropt))
    expect(rep & nbdraw.REP_ERR_BIT, "%s: got %s, expected an error"
           % (what, rep_name(rep)))
    return True


# The cases.  Each one gets the RW and RO servers.

def case_bad_client_flags(rw, ro):
    with Conn(rw.sock, TIMEOUT) as c:
        c.handshake(cflags=0xfffffffc)
        expect_closed(c, "client flags 0xfffffffc (unknown bits)")


def case_plain_newstyle(rw, ro):
    # A client without NBD_FLAG_C_FIXED_NEWSTYLE (plain newstyle), with and
    # without NO_ZEROES: NBD_OPT_EXPORT_NAME takes it to transmission.
    for cflags, nz in ((0, False), (nbdraw.FLAG_C_NO_ZEROES, True)):
        with Conn(rw.sock, TIMEOUT) as c:
            c.handshake(cflags=cflags)
            c.export_name(b"", no_zeroes=nz)
            expect(c.size > 0, "plain newstyle (flags %d): size %d"
                   % (cflags, c.size))
            expect_read_ok(c, rw)
    # Any other option from such a client: the server hangs up.
    with Conn(rw.sock, TIMEOUT) as c:
        c.handshake(cflags=0)
        c.send_option(nbdraw.OPT_GO, b"\0" * 6)
        expect_closed(c, "NBD_OPT_GO from a plain newstyle client")


def case_fua_on_every_command(rw, ro):
    # NBD_FLAG_SEND_FUA advertised: the server must accept FUA on every
    # command; it means something to writes only.
    with Conn(rw.sock, TIMEOUT).open() as c:
        expect(c.tflags & nbdraw.TFLAG_SEND_FUA,
               "export lacks NBD_FLAG_SEND_FUA (flags 0x%x)" % c.tflags)
        for cmd, length in ((nbdraw.CMD_READ, 4096), (nbdraw.CMD_FLUSH, 0),
                            (nbdraw.CMD_CACHE, 4096)):
            read_len = length if cmd == nbdraw.CMD_READ else 0
            c.send_request(cmd, 4096 if length else 0, length, handle=9,
                           flags=nbdraw.CMD_FLAG_FUA)
            err, _, data = c.recv_reply(read_len)
            expect(err == 0, "%s with FUA: %s" % (nbdraw.cmd_name(cmd),
                                                   err_name(err)))
            if cmd == nbdraw.CMD_READ:
                expect(data == rw.contents(4096, 4096),
                       "READ with FUA returned wrong data")
        expect_read_ok(c, rw)


def case_bad_option_magic(rw, ro):
    with Conn(rw.sock, TIMEOUT) as c:
        c.handshake()
        c.send_option(nbdraw.OPT_GO, b"\0" * 6, magic=0x1122334455667788)
        expect_closed(c, "option with magic 0x1122334455667788")


def case_close_in_greeting(rw, ro):
    with Conn(rw.sock, TIMEOUT) as c:
        c.greeting()
        check_healthy(rw, "while a client sat before sending its flags")


def case_truncated_option(rw, ro):
    with Conn(rw.sock, TIMEOUT) as c:
        c.handshake()
        c.send(struct.pack(">QII", nbdraw.IHAVEOPT, nbdraw.OPT_GO, 20) +
               b"\0\0\0")
        check_healthy(rw, "while a client sat mid-option (3 of 20 bytes)")


def case_option_length_4g(rw, ro):
    with Conn(rw.sock, TIMEOUT) as c:
        c.handshake()
        c.send_option(nbdraw.OPT_GO, length=0xffffffff)
        check_healthy(rw, "while a client sent GO with length 0xffffffff")
        expect_option_error_or_close(c, nbdraw.OPT_GO,
                                     "GO with length 0xffffffff (no data)")


def case_option_length_64k(rw, ro):
    # Two 64 KiB options, each with all its data: an unknown one, then GO
    # naming a 65530-byte export (strings are at most 4096 bytes).  Either
    # may be refused by an error reply (then the data must have been
    # skipped: negotiation goes on) or by closing the connection.
    name = b"x" * (0x10000 - 6)
    options = [(0x7fff0001, b"\xa5" * 0x10000),
               (nbdraw.OPT_GO, struct.pack(">I", len(name)) + name + b"\0\0")]
    with Conn(rw.sock, TIMEOUT) as c:
        c.handshake()
        for opt, data in options:
            c.send_option(opt, data)
            what = "option 0x%x with 64 KiB of data" % opt
            if not expect_option_error_or_close(c, opt, what):
                return
        err = c.go()
        expect(err is None, "GO after the refused 64 KiB options: %s"
               % (err and rep_name(err[1])))
        expect_read_ok(c, rw)


def case_unknown_option(rw, ro):
    with Conn(rw.sock, TIMEOUT) as c:
        c.handshake()
        c.send_option(0x4242, b"hello")
        opt, rep, _ = c.recv_option_reply()
        expect(opt == 0x4242, "reply names option 0x%x, sent 0x4242" % opt)
        expect(rep == nbdraw.REP_ERR_UNSUP, "unknown option: got %s, "
               "expected ERR_UNSUP" % rep_name(rep))
        err = c.go()
        expect(err is None, "GO after unknown option: %s"
               % (err and rep_name(err[1])))
        expect(c.size == SIZE, "GO reported size %s" % c.size)
        expect_read_ok(c, rw)


def case_unknown_command(rw, ro):
    with Conn(rw.sock, TIMEOUT).open() as c:
        expect_error(c, NBD_EINVAL, 0x4242, 0, 512)
        expect_read_ok(c, rw)


def case_read_beyond_end(rw, ro):
    with Conn(rw.sock, TIMEOUT).open() as c:
        expect_error(c, NBD_EINVAL, nbdraw.CMD_READ, SIZE - 512, 1024)
        expect_error(c, NBD_EINVAL, nbdraw.CMD_READ, SIZE, 512)
        expect_read_ok(c, rw, SIZE - 512, 512)


def case_offset_overflow(rw, ro):
    with Conn(rw.sock, TIMEOUT).open() as c:
        expect_error(c, NBD_EINVAL, nbdraw.CMD_READ, 2**64 - 512, 1024)
        expect_read_ok(c, rw)


def case_write_beyond_end(rw, ro):
    # The payload repeats the existing data, so a partial write is harmless;
    # and if the server failed to consume it, its first word (zero) would
    # be read as a bad request magic and the follow-up read would fail.
    with Conn(rw.sock, TIMEOUT).open() as c:
        expect_error(c, NBD_ENOSPC, nbdraw.CMD_WRITE, SIZE - 512, 1024,
                     pattern(SIZE - 512, 1024))
        expect_error(c, NBD_ENOSPC, nbdraw.CMD_WRITE, SIZE, 4096,
                     pattern(SIZE - 4096, 4096))
        expect_read_ok(c, rw, SIZE - 4096, 4096)


def case_oversized_write(rw, ro):
    # Over the 32 MiB maximum: the server may refuse it (EOVERFLOW, EINVAL
    # ...) or do it, but either way it must consume the whole payload.
    # The payload repeats the existing data so doing it is harmless.
    length = 32 * MiB + 512
    with Conn(rw.sock, TIMEOUT).open() as c:
        c.request(nbdraw.CMD_WRITE, 0, length, 9, pattern(0, length))
        expect_read_ok(c, rw, length - 4096, 4096)


def case_bad_request_magic(rw, ro):
    with Conn(rw.sock, TIMEOUT).open() as c:
        c.send_request(nbdraw.CMD_READ, 0, 512, magic=0xdeadbeef)
        expect_closed(c, "a request with magic 0xdeadbeef")


def case_zero_length_read(rw, ro):
    with Conn(rw.sock, TIMEOUT).open() as c:
        err, data = c.read(0, 0)
        expect(err in (0, NBD_EINVAL), "zero-length read: got %s, expected "
               "OK or EINVAL" % err_name(err))
        expect_read_ok(c, rw)


def case_disconnect_in_flight(rw, ro):
    with Conn(rw.sock, TIMEOUT).open() as c:
        reqs = b"".join(struct.pack(">IHHQQI", nbdraw.REQUEST_MAGIC, 0,
                                    nbdraw.CMD_READ, i, i * MiB, MiB)
                        for i in range(100))
        c.send(reqs)            # 100 MiB of replies that nobody reads


def case_read_only_write(rw, ro):
    with Conn(ro.sock, TIMEOUT).open() as c:
        expect(c.tflags & nbdraw.TFLAG_READ_ONLY,
               "-r export lacks NBD_FLAG_READ_ONLY (flags 0x%x)" % c.tflags)
        expect_error(c, NBD_EPERM, nbdraw.CMD_WRITE, 0, 512, b"\xff" * 512)
        expect_read_ok(c, ro, 0, 512)


CASES = [
    ("bad client flags", case_bad_client_flags),
    ("plain newstyle client: EXPORT_NAME only", case_plain_newstyle),
    ("FUA on READ, FLUSH, CACHE accepted", case_fua_on_every_command),
    ("bad option magic (not IHAVEOPT)", case_bad_option_magic),
    ("close during greeting", case_close_in_greeting),
    ("truncated option (close mid-option)", case_truncated_option),
    ("option length 0xffffffff", case_option_length_4g),
    ("option length 0x10000 with data", case_option_length_64k),
    ("unknown option -> ERR_UNSUP, then GO", case_unknown_option),
    ("unknown command -> EINVAL", case_unknown_command),
    ("read beyond end -> EINVAL", case_read_beyond_end),
    ("offset+length overflow -> EINVAL", case_offset_overflow),
    ("write beyond end -> ENOSPC, payload consumed", case_write_beyond_end),
    ("oversized write (32 MiB + 512), payload consumed",
     case_oversized_write),
    ("bad request magic -> closed", case_bad_request_magic),
    ("zero-length read", case_zero_length_read),
    ("disconnect with 100 requests in flight", case_disconnect_in_flight),
    ("write on read-only export -> EPERM", case_read_only_write),
]


def main():
    if len(sys.argv) != 5:
        sys.exit("usage: %s RW_SOCKET RW_PID RO_SOCKET RO_PID" % sys.argv[0])
    rw = Server("read-write", sys.argv[1], sys.argv[2], pattern)
    ro = Server("read-only", sys.argv[3], sys.argv[4], zeroes)
    case = "fill with pattern"
    try:
        fill(rw)
        for server in (rw, ro):
            check_healthy(server, "at start")
        for case, fn in CASES:
            fn(rw, ro)
            for server in (rw, ro):
                check_healthy(server, "after this case")
            print("ok - %s" % case, flush=True)
    except Failure as e:
        sys.exit("FAIL: %s: %s" % (case, e))
    except (Closed, socket.timeout, nbdraw.ProtocolError, OSError,
            nbd.Error) as e:
        dead = "".join(" (%s server pid %d is dead)" % (s.name, s.pid)
                       for s in (rw, ro) if not s.alive())
        sys.exit("FAIL: %s: %s: %s%s" % (case, type(e).__name__, e, dead))
    print("%d passed, 0 failed" % len(CASES))


if __name__ == "__main__":
    main()
